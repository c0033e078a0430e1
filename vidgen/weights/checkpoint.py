"""Orbax checkpoints: a composite of the train state, the grain iterator state, the config and a fingerprint.

A killed run resumes from the newest checkpoint in its directory, data order included, so the
resumed run sees exactly the batches the uninterrupted one would have.

Saves are asynchronous (training goes on while the arrays are written) and keep the newest N steps.
Orbax writes a step into `<step>.orbax-checkpoint-tmp` and renames it when complete, so a process
killed mid-save leaves only that directory: restore never sees it and the next writer deletes it. A
finalized step can still be damaged later (files lost or truncated, bits flipped), and orbax restores
flipped bits without complaint, so every step also stores a fingerprint of the state and the data
position that restore checks. A step that fails either way is skipped with a warning, moved aside
to `<step>.damaged` (when writable, so the run can save that step again), and the one before it is
restored.
"""
from __future__ import annotations

import json
import os
import time
import zlib

from absl import logging
import grain
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

ITEMS = ("state", "data", "config", "fingerprint")


class CheckpointError(RuntimeError):
  """No step in a checkpoint directory can be restored."""


class Checkpointer:
  """Saves and restores steps of one run; restore skips damaged steps."""

  def __init__(self, directory: str, keep: int = 2, read_only: bool = False):
    self.directory = os.path.abspath(directory)
    self.read_only = read_only
    self.manager = ocp.CheckpointManager(
        self.directory, item_names=ITEMS,
        # read_only is ours, not orbax's (whose read-only mode logs warnings): no directory created,
        # no temporary directories cleaned, no damaged steps moved.
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=not read_only, enable_async_checkpointing=True,
            cleanup_tmp_directories=not read_only))  # what a killed save left behind

  def latest_step(self):
    return self.manager.latest_step()

  def save(self, step: int, state, data_iter, config, force: bool = False):
    """Starts writing `step` and returns once the arrays are copied off the devices."""
    record = {"state": fingerprint(state)}
    args = dict(state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(json.loads(config.to_json())))
    if data_iter is not None:
      record["data"] = _data_fingerprints(data_iter)
      args["data"] = grain.checkpoint.CheckpointSave(data_iter)
    args["fingerprint"] = ocp.args.JsonSave(record)
    self.manager.save(step, args=ocp.args.Composite(**args), force=force)

  def restore(self, abstract_state=None, data_iter=None, step=None):
    """The state of the newest intact step (at most `step`).

    Arrays land on the shardings of `abstract_state` (see `abstract_like`); without one they come back
    as saved. The data iterator is restored in place. Damaged steps are skipped with a warning.
    """
    self.manager.wait_until_finished()
    steps = sorted((s for s in self.manager.all_steps() if step is None or s <= step), reverse=True)
    if not steps:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    damaged, problems = [], []
    for s in steps:
      try:
        state, problem = self._restore_step(s, abstract_state, data_iter), None
      except Exception as e:  # orbax, tensorstore and json each raise their own errors on damaged files
        state, problem = None, _one_line(e)
      if _on_every_process(problem is None):
        break
      problems.append(problem or "another process could not restore it")
      logging.warning("Skipping damaged checkpoint step %d in %s: %s", s, self.directory, problems[-1])
      damaged.append(s)
    else:
      raise CheckpointError(f"No intact checkpoint in {self.directory}: steps {steps} all fail to restore, "
                            f"the newest with {problems[0]}")
    if damaged and not self.read_only:
      self._move_aside(damaged)
    logging.info("Restored %s at step %d", self.directory, s)
    return state

  def _restore_step(self, step: int, abstract_state, data_iter):
    """Restores one step and checks it against its fingerprint; raises if anything is off."""
    has_fingerprint = os.path.isdir(os.path.join(self.directory, str(step), "fingerprint"))
    args = dict(state=ocp.args.StandardRestore(abstract_state))
    if has_fingerprint:
      args["fingerprint"] = ocp.args.JsonRestore()
    if data_iter is not None:
      args["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    restored = self.manager.restore(step, args=ocp.args.Composite(**args))
    if not has_fingerprint:
      logging.warning("Checkpoint step %d in %s has no fingerprint (written before they existed): "
                      "restored unverified", step, self.directory)
      return restored["state"]
    record = restored["fingerprint"]
    _compare("state", fingerprint(restored["state"]), record["state"])
    if data_iter is not None:
      expected = record["data"][jax.process_index()] if "data" in record else None
      if _data_fingerprints(data_iter, gather=False)[0] != expected:
        raise ValueError("data iterator state does not match its fingerprint")
    return restored["state"]

  def _move_aside(self, steps):
    """Renames damaged steps to `<step>.damaged`, out of orbax's sight, so they can be saved again."""
    if jax.process_index() == 0:
      for s in steps:
        target = os.path.join(self.directory, f"{s}.damaged")
        if os.path.exists(target):
          target = f"{target}-{time.time_ns()}"
        os.rename(os.path.join(self.directory, str(s)), target)
        logging.warning("Moved damaged checkpoint step %d aside to %s", s, target)
    if jax.process_count() > 1:
      ocp.multihost.sync_global_processes("vidgen_checkpoint_move_aside")
    self.manager.reload()

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    """Waits for the save in flight, then releases the manager; safe to call twice."""
    self.manager.wait_until_finished()
    self.manager.close()

  def __enter__(self):
    return self

  def __exit__(self, *_):
    self.close()


def abstract_like(tree, shardings):
  """ShapeDtypeStructs carrying the target shardings, for restoring onto a (possibly new) mesh."""
  return jax.tree_util.tree_map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def fingerprint(tree) -> dict[str, list[int]]:
  """Per array leaf, a plain and a position-weighted uint32 sum of its bits: any flipped bit changes them.

  Integer sums wrap exactly in any order, so the result does not depend on the mesh the arrays live on.
  """
  leaves = [(p, x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0] if hasattr(x, "dtype")]
  if not leaves:
    return {}
  sums = _sums([x for _, x in leaves])
  sums = np.asarray(sums.addressable_data(0) if sums.is_fully_replicated else jax.device_get(sums))
  return {_path_name(p): [int(a), int(b)] for (p, _), (a, b) in zip(leaves, sums)}


@jax.jit
def _sums(arrays):
  return jnp.stack([_leaf_sums(x) for x in arrays])


def _leaf_sums(x):
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if x.dtype == jnp.bool_:
    x = x.astype(jnp.uint8)
  width = {1: jnp.uint8, 2: jnp.uint16}.get(x.dtype.itemsize, jnp.uint32)  # 8-byte types gain a dim of 2
  bits = jax.lax.bitcast_convert_type(x, width).astype(jnp.uint32)
  # Row-major position from iotas, not a reshape, so sharded leaves need no gather.
  position, stride = jnp.zeros(bits.shape, jnp.uint32), 1
  for d in reversed(range(bits.ndim)):
    position = position + jax.lax.broadcasted_iota(jnp.uint32, bits.shape, d) * jnp.uint32(stride)
    stride = stride * bits.shape[d] % 2**32
  weights = position * jnp.uint32(0x9E3779B1) + jnp.uint32(1)
  return jnp.stack([jnp.sum(bits, dtype=jnp.uint32), jnp.sum(bits * weights, dtype=jnp.uint32)])


def _path_name(path) -> str:
  """'params/Dense_0/kernel': the same for a TrainState and for the nested dicts a raw restore returns."""
  return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _compare(what: str, actual: dict, expected: dict):
  if actual == expected:
    return
  differ = sorted(set(actual) ^ set(expected)) or [k for k in expected if actual[k] != expected[k]]
  raise ValueError(f"{what} does not match its fingerprint at {differ[0]!r} ({len(differ)} leaves differ)")


def _data_fingerprints(data_iter, gather: bool = True) -> list[int]:
  """CRC32 of the iterator state, one per process (each reads its own rows)."""
  state = data_iter.get_state()
  crc = zlib.crc32(state if isinstance(state, bytes) else json.dumps(state, sort_keys=True).encode())
  if not gather or jax.process_count() == 1:
    return [crc]
  return [int(c) for c in np.asarray(multihost_utils.process_allgather(np.uint32(crc))).reshape(-1)]


def _one_line(error: Exception) -> str:
  lines = str(error).strip().splitlines()
  return f"{type(error).__name__}: {lines[0][:300]}" if lines else type(error).__name__


def _on_every_process(ok: bool) -> bool:
  """True only if every process says so: processes must fall back to the same step."""
  if jax.process_count() == 1:
    return ok
  return bool(np.asarray(multihost_utils.process_allgather(np.int32(ok))).min())
