"""Buckets of (height, width, frames): each example trains near its native shape, each batch holds one bucket.

A bucket config is a list of "HxWxT" or "HxWxT:weight" strings (`config.data.buckets`), e.g.
("144x256x17", "256x144x17", "192x192x17", "192x192x1:0.5"): 16:9, 9:16 and 1:1 clips plus 1:1 images.
An example goes to the nearest bucket that fits it (see `assign`); it is then resized to cover the bucket
and center-cropped. The bucket of each step is drawn from a seeded generator that depends on the step alone,
so every host picks the same bucket, and a resumed run the same sequence.

Sampling: P(bucket b at a step) is proportional to weight_b x (examples in b), so with equal weights every
example is seen equally often in expectation; weight 2 shows a bucket's examples twice as often. Within a
bucket, examples come in seeded epochs (a fresh permutation each time the bucket's examples run out).
"""
from __future__ import annotations

import dataclasses
import functools
import math
import re
import threading

import numpy as np

_SPEC = re.compile(r"^\s*(\d+)\s*x\s*(\d+)\s*x\s*(\d+)\s*(?::\s*([0-9.eE+-]+))?\s*$")
_STEPS_PER_BLOCK = 4096


@dataclasses.dataclass(frozen=True)
class Bucket:
  height: int
  width: int
  frames: int
  weight: float = 1.0

  @property
  def name(self) -> str:
    return f"{self.height}x{self.width}x{self.frames}"

  @property
  def aspect(self) -> float:
    return self.width / self.height


def parse(specs) -> tuple[Bucket, ...]:
  """Buckets from "HxWxT[:weight]" strings; one clear error for a malformed or duplicate entry."""
  if isinstance(specs, str):
    specs = [s for s in specs.split(",") if s.strip()]
  buckets = []
  for spec in specs:
    m = _SPEC.match(str(spec))
    if not m:
      raise ValueError(f"config.data.buckets entry {spec!r} is invalid: allowed 'HxWxT' or 'HxWxT:weight', "
                       "e.g. '144x256x17' or '192x192x1:0.5'")
    h, w, t = (int(g) for g in m.groups()[:3])
    weight = float(m.group(4)) if m.group(4) is not None else 1.0
    if min(h, w, t) < 1 or not weight >= 0 or not math.isfinite(weight):
      raise ValueError(f"config.data.buckets entry {spec!r} is invalid: sizes must be >= 1 and the weight >= 0")
    buckets.append(Bucket(h, w, t, weight))
  names = [b.name for b in buckets]
  if not buckets:
    raise ValueError("config.data.buckets is empty: give at least one 'HxWxT' bucket")
  if len(set(names)) != len(names):
    raise ValueError(f"config.data.buckets names a size twice: {names}")
  return tuple(buckets)


def available_frames(num_frames: int, source_fps: float, fps: float) -> int:
  """How many frames at `fps` a clip of num_frames at source_fps spans (all of them when fps <= 0)."""
  if num_frames <= 1 or fps <= 0 or source_fps <= 0:
    return num_frames
  return int(math.floor(num_frames / source_fps * fps + 0.5))


def assign(buckets, width: int, height: int, frames: int) -> tuple[int | None, str]:
  """(index of the bucket for a (width, height, frames) example, or None; why not).

  Fits: the bucket's frames are available (images, frames == 1, go only to 1-frame buckets) and its
  area is at most the example's (never upscale). Among those: nearest aspect ratio (in log space), then
  the largest area, then the most frames.
  """
  is_image = frames == 1
  fits = [i for i, b in enumerate(buckets) if b.weight > 0 and (b.frames == 1) == is_image
          and b.frames <= frames and b.height * b.width <= height * width]
  if not fits:
    kind = "1-frame" if is_image else "video"
    if not any(b.weight > 0 and (b.frames == 1) == is_image for b in buckets):
      return None, f"no {kind} bucket in config.data.buckets"
    if not any(b.weight > 0 and (b.frames == 1) == is_image and b.frames <= frames for b in buckets):
      return None, f"too short for every bucket ({frames} frames at the target fps)"
    return None, f"smaller than every bucket ({width}x{height})"
  ar = math.log(width / height)
  return min(fits, key=lambda i: (round(abs(math.log(buckets[i].aspect) - ar), 9),
                                  -buckets[i].height * buckets[i].width, -buckets[i].frames)), ""


class Schedule:
  """Which bucket each step uses and which examples fill each row of its global batch.

  Pure functions of (seed, step, row), so any host computes the same batches, and random access makes
  a resumed iterator continue exactly. Block counts are cached to keep `bucket_at` O(1) amortised.
  """

  def __init__(self, members: list[np.ndarray], weights, global_batch_size: int, seed: int):
    self.members = [np.asarray(m, np.int64) for m in members]
    mass = np.array([w * len(m) for w, m in zip(weights, self.members)], np.float64)
    if mass.sum() <= 0:
      raise ValueError("every bucket is empty (or has weight 0): no example fits config.data.buckets")
    self.probs = mass / mass.sum()
    self.global_batch_size = global_batch_size
    self.seed = seed
    self._prefix = [np.zeros(len(members), np.int64)]  # bucket counts before each block
    self._lock = threading.Lock()

  @functools.lru_cache(maxsize=64)
  def _block(self, k: int) -> np.ndarray:
    rng = np.random.default_rng([self.seed, 0, k])
    return rng.choice(len(self.probs), size=_STEPS_PER_BLOCK, p=self.probs)

  def bucket_at(self, step: int) -> tuple[int, int]:
    """(bucket of `step`, how many earlier steps used that bucket)."""
    k, j = divmod(step, _STEPS_PER_BLOCK)
    with self._lock:
      while len(self._prefix) <= k:
        counts = np.bincount(self._block(len(self._prefix) - 1), minlength=len(self.probs))
        self._prefix.append(self._prefix[-1] + counts)
      before = self._prefix[k]
    block = self._block(k)
    b = int(block[j])
    return b, int(before[b] + np.count_nonzero(block[:j] == b))

  @functools.lru_cache(maxsize=256)
  def _epoch(self, b: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([self.seed, 1, b, epoch]).permutation(self.members[b])

  def example_at(self, step: int, row: int) -> tuple[int, int]:
    """(bucket, example index) for row `row` of the global batch of `step`."""
    b, n = self.bucket_at(step)
    epoch, offset = divmod(n * self.global_batch_size + row, len(self.members[b]))
    return b, int(self._epoch(b, epoch)[offset])
