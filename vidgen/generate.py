"""Sampling from a trained workdir: prompts (and known frames, or a source to edit) in, uint8 videos (and mp4
files + index.json) out. The tasks built on it (i2v, extend, interpolate, connect, edit) are in vidgen/tasks.py."""
from __future__ import annotations

import json
import os
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from vidgen import atomic_files
from vidgen import config_validation
from vidgen import video_io
from vidgen.diffusion import conditioning
from vidgen.diffusion import sampling
from vidgen.models import build
from vidgen.models import load
from vidgen.models import umt5
from vidgen.models import vae_codec
from vidgen.models import wan
from vidgen.parallel import mesh as mesh_lib


class Generator:
  """Samples videos for prompts from a frozen VAE and a denoiser: vidgen's own (a trained workdir, below) or
  public weights (WanGenerator). Sampling, guidance, frame conditioning and decoding are shared; a family
  supplies how prompts become text contexts and how the denoiser is called."""

  def __init__(self, config, workdir: str, use_ema: bool | None = None):
    """The VAE and the (EMA) text encoder + DiT of a trained workdir (config.model='vidgen')."""
    load.require_checkpoint(workdir, "vae")
    load.require_checkpoint(workdir, "dit")
    self.config = config
    use_ema = config.sample.use_ema if use_ema is None else use_ema
    self.vae_params, stats = load.vae_params(workdir)
    self.params = load.denoiser_params(workdir, use_ema=use_ema and config.train_dit.ema_decay > 0)
    self.latent_mean, self.latent_std = jnp.asarray(stats["mean"]), jnp.asarray(stats["std"])
    self.model = build.denoiser(config)
    self.temporal_compression, self.spatial_compression = build.compression(config)
    self._check_shapes(workdir)
    self.tokenizer = build.tokenizer(config)
    self._encode_text = jax.jit(lambda p, ids: self.model.apply({"params": p}, ids, method=self.model.encode_text))
    self._denoise = lambda params, *args: self.model.apply({"params": params}, *args, method=self.model.velocity)
    self._setup(config, frame_conditioning=bool(config.dit.frame_conditioning))

  def _setup(self, config, frame_conditioning: bool, compiler_options: dict | None = None):
    """What every family shares: the latent grid, the jitted guided velocity and the VAE's functions."""
    self.grid = build.latent_grid(config)
    self.frame_conditioning = frame_conditioning
    self._velocity = jax.jit(self._cond_uncond_velocity, compiler_options=compiler_options)
    self._encode = vae_codec.encode_fn(config)
    vae = build.vae(config)
    self._encode_model_space = jax.jit(lambda p, v, m: vae.apply(
        {"params": p}, conditioning.blank_unknown(vae_codec.to_model_input(v), m), method=vae.encode))
    self._decode = vae_codec.decode_fn(config)
    self._decode_continued = vae_codec.decode_continued_fn(config)

  def encode_prompts(self, prompts: list[str]):
    """(context, mask, pooled) of the text encoder for prompts ('' is the unconditional all-padding text)."""
    ids, _ = self.tokenizer.encode_batch(prompts)
    return self._encode_text(self.params, ids)

  def _check_shapes(self, workdir: str):
    """The checkpoint must be the model the config describes: one line naming the first leaf that differs."""
    inputs = build.denoiser_init_inputs(self.config)
    expected = nn.unbox(jax.eval_shape(self.model.init, jax.random.key(0), *inputs)["params"])
    shapes = lambda tree: {jax.tree_util.keystr(p): tuple(a.shape) for p, a in jax.tree_util.tree_leaves_with_path(tree)}
    want, got = shapes(expected), shapes(self.params)
    for name in sorted(set(want) | set(got)):
      if want.get(name) != got.get(name):
        z = self.config.vae.z_dim
        hint = (f" (config.dit.frame_conditioning sets it: {z} input channels without, "
                f"{conditioning.channels(z, self.temporal_compression)} with; other counts come from an "
                "older layout: retrain with --mode=train_dit)" if "patch_embedding" in name else "")
        raise config_validation.ConfigError(
            f"the DiT checkpoint in {workdir} does not match the config: {name} is {got.get(name, 'absent')} "
            f"there, {want.get(name, 'absent')} in the config{hint}")

  def _cond_uncond_velocity(self, params, x, t, text_c, text_u, y, mask):
    """Conditional and unconditional velocities in one batch of 2B; both see the same known frames."""
    (ctx_c, mask_c, pool_c), (ctx_u, mask_u, pool_u) = text_c, text_u
    if self.frame_conditioning:
      x = conditioning.model_input(x, y, mask)
    xx = jnp.concatenate([x, x])
    tt = jnp.full((xx.shape[0],), t, jnp.float32)
    v = self._denoise(params, xx, tt, jnp.concatenate([ctx_c, ctx_u]), jnp.concatenate([mask_c, mask_u]),
                      jnp.concatenate([pool_c, pool_u]))
    return v[: x.shape[0]], v[x.shape[0]:]

  def encode(self, videos) -> jnp.ndarray:
    """Normalised latent means [N, T_lat, h, w, z] of uint8 videos [N, 1 + tc k, H, W, 3]."""
    mean, _ = self._encode(self.vae_params, np.asarray(videos))
    return (mean - self.latent_mean) / self.latent_std

  def condition(self, frames, frame_mask) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(y [N, T_lat, h, w, z], latent mask [N, T_lat, tc]) of known frames: uint8 [N, F, H, W, 3] with
    frame_mask [N, F] (1 on known frames; the others' pixels are ignored)."""
    mean, _ = self._encode_model_space(self.vae_params, jnp.asarray(frames), jnp.asarray(frame_mask, jnp.float32))
    return (mean - self.latent_mean) / self.latent_std, conditioning.latent_mask(frame_mask, self.temporal_compression)

  def decode(self, latents, as_uint8: bool = True) -> np.ndarray:
    """uint8 videos [N, T, H, W, 3] of normalised latents [N, T_lat, h, w, z] (or the VAE's pixels in [-1, 1])."""
    pixels = self._decode(self.vae_params, latents * self.latent_std + self.latent_mean)
    return vae_codec.to_uint8(pixels) if as_uint8 else np.asarray(pixels)

  def decode_continued(self, latents, cache=None) -> tuple[np.ndarray, object]:
    """(uint8 frames, cache) of normalised latents that continue those decoded by the call that returned
    `cache` (None starts a video, as `decode`): chained calls decode like one long latent video."""
    video, cache = self._decode_continued(self.vae_params, latents * self.latent_std + self.latent_mean, cache)
    return vae_codec.to_uint8(video), cache

  def sample_latents(self, prompts: list[str], seed: int | None = None, *, steps: int | None = None,
                     solver: str | None = None, cfg_scale: float | None = None, shift: float | None = None,
                     frames=None, frame_mask=None, source=None, strength: float = 1.0, noise=None,
                     progress: bool = True):
    """Normalised latents [N, T_lat, h, w, z]; video i starts from the noise of seed + i, whatever the batching.

    frames uint8 [N, F, H, W, 3] with frame_mask [N, F] (1 on known frames): frame conditioning; latent frames
    whose frames and all before them are known are written back into the result (they come back through the
    VAE as given). A DiT without frame conditioning (Wan's T2V) is conditioned by replacement instead: the latent
    frames whose frames are all known follow their noised latents while the others are sampled
    (sampling.replacing), and come back as given. source [N, T_lat, h, w, z] with strength in (0, 1]: start from
    the source noised to t = strength instead of pure noise (editing: low strength keeps layout and motion). noise
    [N, T_lat, h, w, z]: start from this noise instead of drawing it (to reproduce another implementation's run)."""
    s = self.config.sample
    seed = s.seed if seed is None else seed
    steps, solver = steps or s.steps, solver or s.solver
    cfg_scale = s.cfg_scale if cfg_scale is None else cfg_scale
    shift = s.shift if shift is None else shift
    tc, sc = self.temporal_compression, self.spatial_compression
    if not 0.0 < strength <= 1.0:
      raise ValueError(f"strength={strength}: must be in (0, 1]")
    if (frames is None) != (frame_mask is None):
      raise ValueError("known frames and their mask come together: give both or neither")
    if frames is not None:
      _, f, h, w, _ = np.shape(frames)
      if (f - 1) % tc or h % sc or w % sc or np.shape(frame_mask) != np.shape(frames)[:2]:
        raise ValueError(f"known frames {np.shape(frames)} with mask {np.shape(frame_mask)}: need [N, 1 + {tc} k, "
                         f"H, W, 3] with H and W multiples of {sc} and a mask [N, frames]")
      grid = build.latent_grid(self.config, f, h, w)
      replaced = conditioning.latent_mask(frame_mask, tc).min(axis=-1) > 0  # latent frames known whole
      if not self.frame_conditioning and not np.all(np.any(replaced, axis=1)):
        raise ValueError(f"a DiT without frame conditioning is conditioned by replacing whole latent frames: each "
                         f"video's known frames must cover frame 0 or all {tc} frames of a latent frame (frames "
                         f"{tc} j - {tc - 1} to {tc} j)")
    elif noise is not None:
      grid = tuple(np.shape(noise)[1:4])
    else:
      grid = tuple(source.shape[1:4]) if source is not None else self.grid
    out = []
    for start in range(0, len(prompts), s.batch_size):
      batch = slice(start, start + s.batch_size)
      n = len(prompts[batch])
      text_c = self.encode_prompts(prompts[batch])
      text_u = self.encode_prompts([s.negative_prompt] * n)  # guidance steers away from it
      if noise is not None:
        x = jnp.asarray(noise[batch], jnp.float32)
      else:
        x = jnp.stack([jax.random.normal(jax.random.key(seed + start + i), (*grid, self.config.vae.z_dim))
                       for i in range(n)])
      noise_x = x
      if source is not None:
        x = (1.0 - strength) * jnp.asarray(source[batch]) + strength * x
      y = m = write_back = None
      if frames is not None and not self.frame_conditioning:
        # Replacement: latent frames whose frames are all known follow their noised latents (sampling.replacing).
        y, _ = self.condition(frames[batch], frame_mask[batch])
        write_back = replaced[batch]
      elif self.frame_conditioning:
        if frames is not None:
          known, known_mask = frames[batch], frame_mask[batch]
        else:  # nothing known: y is still the encoding of the (blank) clip, as in training's 'none' mask
          t_lat, h, w = grid
          known = np.zeros((n, 1 + tc * (t_lat - 1), h * sc, w * sc, 3), np.uint8)
          known_mask = np.zeros(known.shape[:2], np.float32)
        y, m = self.condition(known, known_mask)
        write_back = conditioning.known_prefix(jnp.asarray(known_mask), tc)
      cond_uncond = lambda x, t: self._velocity(self.params, x, t, text_c, text_u, y, m)
      velocity = sampling.guided(cond_uncond, cfg_scale)
      if frames is not None and not self.frame_conditioning:
        velocity = sampling.replacing(velocity, write_back, y, noise_x)
      z = sampling.sample(velocity, x, num_steps=steps, solver=solver,
                          shift=shift, t_start=strength, progress=progress,
                          desc=f"sampling {start + n}/{len(prompts)}")
      out.append(z if write_back is None else jnp.where(write_back[:, :, None, None, None], y, z))
    return jnp.concatenate(out)

  def generate(self, prompts: list[str], seed: int | None = None, *, progress: bool = True, **kwargs) -> np.ndarray:
    """uint8 [N, T, H, W, 3]: `sample_latents` (same arguments), decoded sample.batch_size videos at a time."""
    latents = self.sample_latents(prompts, seed, progress=progress, **kwargs)
    b = self.config.sample.batch_size
    return np.concatenate([self.decode(latents[i:i + b]) for i in range(0, len(latents), b)])

  def settings(self, seed=None, **overrides) -> dict:
    s = self.config.sample
    d = dict(steps=s.steps, solver=s.solver, cfg_scale=s.cfg_scale, shift=s.shift, seed=s.seed)
    if s.negative_prompt:
      d["negative_prompt"] = s.negative_prompt
    d.update({k: v for k, v in overrides.items() if v is not None})
    if seed is not None:
      d["seed"] = seed
    return d


class WanGenerator(Generator):
  """Samples with public Wan 2.1 text-to-video weights (config.model='wan2.1', the folder config.weights): UMT5
  contexts zero-padded to text.max_length and attended to whole, guidance against sample.negative_prompt, the
  DiT without frame conditioning, the VAE's latents normalised by the checkpoint's statistics."""

  def __init__(self, config, mesh=None):
    """`mesh`: where the parameters live, each sharded by the logical axis rules; by default config.mesh when it
    splits the model (mesh.fsdp or mesh.tensor > 1), else one device."""
    self.config, folder, found = wan.resolve(config)
    config = self.config
    if mesh is None and config.mesh.fsdp * config.mesh.tensor > 1:
      mesh = mesh_lib.create_mesh(config.mesh)
    weights = wan.load(config, folder, found, mesh)
    self.folder = folder
    self.vae_params, self.params = weights.vae, {"dit": weights.dit, "text_encoder": weights.text_encoder}
    self.latent_mean, self.latent_std = jnp.asarray(weights.latent_mean), jnp.asarray(weights.latent_std)
    self.tokenizer = weights.tokenizer
    self.temporal_compression, self.spatial_compression = build.compression(config)
    dit, text_encoder, length = build.dit(config), build.umt5(config), config.text.max_length
    options = build.compiler_options(build.compute_dtype(config.dit.dtype))
    self._encode_text = jax.jit(lambda p, ids, mask: umt5.wan_context(
        text_encoder.apply({"params": p}, ids, mask), mask, length), compiler_options=options)
    self._denoise = lambda params, *args: dit.apply({"params": params["dit"]}, *args)
    self._setup(config, frame_conditioning=False, compiler_options=options)

  def encode_prompts(self, prompts: list[str]):
    ids, mask = self.tokenizer(prompts)
    return self._encode_text(self.params["text_encoder"], ids, mask)


def slug(text: str, max_len: int = 40) -> str:
  return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:max_len] or "unconditional"


class OutputDirError(ValueError):
  """An output directory holds an index.json that is not vidgen's."""


def read_index(out_dir: str) -> list[dict]:
  """The entries of OUT_DIR/index.json ([] when there is none)."""
  path = os.path.join(out_dir, "index.json")
  if not os.path.exists(path):
    return []
  try:
    with open(path) as f:
      index = json.load(f)
  except (OSError, ValueError) as e:
    raise OutputDirError(f"{path} is not a readable index ({type(e).__name__}): move it away or choose another "
                         "--out_dir") from None
  if not isinstance(index, list):
    raise OutputDirError(f"{path} is not a vidgen index (a JSON list of entries): move it away or choose another "
                         "--out_dir")
  return index


def new_names(out_dir: str, stems: list[str]) -> list[str]:
  """File names (without extension) for new outputs, numbered after the entries already in OUT_DIR/index.json
  and skipping any number whose mp4 or png exists, so no file already there is overwritten."""
  number, names = len(read_index(out_dir)), []
  for stem in stems:
    while any(os.path.exists(os.path.join(out_dir, f"{number:03d}_{stem}{ext}")) for ext in (".mp4", ".png")):
      number += 1
    names.append(f"{number:03d}_{stem}")
    number += 1
  return names


def append_index(out_dir: str, entries: list[dict], fresh: bool = False):
  """Adds entries to OUT_DIR/index.json (replaces it when fresh), written whole or not at all."""
  path = os.path.join(out_dir, "index.json")
  index = ([] if fresh else read_index(out_dir)) + entries
  atomic_files.write_json(path, index, indent=1)


def write_videos(out_dir: str, videos: np.ndarray, prompts: list[str], settings: dict, fps: int,
                 scale: int = 4, fresh: bool = False) -> list[dict]:
  """One mp4 per prompt (and a PNG of a one-frame video), their entries (prompt, file, seed, settings) added to
  OUT/index.json, and a frame grid PNG of these videos. Earlier outputs in OUT stay, with their entries, unless
  `fresh` (a directory vidgen owns, such as WORKDIR/eval/heldout) starts the index anew."""
  os.makedirs(out_dir, exist_ok=True)
  names = ([f"{i:03d}_{slug(p)}" for i, p in enumerate(prompts)] if fresh
           else new_names(out_dir, [slug(p) for p in prompts]))
  index = []
  for i, (video, prompt, name) in enumerate(zip(videos, prompts, names)):
    video_io.write_mp4(os.path.join(out_dir, name + ".mp4"), video, fps=fps, scale=scale)
    index.append({"prompt": prompt, "file": name + ".mp4", "seed": settings["seed"] + i, "settings": settings})
    if len(video) == 1:  # an image
      Image.fromarray(video[0]).save(os.path.join(out_dir, name + ".png"))
      index[-1]["image"] = name + ".png"
  append_index(out_dir, index, fresh=fresh)
  frame_grid(videos[:16]).save(os.path.join(out_dir, "grid.png"))
  return index


def frame_grid(videos: np.ndarray, scale: int = 3) -> Image.Image:
  """Rows are videos, columns are frames: motion reads left to right."""
  n, t, h, w, _ = videos.shape
  pad = 2
  canvas = np.full((n * (h + pad), t * (w + pad), 3), 255, np.uint8)
  for i in range(n):
    for j in range(t):
      canvas[i * (h + pad): i * (h + pad) + h, j * (w + pad): j * (w + pad) + w] = videos[i, j]
  return Image.fromarray(canvas).resize((canvas.shape[1] * scale, canvas.shape[0] * scale), Image.NEAREST)
