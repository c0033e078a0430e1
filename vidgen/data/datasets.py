"""Datasets by name from `config.data`: today the built-in Shapes set, built once per data dir."""
from __future__ import annotations

import os

from vidgen.data import shapes
from vidgen.data import shapes_builder

SHAPES_SPEC_FIELDS = ("height", "width", "num_frames", "speed", "min_size", "max_size",
                      "two_object_prob", "noise_std")


def shapes_spec(data_config) -> shapes.ShapesSpec:
  return shapes.ShapesSpec(**{k: data_config[k] for k in SHAPES_SPEC_FIELDS})


def data_dir(data_config, workdir: str) -> str:
  return data_config.data_dir or os.path.join(workdir, "data")


def build(data_config, workdir: str):
  """Builds (or reuses) the TFDS Shapes dataset; returns the builder."""
  if data_config.name != "shapes":
    raise ValueError(f"config.data.name={data_config.name!r}: allowed ('shapes',)")
  return shapes_builder.build_shapes(
      data_dir(data_config, workdir), shapes_spec(data_config), num_train=data_config.num_train,
      num_heldout=data_config.num_heldout, num_val=data_config.num_val)


def source(data_config, workdir: str, split: str):
  """A random-access source of {'video': uint8 [T,H,W,3], 'caption': str, ...} for `split`."""
  return shapes_builder.shapes_source(build(data_config, workdir), split)
