"""Tensors from safetensors files, read one at a time: a single file, or a sharded set with its index.json.

Only headers are read up front (names, shapes, dtypes), so a caller can check a whole checkpoint against the
model before it reads a byte of weights, then stream tensor by tensor. Nothing is ever unpickled: a PyTorch
pickle (.pth, .pt, .bin, .ckpt) is refused with one line naming the converter, which uses torch once with
weights_only=True to write safetensors.
"""
from __future__ import annotations

import json
import os

import numpy as np
from safetensors import safe_open

PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
CONVERTER = "python -m vidgen.weights.convert_pth FILE"


class WeightsError(ValueError):
  """A checkpoint that cannot be read or does not fit the model, in one line."""


def refuse_pickle(path: str):
  if path.endswith(PICKLE_SUFFIXES):
    raise WeightsError(f"{path} is a PyTorch pickle, which vidgen never loads (it can run code): convert it once "
                       f"to safetensors with `{CONVERTER}` (needs torch: pip install -e '.[reference]')")


def _resolve(path: str) -> list[str]:
  """The safetensors files of `path`: a .safetensors file, an *.index.json, or a folder holding one of those."""
  refuse_pickle(path)
  if os.path.isdir(path):
    names = sorted(os.listdir(path))
    indexes = [n for n in names if n.endswith(".safetensors.index.json")]
    files = [n for n in names if n.endswith(".safetensors")]
    if len(indexes) == 1:
      return _resolve(os.path.join(path, indexes[0]))
    if len(files) == 1:
      return [os.path.join(path, files[0])]
    pickles = [n for n in names if n.endswith(PICKLE_SUFFIXES)]
    if not files and len(pickles) == 1:
      refuse_pickle(os.path.join(path, pickles[0]))
    raise WeightsError(f"{path}: expected one .safetensors file or one .safetensors.index.json, found "
                       f"{len(files)} and {len(indexes)}")
  if not os.path.exists(path):
    raise WeightsError(f"{path}: no such file")
  if path.endswith(".index.json"):
    try:
      with open(path) as f:
        weight_map = json.load(f)["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as e:
      raise WeightsError(f"{path}: not a safetensors index (a JSON object with a weight_map): "
                         f"{type(e).__name__}") from None
    shards = sorted(set(weight_map.values()))
    missing = [s for s in shards if not os.path.exists(os.path.join(os.path.dirname(path), s))]
    if missing:
      key = next(k for k, v in weight_map.items() if v == missing[0])
      raise WeightsError(f"{path}: shard {missing[0]} is missing ({len(missing)} of {len(shards)} shards; it holds "
                         f"{key} and others)")
    return [os.path.join(os.path.dirname(path), s) for s in shards]
  if not path.endswith(".safetensors"):
    raise WeightsError(f"{path}: not a .safetensors file or index")
  return [path]


class TensorFiles:
  """Read access to every tensor of a (possibly sharded) safetensors checkpoint, by name."""

  def __init__(self, path: str):
    self.path = path
    self._files = {}
    self._where = {}
    for file in _resolve(path):
      try:
        handle = safe_open(file, framework="numpy")
      except Exception as e:  # safetensors raises its own SafetensorError on a damaged header
        raise WeightsError(f"{file}: not a readable safetensors file ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None
      self._files[file] = handle
      for key in handle.keys():
        self._where[key] = file

  def keys(self) -> list[str]:
    return sorted(self._where)

  def __contains__(self, key: str) -> bool:
    return key in self._where

  def shape(self, key: str) -> tuple[int, ...]:
    return tuple(self._files[self._where[key]].get_slice(key).get_shape())

  def shapes(self) -> dict[str, tuple[int, ...]]:
    return {k: self.shape(k) for k in self.keys()}

  def read(self, key: str) -> np.ndarray:
    """The tensor as stored (bfloat16 as ml_dtypes.bfloat16)."""
    try:
      return self._files[self._where[key]].get_tensor(key)
    except Exception as e:
      raise WeightsError(f"{self._where[key]}: tensor {key} cannot be read ({type(e).__name__}): the file is "
                         "damaged or truncated") from None
