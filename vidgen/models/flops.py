"""Analytic FLOP counts of the DiT: the numerator of MFU.

Counts the matmuls (2 FLOPs per multiply-add), which is what accelerators' peak numbers measure and what
dominates at any size worth timing; norms, RoPE and activations are left out. A train step costs 3x the
forward (the backward pass computes gradients for activations and for weights).
"""
from __future__ import annotations

import math

from vidgen.diffusion import conditioning


def dit_forward_flops(*, tokens: int, text_len: int, text_dim: int, dim: int, ffn_dim: int, depth: int,
                      in_dim: int, out_dim: int, patch_volume: int, freq_dim: int = 256,
                      text_pool: bool = False) -> float:
  """FLOPs of one DiT forward for one example with `tokens` spacetime patches and `text_len` text tokens."""
  embed = tokens * in_dim * patch_volume * dim + text_len * (text_dim * dim + dim * dim)
  time = freq_dim * dim + dim * dim + dim * 6 * dim + (text_dim * dim + dim * dim if text_pool else 0)
  self_attn = 4 * tokens * dim * dim + 2 * tokens * tokens * dim  # q, k, v, o; scores and weighted sum
  cross_attn = 2 * tokens * dim * dim + 2 * text_len * dim * dim + 2 * tokens * text_len * dim
  ffn = 2 * tokens * dim * ffn_dim
  head = tokens * dim * patch_volume * out_dim
  return 2.0 * (embed + time + depth * (self_attn + cross_attn + ffn) + head)


def dit_config_flops(config, grid: tuple[int, int, int], text_dim: int | None = None) -> float:
  """`dit_forward_flops` for a vidgen config and a latent grid (frames, height, width)."""
  d = config.dit
  patch = tuple(d.patch_size)
  tokens = math.prod(g // p for g, p in zip(grid, patch))
  return dit_forward_flops(
      tokens=tokens, text_len=config.text.max_length, text_dim=text_dim or config.text.width, dim=d.dim,
      ffn_dim=d.ffn_dim, depth=d.depth, in_dim=conditioning.dit_in_dim(config), out_dim=config.vae.z_dim,
      patch_volume=math.prod(patch), freq_dim=d.freq_dim, text_pool=d.text_pool)


def train_step_flops(forward_flops_per_example: float, batch_size: int) -> float:
  return 3.0 * forward_flops_per_example * batch_size
