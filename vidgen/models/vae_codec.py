"""The VAE as a codec of uint8 videos: pixels to the VAE's [-1, 1] input and back, and its jitted encode/decode.

Latents here are the VAE's own (not normalised by the latent statistics: the generator and the DiT trainer do
that, each with the statistics of the workdir).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from vidgen.models import build


def to_model_input(video_uint8):
  """uint8 [..., 3] pixels -> float32 in [-1, 1]."""
  return video_uint8.astype(jnp.float32) / 127.5 - 1.0


def to_uint8(video) -> np.ndarray:
  """[-1, 1] pixels -> uint8, rounded and clipped."""
  return np.asarray(jnp.clip(jnp.round((video + 1.0) * 127.5), 0, 255)).astype(np.uint8)


def encode_fn(config):
  """jit (params, uint8 [B, T, H, W, 3]) -> (latent mean, log-variance)."""
  vae = build.vae(config)
  return jax.jit(lambda p, v: vae.apply({"params": p}, to_model_input(v), method=vae.encode))


def decode_fn(config):
  """jit (params, latents [B, T_lat, h, w, z]) -> pixels in [-1, 1]."""
  vae = build.vae(config)
  return jax.jit(lambda p, z: vae.apply({"params": p}, z, method=vae.decode))


def decode_continued_fn(config):
  """jit (params, latents, cache) -> (pixels, cache): latents continuing those the cache was left by."""
  vae = build.vae(config)
  return jax.jit(lambda p, z, cache: vae.apply({"params": p}, z, cache, method=vae.decode_continued))


def reconstruct_fn(config):
  """jit (params, uint8 videos) -> reconstructions in [-1, 1] from the posterior means."""
  vae = build.vae(config)
  return jax.jit(lambda p, v: vae.apply({"params": p}, to_model_input(v), sample_posterior=False)[0])
