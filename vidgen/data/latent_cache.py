"""The bucketed latent cache: every media clip encoded once by the frozen VAE, with its tokenized caption,
into one ArrayRecord shard per bucket; DiT training then reads latents bucket by bucket.

A cache directory is named by a hash of what it depends on (data config, VAE config and its latent
statistics, tokenizer), so a changed VAE or dataset gets a fresh cache and an unchanged one is reused.
Shards are written under a temporary name and renamed when complete; index.json, written last, marks
the cache usable, so an interrupted build is redone rather than read half-written.
"""
from __future__ import annotations

import hashlib
import json
import os

from array_record.python import array_record_data_source
from array_record.python import array_record_module
from flax import serialization
import numpy as np
import tqdm

from vidgen import atomic_files


class LatentCache:
  """Random access to cached examples {'mean', 'std': float32 [F, H, W, C], 'ids': int32 [L]}."""

  def __init__(self, directory: str):
    with open(os.path.join(directory, "index.json")) as f:
      self.index = json.load(f)
    counts = [b["count"] for b in self.index["buckets"]]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    # Global record numbers of each bucket (shards are read as one source, in bucket order).
    self.members = [np.arange(s, s + n) for s, n in zip(starts, counts)]
    paths = [os.path.join(directory, b["file"]) for b in self.index["buckets"] if b["count"]]
    self._source = array_record_data_source.ArrayRecordDataSource(paths) if paths else []

  def __len__(self):
    return int(sum(len(m) for m in self.members))

  def __getitem__(self, i: int) -> dict:
    return serialization.msgpack_restore(self._source[int(i)])


def directory_name(key: str) -> str:
  """A short directory name for everything the cache depends on (any string, e.g. a JSON description)."""
  return hashlib.sha1(key.encode()).hexdigest()[:16]


def is_complete(directory: str) -> bool:
  return os.path.exists(os.path.join(directory, "index.json"))


def build(directory: str, data, encode, tokenizer, batch: int = 16, seed: int = 0,
          progress: bool = True) -> LatentCache:
  """Encodes every clip of `data` (a media.MediaSet) with `encode(uint8 videos) -> (mean, logvar)` into
  `directory` and opens it. Clip starts are drawn once from `seed`."""
  os.makedirs(directory, exist_ok=True)
  entries = []
  total = len(data)
  bar = tqdm.tqdm(total=total, desc="caching latents", disable=not progress, leave=False)
  for b, bucket in enumerate(data.buckets):
    members = data.members[b]
    name = f"{bucket.name}.array_record"
    with atomic_files.partial_path(os.path.join(directory, name)) as tmp:
      writer = array_record_module.ArrayRecordWriter(tmp, "group_size:1")
      for start in range(0, len(members), batch):
        chunk = [data.load(b, int(ex), seed=[seed, 4, int(ex)]) for ex in members[start:start + batch]]
        mean, logvar = encode(np.stack([ex["video"] for ex in chunk]))
        mean, std = np.asarray(mean, np.float32), np.asarray(np.exp(0.5 * np.asarray(logvar, np.float32)))
        ids, _ = tokenizer.encode_batch([ex["caption"] for ex in chunk])
        for i in range(len(chunk)):
          writer.write(serialization.msgpack_serialize(
              {"mean": mean[i], "std": std[i], "ids": np.asarray(ids[i], np.int32)}))
        bar.update(len(chunk))
      writer.close()
    entries.append({"name": bucket.name, "count": int(len(members)), "file": name})
  bar.close()
  atomic_files.write_json(os.path.join(directory, "index.json"),
                          {"buckets": entries, "failed_during_caching": dict(data.failed)}, indent=1)
  return LatentCache(directory)
