"""Trains the text encoder + DiT jointly with rectified flow on (cached) VAE latents.

The VAE is frozen, so the training clips are encoded once into posterior means and standard
deviations (WORKDIR/dit/latent_cache.npz); each step draws a fresh posterior sample, normalises it
with the VAE's latent statistics, blanks the text of a fraction of examples (classifier-free
guidance), draws a known-frame mask per example (dit.frame_conditioning: known frames anywhere,
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

from vidgen import atomic_files
from vidgen.data import buckets as buckets_lib
from vidgen.data import datasets
from vidgen.data import latent_cache
from vidgen.data import pipeline
from vidgen.diffusion import conditioning
from vidgen.diffusion import flow
from vidgen.models import build
from vidgen.models import flops
from vidgen.models import load
from vidgen.models import tokenizer as tokenizer_lib
from vidgen.models import vae_codec
from vidgen.parallel import rules
from vidgen.train import loop


def _cache_key(config, workdir: str) -> str:
  """What a latent cache depends on: the data, the VAE (its config and trained latent statistics), the tokenizer."""
  stats = {k: v.tolist() for k, v in load.latent_stats(workdir).items()}
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
  vae_params, _ = load.vae_params(workdir)
  source = datasets.source(config.data, workdir, "train")
  encode = vae_codec.encode_fn(config)
  tok = build.tokenizer(config)
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
  with atomic_files.partial_path(path, suffix=".partial.npz") as tmp:  # np.savez appends .npz to other names
    np.savez(tmp, key=np.asarray(key), **cache)
  logging.info("Cached %d latents %s at %s", len(cache["mean"]), cache["mean"].shape[1:], path)
  return cache


def media_latent_cache(config, workdir: str, progress: bool = True) -> latent_cache.LatentCache:
  """The bucketed ArrayRecord latent cache of a folder or TFDS dataset, built on first use (same key as the
  Shapes cache: data, VAE and its latent statistics, tokenizer)."""
  directory = os.path.join(workdir, "dit", "latents", latent_cache.directory_name(_cache_key(config, workdir)))
  if latent_cache.is_complete(directory):
    return latent_cache.LatentCache(directory)
  vae_params, _ = load.vae_params(workdir)
  encode = vae_codec.encode_fn(config)
  return latent_cache.build(directory, datasets.media_set(config.data, workdir, progress=False),
                            lambda videos: encode(vae_params, videos), build.tokenizer(config), seed=config.seed,
                            progress=progress)


def _text(caption) -> str:
  return caption.decode("utf-8") if isinstance(caption, bytes) else str(caption)


def drop_words(rng, ids, rate: float):
  """Removes each word of ids [B, L] with probability `rate` and closes the gap (the rest keep their order and
  move left, padding fills the end), so the text encoder learns words that read the same without their usual
  neighbours and at other positions, from training captions alone."""
  keep = (ids != tokenizer_lib.PAD_ID) & ~jax.random.bernoulli(rng, rate, ids.shape)
  positions = jnp.arange(ids.shape[1])
  order = jnp.argsort(jnp.where(keep, positions, ids.shape[1] + positions), axis=1)
  return jnp.take_along_axis(jnp.where(keep, ids, tokenizer_lib.PAD_ID), order, axis=1)


def dit_loss(model, config, latent_mean, latent_std):
  """(params, batch, rng, frozen=VAE params) -> (loss, {}). A batch holds caption ids and either cached
  posterior means and stds or the clips' pixels ('video'), which the frozen VAE encodes here; frame
  conditioning needs the pixels in any case, for y (the encoding of the clip with its unknown frames blanked)."""
  t = config.train_dit
  shift_mean = jnp.asarray(latent_mean)
  inv_std = 1.0 / jnp.asarray(latent_std)
  mask_weights = conditioning.parse_mask_weights(t.frame_masks) if config.dit.frame_conditioning else None
  vae = build.vae(config)
  tc = build.compression(config)[0]

  def loss_fn(params, batch, rng, frozen=None):
    r_post, r_drop, r_flow, r_mask, r_words = jax.random.split(rng, 5)
    encode = lambda video: vae.apply({"params": frozen}, video, method=vae.encode)
    if "mean" in batch:
      mean, std = batch["mean"], batch["std"]
    else:
      mean, logvar = encode(vae_codec.to_model_input(batch["video"]))
      std = jnp.exp(0.5 * logvar)
    z = mean + std * jax.random.normal(r_post, mean.shape)
    z = (z - shift_mean) * inv_std
    drop = jax.random.bernoulli(r_drop, t.text_dropout, (z.shape[0],))
    ids = jnp.where(drop[:, None], tokenizer_lib.PAD_ID, batch["ids"])
    if t.word_dropout > 0:
      ids = drop_words(r_words, ids, t.word_dropout)
    context, mask, pooled = model.apply({"params": params}, ids, method=model.encode_text)
    model_input = lambda x_t: x_t
    if mask_weights is not None:
      frame_mask = conditioning.sample_masks(r_mask, z.shape[0], batch["video"].shape[1], mask_weights)
      y_mean, _ = encode(conditioning.blank_unknown(vae_codec.to_model_input(batch["video"]), frame_mask))
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
  tok = build.tokenizer(config)

  def load_example(bucket, example, step, row):
    ex = data.load(bucket, example, seed=[seed, 2, step, row])
    return {"video": ex["video"], "ids": tok.encode_batch([_text(ex["caption"])])[0][0]}
  return pipeline.bucketed_iterator(data.schedule(batch_size, seed), load_example)


def _latent_grid_of(config, batch) -> tuple[int, int, int]:
  if "mean" in batch:
    return tuple(batch["mean"].shape[1:4])
  return build.latent_grid(config, *batch["video"].shape[1:4])


def step_flops(config, vae_params):
  """batch -> FLOPs of one DiT train step on it: the text encoder and DiT forward and backward, and the frozen
  VAE's forward encodes the step runs (the clip when the batch holds pixels, and the clip with its unknown
  frames blanked for frame conditioning)."""
  vae = build.vae(config)
  structs = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), vae_params)

  def count(batch) -> float:
    denoiser = flops.train_step_flops(flops.denoiser_forward_flops(config, _latent_grid_of(config, batch)),
                                      config.train_dit.batch_size)
    encodes = int("mean" not in batch) + int(config.dit.frame_conditioning)
    if not encodes:
      return denoiser
    video = jax.ShapeDtypeStruct(batch["video"].shape, jnp.float32)
    encode = flops.traced_matmul_flops(lambda p, v: vae.apply({"params": p}, v, method=vae.encode), structs, video)
    return denoiser + encodes * encode
  return count


def dit_spec(config, data_iter, vae_params, stats) -> loop.TrainSpec:
  """The DiT's TrainSpec of `config`: the frozen VAE's params (arrays, or ShapeDtypeStructs to compile only)
  and its latent statistics {'mean', 'std'} [z_dim]; batches from `data_iter` as train_dit builds them."""
  t = config.train_dit
  model = build.denoiser(config)
  init_inputs = build.denoiser_init_inputs(config)
  return loop.TrainSpec(
      name="dit", init_params=lambda r: model.init(r, *init_inputs)["params"],
      loss_fn=dit_loss(model, config, stats["mean"], stats["std"]), data_iter=data_iter, steps=t.steps,
      batch_size=t.batch_size, lr=t.lr, warmup_steps=t.warmup_steps, weight_decay=t.weight_decay,
      grad_clip=t.grad_clip, optimizer=t.optimizer, muon_lr=t.muon_lr,
      muon_modules=tuple(t.muon_modules), log_every=t.log_every,
      ckpt_every=t.ckpt_every, ema_decay=t.ema_decay,
      rules=rules.DIT_RULES, grad_accum_steps=t.grad_accum_steps, compute_dtype=config.dit.dtype,
      analytic_flops=step_flops(config, vae_params), frozen=vae_params if config.dit.frame_conditioning else None)


def train_dit(config, workdir: str, mesh, progress: bool = True):
  t = config.train_dit
  vae_params, stats = load.vae_params(workdir)
  frame_conditioning = config.dit.frame_conditioning
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
  spec = dit_spec(config, data_iter, vae_params, stats)
  return loop.train(spec, workdir=workdir, config=config, mesh=mesh, seed=config.seed + 1, progress=progress)
