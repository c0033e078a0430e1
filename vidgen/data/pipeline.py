"""grain input pipelines: random-access source -> seeded global shuffle -> global batches, each host
reading only its rows of every global batch.

The global batch is the same whatever the number of hosts, so 2 hosts x 4 devices train exactly like
1 host x 8 devices. Iterators are grain DatasetIterators, whose state the checkpoints store, so a
resumed run reads the exact batches the uninterrupted run would have read.
"""
from __future__ import annotations

from typing import Callable

import grain
import jax
import numpy as np


class ArraySource:
  """A random-access source over equally long numpy arrays held in memory (e.g. cached latents)."""

  def __init__(self, arrays: dict[str, np.ndarray]):
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) != 1:
      raise ValueError(f"ArraySource arrays differ in length: {lengths}")
    self._arrays = arrays
    self._len = next(iter(lengths.values()))

  def __len__(self):
    return self._len

  def __getitem__(self, index):
    return {k: v[index] for k, v in self._arrays.items()}


def host_batch_size(global_batch_size: int) -> int:
  if global_batch_size % jax.process_count():
    raise ValueError(f"batch size {global_batch_size} is not divisible by the {jax.process_count()} hosts")
  return global_batch_size // jax.process_count()


def batched_iterator(source, global_batch_size: int, seed: int, transform: Callable | None = None,
                     num_threads: int = 2):
  """A checkpointable, endless iterator of host-local numpy batches (dicts of [B_host, ...] arrays) of
  `source` shuffled by `seed` (a fresh order every epoch).

  Host p of P reads rows [p * B_host, (p + 1) * B_host) of every global batch: batches of B_host in
  global order, every P-th one starting at the p-th.
  """
  ds = grain.MapDataset.source(source).shuffle(seed=seed).repeat()
  if transform is not None:
    ds = ds.map(transform)
  ds = ds.batch(host_batch_size(global_batch_size), drop_remainder=True)
  ds = ds[jax.process_index()::jax.process_count()]
  return iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=4)))


def bucketed_iterator(schedule, load: Callable[[int, int, int, int], dict], num_threads: int = 2):
  """A checkpointable iterator of host-local batches, each from one bucket (see vidgen/data/buckets.py).

  Element i of this host is row p * B_host + i % B_host of global step i // B_host; `load(bucket, example,
  step, row)` reads it (decode, resample, crop). Random access by index keeps the iterator state one
  integer, so a resumed run reads exactly the batches the uninterrupted run would have read.
  """
  b_host = host_batch_size(schedule.global_batch_size)
  first_row = jax.process_index() * b_host

  def element(i):
    step, r = divmod(int(i), b_host)
    bucket, example = schedule.example_at(step, first_row + r)
    return load(bucket, example, step, first_row + r)

  ds = grain.MapDataset.range(2**48).map(element).batch(b_host, drop_remainder=True)
  return iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=4)))
