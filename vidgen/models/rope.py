"""3D rotary position embedding over (frame, row, column), split as in Wan 2.1.

A head of width D holds D/2 rotating pairs: the first D/2 - 2*(D/2//3) pairs rotate with the frame
index, the next D/2//3 with the row and the last D/2//3 with the column. Positions are grid indices, so one
model serves any duration, aspect ratio and resolution. `sincos_embedding` is the absolute counterpart (DiT's
and Latte's fixed sinusoidal position embedding, split over the three axes the same way), for models that must
know where in the frame a token is, not only how far apart two tokens are. `sequence_freqs` is plain 1D RoPE
over a token sequence, for the embedded text encoder.
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


def _angles(grid: tuple[int, int, int], head_dim: int, theta: float) -> np.ndarray:
  f, h, w = grid
  pt, ph, pw = axis_pairs(head_dim)
  at = _axis_angles(np.arange(f), pt, theta)
  ah = _axis_angles(np.arange(h), ph, theta)
  aw = _axis_angles(np.arange(w), pw, theta)
  angles = np.concatenate([
      np.broadcast_to(at[:, None, None], (f, h, w, pt)),
      np.broadcast_to(ah[None, :, None], (f, h, w, ph)),
      np.broadcast_to(aw[None, None, :], (f, h, w, pw))], axis=-1)
  return angles.reshape(f * h * w, head_dim // 2)


def sincos_embedding(grid: tuple[int, int, int], dim: int, theta: float = 10000.0) -> jnp.ndarray:
  """A fixed absolute position embedding [F*H*W, dim] (row-major grid order): cat(cos, sin) of the angles of
  each axis, the axes split as the rotary pairs of a head of width `dim`."""
  angles = _angles(grid, dim, theta)
  return jnp.asarray(np.concatenate([np.cos(angles), np.sin(angles)], axis=-1), jnp.float32)


def rope_freqs(grid: tuple[int, int, int], head_dim: int, theta: float = 10000.0, cos_sin: bool = False):
  """Angles [F*H*W, head_dim/2] for a token grid (F, H, W) in row-major order; with `cos_sin` their cosines
  and sines instead, a pair of [F*H*W, head_dim/2] tables computed in float64 (as Wan's reference does: the
  float32 angles of a large grid are off by ~1e-6) then rounded to float32. apply_rope takes either."""
  angles = _angles(grid, head_dim, theta)
  if cos_sin:
    return jnp.asarray(np.cos(angles), jnp.float32), jnp.asarray(np.sin(angles), jnp.float32)
  return jnp.asarray(angles, jnp.float32)


def sequence_freqs(length: int, head_dim: int, theta: float = 10000.0) -> jnp.ndarray:
  """Angles [length, head_dim/2] of 1D RoPE over a token sequence (every pair rotates with the index)."""
  if head_dim % 2:
    raise ValueError(f"head_dim={head_dim}: RoPE needs an even head width")
  return jnp.asarray(_axis_angles(np.arange(length), head_dim // 2, theta), jnp.float32)


def apply_rope(x: jnp.ndarray, angles) -> jnp.ndarray:
  """Rotates adjacent pairs (x[2i], x[2i+1]) of x [B, L, N, D] by angles [L, D/2] (or a (cos, sin) pair of
  such tables, see rope_freqs)."""
  dtype = x.dtype
  x = x.astype(jnp.float32).reshape(x.shape[:-1] + (-1, 2))
  cos, sin = angles if isinstance(angles, tuple) else (jnp.cos(angles), jnp.sin(angles))
  cos, sin = cos[None, :, None, :], sin[None, :, None, :]
  x0, x1 = x[..., 0], x[..., 1]
  out = jnp.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], axis=-1)
  return out.reshape(out.shape[:-2] + (-1,)).astype(dtype)
