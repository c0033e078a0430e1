"""Trains the text encoder + DiT jointly with rectified flow on (cached) VAE latents.

The VAE is frozen, so the training clips are encoded once into posterior means and standard
deviations (WORKDIR/dit/latent_cache.npz); each step draws a fresh posterior sample, normalises it
with the VAE's latent statistics, blanks the text of a fraction of examples (classifier-free
guidance), draws a frame-conditioning task per example (dit.frame_conditioning: known frames anywhere,
vidgen/diffusion/conditioning.py; the VAE encodes the clip with its unknown frames blanked in the step)
and regresses the velocity. Media data with frame conditioning trains from pixels, encoding in the step.
"""
from __future__ import annotations

import json
import os

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from vidgen import config_validation
from vidgen.data import buckets as buckets_lib
from vidgen.data import datasets
from vidgen.data import latent_cache
from vidgen.data import pipeline
from vidgen.diffusion import conditioning
from vidgen.diffusion import flow
from vidgen.models import flops
from vidgen.models import t2v
from vidgen.models import tokenizer as tokenizer_lib
from vidgen.parallel import rules
from vidgen.train import loop
from vidgen.train import vae_trainer


def tokenizer(config) -> tokenizer_lib.HashedWordTokenizer:
  return tokenizer_lib.HashedWordTokenizer(config.text.vocab_size, config.text.max_length)


def latent_grid(config) -> tuple[int, int, int]:
  d = config.data
  tc, sc = config_validation.vae_compression(config.vae)
  return (d.num_frames - 1) // tc + 1, d.height // sc, d.width // sc


def t2v_module(config) -> t2v.TextToVideo:
  text, dit = config.text, config.dit
  return t2v.TextToVideo(
      dtype=jnp.dtype(dit.dtype),
      text_kwargs=dict(vocab_size=text.vocab_size, max_length=text.max_length, width=text.width,
                       depth=text.depth, num_heads=text.num_heads, implementation=dit.attention),
      dit_kwargs=dict(patch_size=tuple(dit.patch_size), in_dim=conditioning.dit_in_dim(config),
                      out_dim=config.vae.z_dim,
                      dim=dit.dim, ffn_dim=dit.ffn_dim, freq_dim=dit.freq_dim, num_heads=dit.num_heads,
                      depth=dit.depth, qk_norm=dit.qk_norm, cross_attn_norm=dit.cross_attn_norm,
                      text_pool=dit.text_pool, remat=dit.remat, scan_blocks=dit.get("scan_blocks", False),
                      implementation=dit.attention))


def _cache_key(config, workdir: str) -> str:
  """What a latent cache depends on: the data, the VAE (its config and trained latent statistics), the tokenizer."""
  with open(os.path.join(workdir, "vae", "latent_stats.json")) as f:
    stats = json.load(f)
  return json.dumps({"data": config.data.to_dict(), "vae": config.vae.to_dict(), "latent_stats": stats,
                     "tokenizer": [config.text.vocab_size, config.text.max_length]}, sort_keys=True)


def build_latent_cache(config, workdir: str, progress: bool = True) -> dict:
  """Posterior mean/std of every training clip plus its caption ids; reused across restarts while the data,
  VAE and tokenizer it was built from are unchanged, rebuilt (with a warning) when any of them changed."""
  path = os.path.join(workdir, "dit", "latent_cache.npz")
  key = _cache_key(config, workdir)
  if os.path.exists(path):
    with np.load(path) as f:
      cached = dict(f)
    if str(cached.pop("key", "")) == key:
      return cached
    logging.warning("%s was built from another data, VAE or tokenizer config (or another VAE training run): "
                    "rebuilding it", path)
  vae_params, _ = vae_trainer.load_vae_params(workdir)
  source = datasets.source(config.data, workdir, "train")
  encode = vae_trainer.encode_fn(config)
  tok = tokenizer(config)
  means, stds, ids = [], [], []
  batch = 32
  for start in tqdm.trange(0, len(source), batch, desc="caching latents", disable=not progress, leave=False):
    items = [source[i] for i in range(start, min(len(source), start + batch))]
    mean, logvar = encode(vae_params, np.stack([it["video"] for it in items]))
    means.append(np.asarray(mean, np.float32))
    stds.append(np.asarray(jnp.exp(0.5 * logvar), np.float32))
    ids.append(tok.encode_batch([_text(it["caption"]) for it in items])[0])
  cache = {"mean": np.concatenate(means), "std": np.concatenate(stds), "ids": np.concatenate(ids)}
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + ".partial.npz"
  np.savez(tmp, key=np.asarray(key), **cache)
  os.replace(tmp, path)
  logging.info("Cached %d latents %s at %s", len(cache["mean"]), cache["mean"].shape[1:], path)
  return cache


def media_latent_cache(config, workdir: str, progress: bool = True) -> latent_cache.LatentCache:
  """The bucketed ArrayRecord latent cache of a folder or TFDS dataset, built on first use (same key as the
  Shapes cache: data, VAE and its latent statistics, tokenizer)."""
  directory = os.path.join(workdir, "dit", "latents", latent_cache.directory_name(_cache_key(config, workdir)))
  if latent_cache.is_complete(directory):
    return latent_cache.LatentCache(directory)
  vae_params, _ = vae_trainer.load_vae_params(workdir)
  encode = vae_trainer.encode_fn(config)
  return latent_cache.build(directory, datasets.media_set(config.data, workdir, progress=False),
                            lambda videos: encode(vae_params, videos), tokenizer(config), seed=config.seed,
                            progress=progress)


def _text(caption) -> str:
  return caption.decode("utf-8") if isinstance(caption, bytes) else str(caption)


def dit_loss(model, config, latent_mean, latent_std):
  """(params, batch, rng, frozen=VAE params) -> (loss, {}). A batch holds caption ids and either cached
  posterior means and stds or the clips' pixels ('video'), which the frozen VAE encodes here; frame
  conditioning needs the pixels in any case, for y (the encoding of the clip with its unknown frames blanked)."""
  t = config.train_dit
  shift_mean = jnp.asarray(latent_mean)
  inv_std = 1.0 / jnp.asarray(latent_std)
  frame_tasks = (conditioning.parse_task_weights(t.frame_tasks) if config.dit.get("frame_conditioning", False)
                 else None)
  vae = vae_trainer.vae_module(config)
  tc = config_validation.vae_compression(config.vae)[0]

  def loss_fn(params, batch, rng, frozen=None):
    r_post, r_drop, r_flow, r_task = jax.random.split(rng, 4)
    encode = lambda video: vae.apply({"params": frozen}, video, method=vae.encode)
    if "mean" in batch:
      mean, std = batch["mean"], batch["std"]
    else:
      mean, logvar = encode(vae_trainer.to_model_input(batch["video"]))
      std = jnp.exp(0.5 * logvar)
    z = mean + std * jax.random.normal(r_post, mean.shape)
    z = (z - shift_mean) * inv_std
    drop = jax.random.bernoulli(r_drop, t.text_dropout, (z.shape[0],))
    ids = jnp.where(drop[:, None], tokenizer_lib.PAD_ID, batch["ids"])
    context, mask, pooled = model.apply({"params": params}, ids, method=model.encode_text)
    model_input = lambda x_t: x_t
    if frame_tasks is not None:
      frame_mask = conditioning.sample_masks(r_task, z.shape[0], batch["video"].shape[1], frame_tasks)
      y_mean, _ = encode(conditioning.blank_unknown(vae_trainer.to_model_input(batch["video"]), frame_mask))
      y = (y_mean - shift_mean) * inv_std
      model_input = lambda x_t: conditioning.model_input(x_t, y, conditioning.latent_mask(frame_mask, tc))
    velocity = lambda x_t, tt: model.apply({"params": params}, model_input(x_t), tt, context, mask, pooled,
                                           method=model.velocity)
    loss = flow.flow_loss(velocity, z, r_flow, t_mean=t.t_mean, t_std=t.t_std, shift=t.shift)
    return loss, {}
  return loss_fn


class _WithVideos:
  """The Shapes latent cache with each clip's pixels beside it (frame conditioning encodes them in the step)."""

  def __init__(self, cache: dict, videos):
    self._cache, self._videos = pipeline.ArraySource(cache), videos

  def __len__(self):
    return len(self._cache)

  def __getitem__(self, index):
    return dict(self._cache[index], video=self._videos[index]["video"])


def media_pixel_iterator(config, workdir: str, batch_size: int, seed: int):
  """Bucketed batches of training clips and their caption ids, for frame-conditioned training on media."""
  data = datasets.media_set(config.data, workdir, progress=False)
  tok = tokenizer(config)

  def load(bucket, example, step, row):
    ex = data.load(bucket, example, seed=[seed, 2, step, row])
    return {"video": ex["video"], "ids": tok.encode_batch([_text(ex["caption"])])[0][0]}
  return pipeline.bucketed_iterator(data.schedule(batch_size, seed), load)


def _latent_grid_of(config, batch) -> tuple[int, int, int]:
  if "mean" in batch:
    return tuple(batch["mean"].shape[1:4])
  tc, sc = config_validation.vae_compression(config.vae)
  _, f, h, w, _ = batch["video"].shape
  return (f - 1) // tc + 1, h // sc, w // sc


def train_dit(config, workdir: str, mesh, progress: bool = True):
  t = config.train_dit
  vae_params, stats = vae_trainer.load_vae_params(workdir)
  model = t2v_module(config)
  grid = latent_grid(config)
  dummy_x = jnp.zeros((1, *grid, conditioning.dit_in_dim(config)), jnp.float32)
  dummy_ids = jnp.zeros((1, config.text.max_length), jnp.int32)
  frame_conditioning = config.dit.get("frame_conditioning", False)
  if config.data.name == "shapes":
    cache = build_latent_cache(config, workdir, progress=progress)
    source = (_WithVideos(cache, datasets.source(config.data, workdir, "train")) if frame_conditioning
              else pipeline.ArraySource(cache))
    data_iter = pipeline.batched_iterator(source, t.batch_size, seed=config.seed + 1)
  elif frame_conditioning:  # media: y needs the pixels, so the step encodes them (no latent cache)
    data_iter = media_pixel_iterator(config, workdir, t.batch_size, config.seed + 1)
  else:  # media: latents cached per bucket, batches one bucket each
    cache = media_latent_cache(config, workdir, progress=progress)
    schedule = buckets_lib.Schedule(cache.members, [b.weight for b in datasets.buckets(config.data)],
                                    t.batch_size, config.seed + 1)
    data_iter = pipeline.bucketed_iterator(schedule, lambda bucket, example, step, row: cache[example])
  spec = loop.TrainSpec(
      name="dit", init_params=lambda r: model.init(r, dummy_x, jnp.zeros((1,)), dummy_ids)["params"],
      loss_fn=dit_loss(model, config, stats["mean"], stats["std"]), data_iter=data_iter, steps=t.steps,
      batch_size=t.batch_size, lr=t.lr, warmup_steps=t.warmup_steps, weight_decay=t.weight_decay,
      grad_clip=t.grad_clip, log_every=t.log_every, ckpt_every=t.ckpt_every, ema_decay=t.ema_decay,
      rules=rules.DIT_RULES, grad_accum_steps=t.grad_accum_steps, compute_dtype=config.dit.dtype,
      analytic_flops=lambda batch: flops.train_step_flops(
          flops.dit_config_flops(config, _latent_grid_of(config, batch)), t.batch_size),
      frozen=vae_params if frame_conditioning else None)
  return loop.train(spec, workdir=workdir, config=config, mesh=mesh, seed=config.seed + 1, progress=progress)
