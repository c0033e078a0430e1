"""TFDS builder for the procedural Shapes videos, written as ArrayRecord and read back without TensorFlow.

Why TFDS: the same `tfds.data_sources` random-access path then serves Shapes and any real TFDS video set, with
versioned, self-describing files (features.json, dataset_info.json). TensorFlow is not needed: TFDS serializes
examples with its own protobuf code, ArrayRecord files are written by array_record, and `as_data_source` decodes
records to numpy. Every spec gets its own config name (a hash of all its fields), so different specs never
collide in a data dir and building again reuses the files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
import tqdm

from vidgen import logs
from vidgen.data import shapes

_SPLIT_SIZES = (("train", "num_train"), ("heldout", "num_heldout"), ("val", "num_val"))


@dataclasses.dataclass(eq=False)
class ShapesConfig(tfds.core.BuilderConfig):
  """A Shapes spec plus split sizes and seed; make one with `shapes_config` so the name encodes them."""

  spec: shapes.ShapesSpec = shapes.ShapesSpec()
  num_train: int = 4096
  num_heldout: int = 256
  num_val: int = 256
  seed: int = 0


def shapes_config(spec: shapes.ShapesSpec = shapes.ShapesSpec(), num_train: int = 4096,
                  num_heldout: int = 256, num_val: int = 256, seed: int = 0) -> ShapesConfig:
  """Config named '<H>x<W>x<T>_<hash of every field>', e.g. '32x32x9_3f1c0a9e2b'."""
  for field, value in (("num_train", num_train), ("num_heldout", num_heldout), ("num_val", num_val),
                       ("seed", seed)):
    if int(value) != value or value < 0:
      raise ValueError(f"{field}={value!r} is invalid: allowed an integer >= 0")
  fields = dict(dataclasses.asdict(spec), num_train=num_train, num_heldout=num_heldout, num_val=num_val,
                seed=seed)
  text = json.dumps(fields, sort_keys=True)
  digest = hashlib.sha1(text.encode()).hexdigest()[:10]
  return ShapesConfig(name=f"{spec.height}x{spec.width}x{spec.num_frames}_{digest}", description=text,
                      spec=spec, num_train=int(num_train), num_heldout=int(num_heldout), num_val=int(num_val),
                      seed=int(seed))


class Shapes(tfds.core.GeneratorBasedBuilder):
  """Captioned videos of colored shapes moving left/right/up/down, generated locally (no download)."""

  name = "vidgen_shapes"  # registry name; plain 'shapes' could clash with a future TFDS catalog entry
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: video uint8 [T,H,W,3], caption, per-object metadata; "
                            "splits train (1-2 objects), heldout (held-out compositions), val."}
  BUILDER_CONFIGS = [shapes_config()]

  def __init__(self, *, config: ShapesConfig | str | None = None, **kwargs):
    # TFDS refuses a new config object that shares the name of a predefined one: use the predefined one.
    if isinstance(config, ShapesConfig) and config.name in self.builder_configs:
      config = config.name
    super().__init__(config=config, **kwargs)

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # TFDS 4.9.10 derives this through `importlib_resources`, which it declares only for Python < 3.9, so the
    # base property raises ModuleNotFoundError for builders inside a package (tensorflow/datasets#11212).
    return epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    spec = self.builder_config.spec
    text, floats = tfds.features.Text(), np.float32
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "video": tfds.features.Tensor(shape=(spec.num_frames, spec.height, spec.width, 3), dtype=np.uint8,
                                          encoding=tfds.features.Encoding.ZLIB),
            "caption": text,
            "index": np.int64,
            "objects": tfds.features.Sequence({"color": text, "shape": text, "motion": text,
                                               "x0": floats, "y0": floats, "size": floats}),
        }),
        supervised_keys=("caption", "video"),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    config = self.builder_config
    return {split: self._generate_examples(split, getattr(config, count))
            for split, count in _SPLIT_SIZES if getattr(config, count) > 0}

  progress = False  # vidgen's own bar over the clips made (TFDS's are off when the libraries are quiet)

  def _generate_examples(self, split: str, count: int):
    config = self.builder_config
    for index in tqdm.trange(count, desc=f"making Shapes {split} clips", disable=not self.progress, leave=False):
      example = shapes.make_example(config.spec, split, index, config.seed)
      objects = example["objects"]
      yield index, {
          "video": example["video"],
          "caption": example["caption"],
          "index": index,
          "objects": {field: [getattr(o, field) for o in objects]
                      for field in ("color", "shape", "motion", "x0", "y0", "size")},
      }


def build_shapes(data_dir: str, spec: shapes.ShapesSpec = shapes.ShapesSpec(), num_train: int = 4096,
                 num_heldout: int = 256, num_val: int = 256, seed: int = 0, progress: bool = False) -> Shapes:
  """Generates the dataset as ArrayRecord under data_dir (once; later calls reuse the files)."""
  builder = Shapes(config=shapes_config(spec, num_train, num_heldout, num_val, seed), data_dir=data_dir,
                   file_format="array_record")
  builder.progress = progress
  with logs.library_output():  # TFDS prints "Downloading and preparing dataset Unknown size" for generated data
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        try_download_gcs=False, compute_stats=tfds.download.ComputeStatsMode.SKIP))
  return builder


def _decode(record: dict) -> dict:
  """TFDS numpy record -> video uint8 array, caption str, objects as str lists and float32 arrays."""
  objects = record["objects"]
  return {
      "video": np.asarray(record["video"], np.uint8),
      "caption": record["caption"].decode(),
      "index": int(record["index"]),
      "objects": {key: ([v.decode() for v in value] if key in ("color", "shape", "motion")
                        else np.asarray(value, np.float32))
                  for key, value in objects.items()},
  }


class ShapesSource:
  """Random access to one prepared split, items decoded to numpy/str; picklable, so grain workers can use it."""

  def __init__(self, source):
    self._source = source

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict:
    return _decode(self._source[index])

  def __getitems__(self, indices) -> list[dict]:
    return [_decode(r) for r in self._source.__getitems__(list(indices))]

  def __repr__(self) -> str:
    return f"ShapesSource({self._source!r})"


def shapes_source(builder: tfds.core.DatasetBuilder, split: str) -> ShapesSource:
  """Random-access source over a split of a prepared builder (e.g. from build_shapes); no TensorFlow."""
  return ShapesSource(builder.as_data_source(split))
