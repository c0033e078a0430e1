"""FLOP counts of what a training step runs: the numerator of MFU.

Counts the matmuls and convolutions (2 FLOPs per multiply-add), which is what accelerators' peak numbers
measure and what dominates at any size worth timing; norms, RoPE and activations are left out. The DiT and its
jointly trained text encoder are counted in closed form; a train step costs 3x their forward (the backward pass
computes gradients for activations and for weights), with no credit for recomputation (remat). Frozen models
that the step runs forward only (the VAE encoding known frames) are counted from their traced program
(`traced_matmul_flops`), since a conv VAE's layout has no short closed form.
"""
from __future__ import annotations

import math

import jax

from vidgen.models import build


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


def text_encoder_forward_flops(*, tokens: int, width: int, depth: int, mlp_ratio: float = 4.0) -> float:
  """FLOPs of one forward of the embedded text encoder (models/text.py) over `tokens` tokens."""
  attn = 4 * tokens * width * width + 2 * tokens * tokens * width
  ffn = 2 * tokens * width * int(width * mlp_ratio)
  return 2.0 * depth * (attn + ffn)


def denoiser_forward_flops(config, grid: tuple[int, int, int]) -> float:
  """Text encoder + DiT forward FLOPs of one example of a vidgen config at a latent grid (frames, h, w)."""
  d, text = config.dit, config.text
  context = build.text_tokens(config)
  dit = dit_forward_flops(
      tokens=build.dit_tokens(config, grid), text_len=context, text_dim=text.width, dim=d.dim,
      ffn_dim=d.ffn_dim, depth=d.depth, in_dim=build.dit_in_dim(config), out_dim=config.vae.z_dim,
      patch_volume=math.prod(d.patch_size), freq_dim=d.freq_dim, text_pool=d.text_pool)
  return dit + text_encoder_forward_flops(tokens=context, width=text.width, depth=text.depth)


def train_step_flops(forward_flops_per_example: float, batch_size: int) -> float:
  return 3.0 * forward_flops_per_example * batch_size


def traced_matmul_flops(fn, *args) -> float:
  """Matmul and convolution FLOPs of fn(*args) (arrays or ShapeDtypeStructs), counted from its jaxpr: a conv over
  its whole window at every output (padding included, which XLA's cost analysis leaves out), a scanned body once
  per iteration (XLA counts it once), a cond by its costliest branch."""
  return _jaxpr_flops(jax.make_jaxpr(fn)(*args).jaxpr)


def _jaxpr_flops(jaxpr) -> float:
  total = 0.0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      (contract, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      total += 2.0 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[i] for i in contract)
    elif name == "conv_general_dilated":
      rhs, spec = eqn.invars[1].aval.shape, eqn.params["dimension_numbers"].rhs_spec
      per_output = rhs[spec[1]] * math.prod(rhs[i] for i in spec[2:])  # input features (per group) x window
      total += 2.0 * math.prod(eqn.outvars[0].aval.shape) * per_output
    else:
      inner = [_jaxpr_flops(j) for j in _sub_jaxprs(eqn.params)]
      if inner:
        total += (max(inner) if name == "cond" else sum(inner)) * (eqn.params["length"] if name == "scan" else 1)
  return total


def _sub_jaxprs(params: dict):
  """The jaxprs nested in an equation's parameters (pjit, scan, remat, custom_vjp, cond branches, ...)."""
  for value in params.values():
    for v in value if isinstance(value, (tuple, list)) else (value,):
      if hasattr(v, "eqns"):
        yield v
      elif hasattr(getattr(v, "jaxpr", None), "eqns"):
        yield v.jaxpr
