"""Users' media (a video folder or a TFDS video dataset) sorted into buckets, read one clip at a time.

What cannot be used is skipped and counted, never fatal: a file that fails probing (corrupt, empty,
unsupported codec, no caption) is left out of the index, one that fits no bucket is left out at
assignment, and one that fails to decode mid-training is replaced by another example of the same bucket
(chosen by a seeded draw, so runs stay reproducible) and reported in the training log.
"""
from __future__ import annotations

import collections
import threading
from typing import Callable

import numpy as np

from vidgen.data import buckets as buckets_lib
from vidgen.data import video_files

_MAX_ATTEMPTS = 16


class MediaSet:
  """`items` (video_files.MediaInfo) assigned to `buckets`; `decode(item, bucket, start)` -> uint8 clip."""

  def __init__(self, items, skipped: dict[str, str], buckets, fps: float,
               decode: Callable[[video_files.MediaInfo, buckets_lib.Bucket, float], np.ndarray]):
    self.items, self.buckets, self.fps, self._decode = list(items), tuple(buckets), fps, decode
    self.skipped = dict(skipped)
    members = [[] for _ in self.buckets]
    for i, item in enumerate(self.items):
      frames = 1 if item.is_image else buckets_lib.available_frames(item.num_frames, item.fps, fps)
      b, why = buckets_lib.assign(self.buckets, item.width, item.height, frames)
      if b is None:
        self.skipped[item.path] = why
      else:
        members[b].append(i)
    self.members = [np.asarray(m, np.int64) for m in members]
    self.failed: dict[str, str] = {}  # decode failures during training: path -> reason
    self._lock = threading.Lock()

  def __len__(self):
    return sum(len(m) for m in self.members)

  def schedule(self, global_batch_size: int, seed: int) -> buckets_lib.Schedule:
    return buckets_lib.Schedule(self.members, [b.weight for b in self.buckets], global_batch_size, seed)

  def load(self, bucket: int, example: int, seed: int) -> dict:
    """{'video': uint8 [T, H, W, 3] of the bucket's shape, 'caption': str}; a random clip start from `seed`."""
    rng = np.random.default_rng(seed)
    b = self.buckets[bucket]
    for _ in range(_MAX_ATTEMPTS):
      item = self.items[example]
      if item.path not in self.failed:
        try:
          return {"video": self._decode(item, b, float(rng.random())), "caption": item.caption}
        except video_files.MediaError as e:
          with self._lock:
            self.failed[item.path] = str(e)
      example = int(rng.choice(self.members[bucket]))
    raise RuntimeError(f"bucket {b.name}: {_MAX_ATTEMPTS} draws in a row failed to decode; failed files: "
                       f"{dict(list(self.failed.items())[:5])}")

  def report(self) -> dict:
    """Counts per bucket, skipped files and why (and decode failures so far), for people and for JSON."""
    reasons = collections.Counter(_reason_kind(r) for r in self.skipped.values())
    return {"examples": len(self), "buckets": {b.name: len(m) for b, m in zip(self.buckets, self.members)},
            "skipped": len(self.skipped), "skipped_by_reason": dict(sorted(reasons.items())),
            "skipped_files": dict(sorted(self.skipped.items())), "failed_during_training": dict(self.failed)}


def _reason_kind(reason: str) -> str:
  """'cannot open: moov atom not found' -> 'cannot open': counts group by the kind, files keep the detail."""
  return reason.split(":")[0].split(" (")[0].strip()


def format_report(report: dict) -> str:
  lines = [f"{report['examples']} examples in {len(report['buckets'])} buckets; {report['skipped']} skipped"]
  lines += [f"  bucket {name}: {n}" for name, n in report["buckets"].items()]
  lines += [f"  skipped, {kind}: {n}" for kind, n in report["skipped_by_reason"].items()]
  return "\n".join(lines)
