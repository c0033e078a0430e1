"""Trains the causal video VAE on pixels, then measures it: latent statistics and held-out PSNR."""
from __future__ import annotations

import json
import os

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from vidgen.data import datasets
from vidgen.evaluate import video_metrics
from vidgen.models import vae as vae_lib
from vidgen.parallel import rules
from vidgen.train import checkpoint as ckpt_lib
from vidgen.train import loop


def vae_module(config) -> vae_lib.VideoVAE:
  v = config.vae
  return vae_lib.VideoVAE(dim=v.dim, z_dim=v.z_dim, dim_mult=tuple(v.dim_mult), num_res_blocks=v.num_res_blocks,
                          attn_scales=tuple(v.attn_scales), temporal_downsample=tuple(v.temporal_downsample),
                          spatial_downsample=tuple(v.spatial_downsample), patch_size=v.patch_size,
                          temporal_patch_size=v.temporal_patch_size, level_shortcuts=v.level_shortcuts,
                          temporal_kernel=v.temporal_kernel, dropout=v.dropout, dtype=jnp.dtype(v.dtype))


def to_model_input(video_uint8):
  return video_uint8.astype(jnp.float32) / 127.5 - 1.0


def to_uint8(video):
  return np.asarray(jnp.clip(jnp.round((video + 1.0) * 127.5), 0, 255)).astype(np.uint8)


def vae_loss(vae, train_config):
  def loss_fn(params, batch, rng):
    x = to_model_input(batch["video"])
    recon, mean, logvar = vae.apply({"params": params}, x, rngs={"sample": rng})
    err = recon.astype(jnp.float32) - x
    l1, mse = jnp.mean(jnp.abs(err)), jnp.mean(jnp.square(err))
    kl = 0.5 * jnp.mean(jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar)
    loss = train_config.l1_weight * l1 + train_config.mse_weight * mse + train_config.kl_weight * kl
    return loss, {"l1": l1, "mse": mse, "kl": kl, "psnr": 10.0 * jnp.log10(4.0 / mse)}
  return loss_fn


def train_vae(config, workdir: str, mesh, progress: bool = True):
  t = config.train_vae
  vae = vae_module(config)
  d = config.data
  dummy = jnp.zeros((1, d.num_frames, d.height, d.width, 3), jnp.float32)
  data_iter = datasets.train_iterator(d, workdir, t.batch_size, seed=config.seed)
  spec = loop.TrainSpec(
      name="vae", init_params=lambda r: vae.init({"params": r, "sample": r}, dummy)["params"],
      loss_fn=vae_loss(vae, t), data_iter=data_iter, steps=t.steps, batch_size=t.batch_size, lr=t.lr,
      warmup_steps=t.warmup_steps, weight_decay=t.weight_decay, grad_clip=t.grad_clip,
      log_every=t.log_every, ckpt_every=t.ckpt_every, rules=rules.VAE_RULES, grad_accum_steps=t.grad_accum_steps,
      compute_dtype=config.vae.dtype)
  state = loop.train(spec, workdir=workdir, config=config, mesh=mesh, seed=config.seed, progress=progress)
  stats = latent_stats(config, workdir, state.params, progress=progress)
  with open(os.path.join(workdir, "vae", "latent_stats.json"), "w") as f:
    json.dump(stats, f)
  return state


def encode_fn(config):
  vae = vae_module(config)
  return jax.jit(lambda p, v: vae.apply({"params": p}, to_model_input(v), method=vae.encode))


def decode_fn(config):
  vae = vae_module(config)
  return jax.jit(lambda p, z: vae.apply({"params": p}, z, method=vae.decode))


def decode_continued_fn(config):
  vae = vae_module(config)
  return jax.jit(lambda p, z, cache: vae.apply({"params": p}, z, cache, method=vae.decode_continued))


def latent_stats(config, workdir: str, params, num: int = 512, progress: bool = True) -> dict:
  """Per-channel mean and std of posterior means over training clips, to normalise DiT latents."""
  enc = encode_fn(config)
  means = [np.asarray(enc(params, v)[0]) for v in tqdm.tqdm(
      datasets.clip_batches(config.data, workdir, num, 32), desc="latent stats", disable=not progress, leave=False)]
  z = np.concatenate([m.reshape(-1, config.vae.z_dim) for m in means])  # batches may differ in shape
  return {"mean": z.mean(0).tolist(), "std": (z.std(0) + 1e-6).tolist()}


def load_vae_params(workdir: str):
  """EMA-free VAE params from the newest checkpoint in WORKDIR/vae, plus the latent statistics."""
  params = restore_params(os.path.join(workdir, "vae", "checkpoints"), "params")
  with open(os.path.join(workdir, "vae", "latent_stats.json")) as f:
    stats = json.load(f)
  return params, {k: np.asarray(v, np.float32) for k, v in stats.items()}


def restore_params(checkpoint_dir: str, field: str):
  """One field of the TrainState in the newest intact checkpoint, as plain arrays (no target needed)."""
  with ckpt_lib.Checkpointer(checkpoint_dir, read_only=True) as checkpointer:
    state = checkpointer.restore()
  return state[field] if isinstance(state, dict) else getattr(state, field)


def evaluate_reconstruction(config, workdir: str, params, split: str = "heldout", progress: bool = True) -> dict:
  """PSNR (dB) of VAE reconstructions of held-out clips (training clips for media, which have no held-out
  split), and the flicker of real vs reconstructed."""
  split = split if config.data.name == "shapes" else "train"
  vae = vae_module(config)
  recon_fn = jax.jit(lambda p, v: vae.apply({"params": p}, to_model_input(v), sample_posterior=False)[0])
  psnrs, flicker_real, flicker_recon = [], [], []
  batches = datasets.clip_batches(config.data, workdir, config.eval.num_recon, 16, split=split)
  for videos in tqdm.tqdm(batches, desc="VAE reconstruction", disable=not progress, leave=False):
    recon = to_uint8(recon_fn(params, videos))
    psnrs.extend(video_metrics.psnr(a, b) for a, b in zip(videos, recon))
    flicker_real.extend(video_metrics.background_flicker(v) for v in videos)
    flicker_recon.extend(video_metrics.background_flicker(v) for v in recon)
  num = len(psnrs)
  logging.info("VAE reconstruction PSNR on %d %s clips: %.2f dB", num, split, np.mean(psnrs))
  return {"psnr_db": float(np.mean(psnrs)), "num_clips": num,
          "flicker_real": float(np.mean(flicker_real)), "flicker_recon": float(np.mean(flicker_recon))}
