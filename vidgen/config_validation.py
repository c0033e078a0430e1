"""Checks a config before anything is built or compiled: one error naming the field and what is allowed."""
from __future__ import annotations

import os
import re

from vidgen.data import datasets
from vidgen.diffusion import conditioning
from vidgen.diffusion import sampling
from vidgen.models import attention
from vidgen.models import build
from vidgen.models import dit as dit_lib
from vidgen.models import text as text_lib


COMPUTE_DTYPES = ("float32", "bfloat16", "auto")  # auto: bfloat16 on accelerators, float32 on CPU
MODELS = ("vidgen", "wan2.1")
TEXT_ENCODERS = ("embedded", "umt5")


class ConfigError(ValueError):
  """A config field has a value the framework cannot use."""


def _require(ok: bool, field: str, value, allowed: str):
  if not ok:
    raise ConfigError(f"config.{field}={value!r} is invalid: {allowed}")


def _validate_media(config, tc: int, sc: int) -> None:
  """A folder or TFDS source and its buckets: every bucket must pass through the VAE and the DiT patches."""
  d = config.data
  _require(d.name in datasets.NAMES, "data.name", d.name, f"allowed {datasets.NAMES}")
  if d.name == "shapes":
    return
  if d.name == "folder":
    _require(bool(d.path) and os.path.isdir(d.path), "data.path", d.path, "name='folder' needs an existing folder")
    _require(not d.manifest or os.path.isfile(d.manifest), "data.manifest", d.manifest,
             "must be '' (sidecar .txt captions) or an existing .jsonl / .csv file")
  _require(d.fps >= 0, "data.fps", d.fps, "must be >= 0 (0 keeps the source frame rate)")
  try:
    buckets = datasets.buckets(d)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  pt, ph, pw = config.dit.patch_size
  for b in buckets:
    _require(b.height % (sc * ph) == 0 and b.width % (sc * pw) == 0, "data.buckets", b.name,
             f"bucket height and width must be multiples of {sc * ph} and {sc * pw} "
             f"(VAE {sc}x spatial compression x DiT patch)")
    _require((b.frames - 1) % tc == 0 and build.latent_grid(config, b.frames, b.height, b.width)[0] % pt == 0,
             "data.buckets", b.name,
             f"bucket frames must be 1 + {tc}k (the VAE) with 1 + k divisible by the DiT's temporal patch {pt}")


def validate(config) -> None:
  d, v, dit, text, s = config.data, config.vae, config.dit, config.text, config.sample
  _require(config.model in MODELS, "model", config.model, f"allowed {MODELS}")
  _require(text.encoder in TEXT_ENCODERS, "text.encoder", text.encoder, f"allowed {TEXT_ENCODERS}")
  _require((config.model == "wan2.1") == (text.encoder == "umt5"), "text.encoder", text.encoder,
           "model='wan2.1' reads UMT5 contexts (text.encoder='umt5'), vidgen's own models train the embedded one")
  _require(config.model == "vidgen" or bool(config.weights), "weights", config.weights,
           f"model={config.model!r} needs the checkpoint folder, e.g. --config.weights=DIR")
  _require(len(v.temporal_downsample) == len(v.dim_mult) - 1, "vae.temporal_downsample", tuple(v.temporal_downsample),
           f"needs one flag per downsampling level, i.e. len(vae.dim_mult) - 1 = {len(v.dim_mult) - 1} flags")
  _require(len(v.spatial_downsample) == len(v.dim_mult) - 1, "vae.spatial_downsample", tuple(v.spatial_downsample),
           f"needs one flag per downsampling level, i.e. len(vae.dim_mult) - 1 = {len(v.dim_mult) - 1} flags")
  _require(v.patch_size >= 1, "vae.patch_size", v.patch_size, "must be >= 1")
  _require(v.temporal_patch_size >= 1, "vae.temporal_patch_size", v.temporal_patch_size, "must be >= 1")
  _require(v.temporal_kernel >= 1 and v.temporal_kernel % 2 == 1, "vae.temporal_kernel", v.temporal_kernel,
           "must be odd and >= 1 (1: per-frame convs, 3: Wan 2.1)")
  if v.level_shortcuts:
    bad = build.vae(config).level_shortcut_mismatches()
    _require(not bad, "vae.dim_mult", tuple(v.dim_mult),
             f"vae.level_shortcuts needs level channel counts that divide one another; (where, from, to): {bad}")
  tc, sc = build.compression(config)
  _require(d.num_frames >= 1 and (d.num_frames - 1) % tc == 0, "data.num_frames", d.num_frames,
           f"the VAE takes 1 + {tc}k frames (1, {1 + tc}, {1 + 2 * tc}, {1 + 4 * tc}, ...)")
  # A tuple flag given twice is concatenated by ml_collections, e.g. (1, 2, 2, 3, 2, 2).
  _require(len(dit.patch_size) == 3 and all(int(p) == p and p >= 1 for p in dit.patch_size), "dit.patch_size",
           tuple(dit.patch_size), "allowed three integers >= 1 (frames, rows, columns)")
  pt, ph, pw = dit.patch_size
  for field, size, p in (("data.height", d.height, ph), ("data.width", d.width, pw)):
    _require(size > 0 and size % (sc * p) == 0, field, size,
             f"must be a positive multiple of {sc * p} (VAE {sc}x spatial compression x DiT patch {p})")
  latent_frames = build.latent_grid(config)[0]
  _require(latent_frames % pt == 0, "dit.patch_size", tuple(dit.patch_size),
           f"the temporal patch must divide the {latent_frames} latent frames")
  _validate_media(config, tc, sc)
  _require(d.speed > 0, "data.speed", d.speed, "must be > 0 pixels per frame")
  _require(d.num_train > 0, "data.num_train", d.num_train, "must be > 0")
  for field in ("dim", "ffn_dim", "freq_dim", "num_heads", "depth"):
    _require(dit[field] >= 1, f"dit.{field}", dit[field], "must be >= 1")
  _require(dit.dim % dit.num_heads == 0, "dit.num_heads", dit.num_heads, f"must divide dit.dim={dit.dim}")
  _require((dit.dim // dit.num_heads) % 2 == 0, "dit.dim", dit.dim,
           "dit.dim / dit.num_heads must be even (3D RoPE rotates pairs)")
  _require(dit.attention in attention.IMPLEMENTATIONS, "dit.attention", dit.attention,
           f"allowed {attention.IMPLEMENTATIONS}")
  # -1 (devices left over) is only known once the mesh exists: validate_for_mesh checks it then.
  _check_model_split(config, context=config.mesh.context, tensor=config.mesh.tensor)
  _require(dit.rope_theta > 1, "dit.rope_theta", dit.rope_theta, "must be > 1")
  _require(dit.pos_embed in dit_lib.POS_EMBEDS, "dit.pos_embed", dit.pos_embed, f"allowed {dit_lib.POS_EMBEDS}")
  _require(dit.remat in dit_lib.REMAT_POLICIES, "dit.remat", dit.remat, f"allowed {tuple(dit_lib.REMAT_POLICIES)}")
  for field, value in (("vae.dtype", v.dtype), ("dit.dtype", dit.dtype)):
    _require(value in COMPUTE_DTYPES, field, value, f"allowed {COMPUTE_DTYPES}")
  _require(text.width % text.num_heads == 0, "text.num_heads", text.num_heads, f"must divide text.width={text.width}")
  _require(text.max_length >= 1, "text.max_length", text.max_length, "must be >= 1")
  _require(text.position in text_lib.POSITIONS, "text.position", text.position, f"allowed {text_lib.POSITIONS}")
  _require(text.rope_theta > 1, "text.rope_theta", text.rope_theta, "must be > 1")
  _require(text.position != "rope" or (text.width // text.num_heads) % 2 == 0, "text.num_heads", text.num_heads,
           f"text.position='rope' needs an even head width (text.width={text.width} / text.num_heads)")
  for name in ("train_vae", "train_dit"):
    t = config[name]
    _require(t.steps >= 0, f"{name}.steps", t.steps, "must be >= 0")
    _require(t.batch_size >= 1, f"{name}.batch_size", t.batch_size, "must be >= 1")
    _require(t.lr > 0, f"{name}.lr", t.lr, "must be > 0")
    _require(t.log_every >= 1, f"{name}.log_every", t.log_every, "must be >= 1")
    _require(t.ckpt_every >= 1, f"{name}.ckpt_every", t.ckpt_every, "must be >= 1")
    _require(t.grad_accum_steps >= 1 and t.batch_size % t.grad_accum_steps == 0, f"{name}.grad_accum_steps",
             t.grad_accum_steps, f"must be >= 1 and divide {name}.batch_size={t.batch_size}")
  for name in ("text_dropout", "word_dropout"):
    _require(0.0 <= config.train_dit[name] < 1.0, f"train_dit.{name}", config.train_dit[name], "must be in [0, 1)")
  _require(0.0 <= config.train_dit.ema_decay < 1.0, "train_dit.ema_decay", config.train_dit.ema_decay,
           "must be in [0, 1)")
  # The names of train/state.py's OPTIMIZERS (validation does not import the trainers; a test keeps them equal).
  _require(config.train_dit.optimizer in ("adamw", "muon"), "train_dit.optimizer", config.train_dit.optimizer,
           "allowed ('adamw', 'muon')")
  _require(config.train_dit.muon_lr > 0, "train_dit.muon_lr", config.train_dit.muon_lr, "must be > 0")
  _require(set(config.train_dit.muon_modules) <= {"text", "dit"}, "train_dit.muon_modules",
           tuple(config.train_dit.muon_modules), "allowed: a subset of ('text', 'dit'), () for both")
  _require(config.train_dit.shift > 0, "train_dit.shift", config.train_dit.shift, "must be > 0")
  if dit.frame_conditioning:
    try:
      conditioning.parse_mask_weights(config.train_dit.frame_masks)
    except ValueError as e:
      raise ConfigError(f"config.train_dit.frame_masks={config.train_dit.frame_masks!r} is invalid: {e}") from None
  _require(s.steps >= 1, "sample.steps", s.steps, "must be >= 1")
  _require(s.solver in sampling.SOLVERS, "sample.solver", s.solver, f"allowed {sampling.SOLVERS}")
  _require(s.cfg_scale >= 0, "sample.cfg_scale", s.cfg_scale, "must be >= 0")
  _require(s.shift > 0, "sample.shift", s.shift, "must be > 0")
  _require(s.batch_size >= 1, "sample.batch_size", s.batch_size, "must be >= 1")
  _require(config.eval.num_prompts >= 1, "eval.num_prompts", config.eval.num_prompts, "must be >= 1")
  for field in ("num_two_object", "num_paraphrase"):
    _require(config.eval[field] >= 0, f"eval.{field}", config.eval[field], "must be >= 0 (0 skips the set)")


def _check_model_split(config, context: int, tensor: int) -> None:
  """The DiT's tokens split over mesh.context and its heads over mesh.tensor; sizes <= 1 split nothing."""
  if context > 1:
    tokens = build.dit_tokens(config)
    _require(tokens % context == 0, "mesh.context", context,
             f"must divide the {tokens} DiT tokens per clip (latent grid / dit.patch_size)")
  if tensor > 1:
    _require(config.dit.num_heads % tensor == 0, "dit.num_heads", config.dit.num_heads,
             f"must be divisible by mesh.tensor={tensor}")


def validate_for_mesh(config, data_parallel_size: int, context: int = 1, tensor: int = 1) -> None:
  """Checks that need the device mesh: every global batch splits evenly over its data-parallel axes,
  tokens over `context` and heads over `tensor` (the mesh's sizes)."""
  _check_model_split(config, context, tensor)
  for name in ("train_vae", "train_dit"):
    b, accum = config[name].batch_size, config[name].grad_accum_steps
    _require(b % (data_parallel_size * accum) == 0, f"{name}.batch_size", b,
             f"must be divisible by the mesh's data-parallel size {data_parallel_size} (data x fsdp) x "
             f"{name}.grad_accum_steps={accum}")


def with_output_shape(config, size: str | None = None, frames: int | None = None):
  """A copy of config that generates `size` ('WxH' pixels) and `frames`, checked like any config: 3D RoPE and
  the convolutional VAE take any shape that the VAE compression and the DiT patches divide."""
  out = config.copy_and_resolve_references()
  if size:
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", size)
    if not m:
      raise ConfigError(f"--size={size!r} is invalid: allowed WxH in pixels, e.g. --size=64x36")
    out.data.width, out.data.height = int(m.group(1)), int(m.group(2))
  if frames is not None:
    out.data.num_frames = int(frames)
  try:
    validate(out)
  except ConfigError as e:
    raise ConfigError(f"--size={size} --frames={frames}: {e}") from None
  return out
