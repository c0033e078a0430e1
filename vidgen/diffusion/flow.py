"""Rectified flow: the straight path x_t = (1 - t) x_0 + t eps and its velocity target eps - x_0.

t = 0 is data, t = 1 is noise. Training draws t from a logit-normal and bends it with `shift`
(SD3 / Wan, a config value: larger for more tokens): shift > 1 spends more steps at high noise, where
layout, shape and motion are decided.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def shift_time(t, shift: float):
  """Maps uniform-ish t to shift * t / (1 + (shift - 1) t); shift = 1 is the identity."""
  return shift * t / (1.0 + (shift - 1.0) * t)


def sample_t(rng, batch: int, mean: float = 0.0, std: float = 1.0, shift: float = 1.0):
  """Logit-normal timesteps in (0, 1), then shifted."""
  t = jax.nn.sigmoid(mean + std * jax.random.normal(rng, (batch,)))
  return shift_time(t, shift)


def noisy_and_target(x0, eps, t):
  """Returns (x_t, v) for x0, eps [B, ...] and t [B]."""
  tb = t.reshape((-1,) + (1,) * (x0.ndim - 1))
  return (1.0 - tb) * x0 + tb * eps, eps - x0


def flow_loss(velocity_fn, x0, rng, *, t_mean=0.0, t_std=1.0, shift=1.0):
  """Mean squared velocity error; velocity_fn(x_t, t) -> v."""
  rng_t, rng_eps = jax.random.split(rng)
  t = sample_t(rng_t, x0.shape[0], t_mean, t_std, shift)
  eps = jax.random.normal(rng_eps, x0.shape, x0.dtype)
  x_t, v = noisy_and_target(x0, eps, t)
  pred = velocity_fn(x_t, t)
  return jnp.mean(jnp.square(pred.astype(jnp.float32) - v))
