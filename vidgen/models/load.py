"""Parameters of a trained workdir: WORKDIR/vae (checkpoints and latent statistics) and WORKDIR/dit.

Every reader checks first that the checkpoint exists, so asking a fresh workdir for a model costs one line
that names the mode which makes it.
"""
from __future__ import annotations

import json
import os

import numpy as np

from vidgen.weights import checkpoint as ckpt_lib

# What makes each model's checkpoint: the --mode to name when it is missing.
_MADE_BY = {"vae": "train_vae", "dit": "train_dit"}


class MissingCheckpointError(FileNotFoundError):
  """A workdir has no trained model of the kind asked for yet."""


def checkpoint_dir(workdir: str, name: str) -> str:
  return os.path.join(workdir, name, "checkpoints")


def require_checkpoint(workdir: str, name: str):
  """Raises MissingCheckpointError unless WORKDIR/name holds a finished checkpoint step."""
  path = checkpoint_dir(workdir, name)
  if not os.path.isdir(path) or not any(p.isdigit() for p in os.listdir(path)):
    raise MissingCheckpointError(
        f"no {name.upper()} checkpoint in workdir {workdir!r} ({path}); create one with --mode={_MADE_BY[name]} "
        f"(or --mode=all) on this workdir first")


def checkpoint_steps(workdir: str, name: str) -> list[int]:
  """The finished checkpoint steps of WORKDIR/name, oldest first (config.checkpoint_keep sets how many stay)."""
  require_checkpoint(workdir, name)
  with ckpt_lib.Checkpointer(checkpoint_dir(workdir, name), read_only=True) as checkpointer:
    return sorted(checkpointer.manager.all_steps())


def restore_field(workdir: str, name: str, field: str, step: int | None = None):
  """One field of the TrainState in the newest intact checkpoint of WORKDIR/name, as plain arrays; with `step`,
  of that step exactly (a missing or damaged one raises, rather than falling back to an older step)."""
  require_checkpoint(workdir, name)
  path = checkpoint_dir(workdir, name)
  with ckpt_lib.Checkpointer(path, read_only=True) as checkpointer:
    steps = sorted(checkpointer.manager.all_steps())
    state = checkpointer.restore(step=step) if step is None or step in steps else None
  get = lambda key: state[key] if isinstance(state, dict) else getattr(state, key)
  if step is not None and (state is None or int(get("step")) != step):  # restore falls back past damaged steps
    raise ckpt_lib.CheckpointError(f"checkpoint step {step} of {path} is missing or damaged (steps there: {steps})")
  return get(field)


def latent_stats(workdir: str) -> dict[str, np.ndarray]:
  """Per-channel mean and std of the VAE's latents, which normalise the DiT's latents."""
  path = os.path.join(workdir, "vae", "latent_stats.json")
  if not os.path.exists(path):
    raise MissingCheckpointError(f"no VAE latent statistics in workdir {workdir!r} ({path}); --mode=train_vae "
                                 "writes them when it finishes")
  with open(path) as f:
    return {k: np.asarray(v, np.float32) for k, v in json.load(f).items()}


def vae_params(workdir: str):
  """(VAE params of the newest checkpoint, latent statistics)."""
  return restore_field(workdir, "vae", "params"), latent_stats(workdir)


def denoiser_params(workdir: str, use_ema: bool, step: int | None = None):
  """Text encoder + DiT params of the newest checkpoint (or of `step`): the EMA average when use_ema, else the
  raw ones."""
  params = restore_field(workdir, "dit", "ema_params" if use_ema else "params", step=step)
  if params is None:
    raise ValueError(f"the DiT checkpoint of workdir {workdir!r} holds no EMA (it was trained with "
                     "train_dit.ema_decay=0): read it with use_ema=False")
  return params
