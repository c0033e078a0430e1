"""Orbax checkpoints: a composite of the train state, the grain iterator state and the config.

A killed run resumes from the newest checkpoint in its directory, data order included, so the
resumed run sees exactly the batches the uninterrupted one would have.
"""
from __future__ import annotations

import json
import os

from absl import logging
import grain
import jax
import orbax.checkpoint as ocp


class Checkpointer:
  def __init__(self, directory: str, keep: int = 2):
    self.directory = os.path.abspath(directory)
    self.manager = ocp.CheckpointManager(
        self.directory, item_names=("state", "data", "config"),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

  def latest_step(self):
    return self.manager.latest_step()

  def save(self, step: int, state, data_iter, config, force: bool = False):
    args = dict(state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(json.loads(config.to_json())))
    if data_iter is not None:
      args["data"] = grain.checkpoint.CheckpointSave(data_iter)
    self.manager.save(step, args=ocp.args.Composite(**args), force=force)

  def restore(self, abstract_state, data_iter=None, step=None):
    """Restores the state onto the shardings of `abstract_state` (and the iterator in place)."""
    step = self.manager.latest_step() if step is None else step
    args = dict(state=ocp.args.StandardRestore(abstract_state))
    if data_iter is not None:
      args["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    restored = self.manager.restore(step, args=ocp.args.Composite(**args))
    logging.info("Restored %s at step %d", self.directory, step)
    return restored["state"]

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()


def abstract_like(tree, shardings):
  """ShapeDtypeStructs carrying the target shardings, for restoring onto a (possibly new) mesh."""
  return jax.tree_util.tree_map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
