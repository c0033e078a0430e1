"""Trains the causal video VAE on pixels, then records the latent statistics that normalise the DiT's latents."""
from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np
import tqdm

from vidgen import atomic_files
from vidgen.data import datasets
from vidgen.models import build
from vidgen.models import vae_codec
from vidgen.parallel import rules
from vidgen.train import loop


def vae_loss(vae, train_config):
  def loss_fn(params, batch, rng):
    x = vae_codec.to_model_input(batch["video"])
    recon, mean, logvar = vae.apply({"params": params}, x, rngs={"sample": rng})
    err = recon.astype(jnp.float32) - x
    l1, mse = jnp.mean(jnp.abs(err)), jnp.mean(jnp.square(err))
    kl = 0.5 * jnp.mean(jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar)
    loss = train_config.l1_weight * l1 + train_config.mse_weight * mse + train_config.kl_weight * kl
    return loss, {"l1": l1, "mse": mse, "kl": kl, "psnr": 10.0 * jnp.log10(4.0 / mse)}
  return loss_fn


def vae_spec(config, data_iter) -> loop.TrainSpec:
  """The VAE's TrainSpec of `config` (its batches {'video': uint8 [B, T, H, W, 3]} from `data_iter`)."""
  t = config.train_vae
  vae = build.vae(config)
  dummy = build.vae_init_input(config)
  return loop.TrainSpec(
      name="vae", init_params=lambda r: vae.init({"params": r, "sample": r}, dummy)["params"],
      loss_fn=vae_loss(vae, t), data_iter=data_iter, steps=t.steps, batch_size=t.batch_size, lr=t.lr,
      warmup_steps=t.warmup_steps, weight_decay=t.weight_decay, grad_clip=t.grad_clip,
      log_every=t.log_every, ckpt_every=t.ckpt_every, rules=rules.VAE_RULES, grad_accum_steps=t.grad_accum_steps,
      compute_dtype=config.vae.dtype)


def train_vae(config, workdir: str, mesh, progress: bool = True):
  data_iter = datasets.train_iterator(config.data, workdir, config.train_vae.batch_size, seed=config.seed)
  spec = vae_spec(config, data_iter)
  state = loop.train(spec, workdir=workdir, config=config, mesh=mesh, seed=config.seed, progress=progress)
  stats = compute_latent_stats(config, workdir, state.params, progress=progress)
  path = os.path.join(workdir, "vae", "latent_stats.json")
  atomic_files.write_json(path, stats)  # never half written: the DiT's latent cache is keyed by it
  return state


def compute_latent_stats(config, workdir: str, params, num: int = 512, progress: bool = True) -> dict:
  """Per-channel mean and std of posterior means over training clips, to normalise DiT latents."""
  enc = vae_codec.encode_fn(config)
  means = [np.asarray(enc(params, v)[0]) for v in tqdm.tqdm(
      datasets.clip_batches(config.data, workdir, num, 32), desc="latent stats", disable=not progress, leave=False)]
  z = np.concatenate([m.reshape(-1, config.vae.z_dim) for m in means])  # batches may differ in shape
  return {"mean": z.mean(0).tolist(), "std": (z.std(0) + 1e-6).tolist()}
