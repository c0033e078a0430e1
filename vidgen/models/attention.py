"""Multi-head attention with one dispatch point for the attention kernel.

`implementation` picks the kernel: 'xla' (reference, runs everywhere) or 'cudnn' (fused flash
attention through jax.nn.dot_product_attention on NVIDIA GPUs). Context-parallel and TPU splash
kernels plug in here too, so models never call a kernel directly.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vidgen.models import layers
from vidgen.models import rope as rope_lib

IMPLEMENTATIONS = ("xla", "cudnn")


def dot_product_attention(q, k, v, key_mask=None, implementation: str = "xla"):
  """q [B, Lq, N, D], k and v [B, Lk, N, D], key_mask [B, Lk] bool (True = attend) or None."""
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"attention implementation {implementation!r}: allowed {IMPLEMENTATIONS}")
  mask = None if key_mask is None else key_mask[:, None, None, :]
  impl = None if implementation == "xla" else "cudnn"
  if impl is None:
    # The reference path computes softmax in float32 whatever the input dtype.
    dtype = q.dtype
    q, k, v = (a.astype(jnp.float32) for a in (q, k, v))
    return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="xla").astype(dtype)
  return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=impl)


class Attention(nn.Module):
  """Wan-style attention: q, k, v, o projections, optional RMSNorm on q and k over the full width."""
  num_heads: int
  qk_norm: bool = True
  eps: float = 1e-6
  implementation: str = "xla"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, context=None, key_mask=None, rope_freqs=None):
    context = x if context is None else context
    dim = x.shape[-1]
    if dim % self.num_heads:
      raise ValueError(f"width {dim} is not divisible by num_heads={self.num_heads}")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    q = layers.dense(dim, ("embed", "heads"), "q", **kw)(x)
    k = layers.dense(dim, ("embed", "heads"), "k", **kw)(context)
    v = layers.dense(dim, ("embed", "heads"), "v", **kw)(context)
    if self.qk_norm:
      q = layers.RMSNorm(self.eps, name="norm_q", **kw)(q)
      k = layers.RMSNorm(self.eps, name="norm_k", **kw)(k)
    split = lambda a: a.reshape(a.shape[:2] + (self.num_heads, dim // self.num_heads))
    q, k, v = split(q), split(k), split(v)
    if rope_freqs is not None:
      q = rope_lib.apply_rope(q, rope_freqs)
      k = rope_lib.apply_rope(k, rope_freqs)
    q = layers.constrain(q, ("activation_batch", "activation_length", "activation_heads", "activation_kv"))
    out = dot_product_attention(q, k, v, key_mask, self.implementation)
    out = out.reshape(out.shape[:2] + (dim,))
    return layers.dense(dim, ("heads", "embed"), "o", **kw)(out)
