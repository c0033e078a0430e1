"""3D rotary position embedding over (frame, row, column), split as in Wan 2.1.

A head of width D holds D/2 rotating pairs: the first D/2 - 2*(D/2//3) pairs rotate with the frame
index, the next D/2//3 with the row and the last D/2//3 with the column. Positions are grid indices, so one
model serves any duration, aspect ratio and resolution.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def axis_pairs(head_dim: int) -> tuple[int, int, int]:
  if head_dim % 2:
    raise ValueError(f"head_dim={head_dim}: 3D RoPE needs an even head width")
  c = head_dim // 2
  return c - 2 * (c // 3), c // 3, c // 3


def _axis_angles(positions: np.ndarray, pairs: int, theta: float) -> np.ndarray:
  # Wan's rope_params(dim=2*pairs): inverse frequencies theta^(-2i/dim) for i < pairs.
  inv = 1.0 / np.power(theta, np.arange(0, 2 * pairs, 2, dtype=np.float64) / (2 * pairs))
  return positions[:, None].astype(np.float64) * inv[None]


def rope_freqs(grid: tuple[int, int, int], head_dim: int, theta: float = 10000.0) -> jnp.ndarray:
  """Angles [F*H*W, head_dim/2] for a token grid (F, H, W) in row-major order."""
  f, h, w = grid
  pt, ph, pw = axis_pairs(head_dim)
  at = _axis_angles(np.arange(f), pt, theta)
  ah = _axis_angles(np.arange(h), ph, theta)
  aw = _axis_angles(np.arange(w), pw, theta)
  angles = np.concatenate([
      np.broadcast_to(at[:, None, None], (f, h, w, pt)),
      np.broadcast_to(ah[None, :, None], (f, h, w, ph)),
      np.broadcast_to(aw[None, None, :], (f, h, w, pw))], axis=-1)
  return jnp.asarray(angles.reshape(f * h * w, head_dim // 2), jnp.float32)


def apply_rope(x: jnp.ndarray, angles: jnp.ndarray) -> jnp.ndarray:
  """Rotates adjacent pairs (x[2i], x[2i+1]) of x [B, L, N, D] by angles [L, D/2]."""
  dtype = x.dtype
  x = x.astype(jnp.float32).reshape(x.shape[:-1] + (-1, 2))
  cos = jnp.cos(angles)[None, :, None, :]
  sin = jnp.sin(angles)[None, :, None, :]
  x0, x1 = x[..., 0], x[..., 1]
  out = jnp.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], axis=-1)
  return out.reshape(out.shape[:-2] + (-1,)).astype(dtype)
