"""Multi-head attention with one dispatch point for the attention kernel.

`implementation` picks the kernel, so models never call one directly:
  'xla'      reference, float32 softmax, runs everywhere;
  'cudnn'    fused flash attention through jax.nn.dot_product_attention on NVIDIA GPUs;
  'splash'   TPU Pallas splash attention (interpreted elsewhere, slowly), see splash_attention.py;
  'context'  context parallel over the mesh axis "context" (ring self-attention), see
             vidgen/parallel/context_attention.py; without a mesh (jax.set_mesh) or with context size 1
             it is the 'xla' path.
Under a mesh, 'splash' and 'context' run per device in shard_map: batch over (data, fsdp), heads over tensor.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vidgen.models import layers
from vidgen.models import rope as rope_lib
from vidgen.models import splash_attention
from vidgen.parallel import context_attention
from vidgen.parallel import mesh as mesh_lib

IMPLEMENTATIONS = ("xla", "cudnn", "splash", "context")


def xla_attention(q, k, v, key_mask=None):
  """The reference: softmax in float32 whatever the input dtype."""
  mask = None if key_mask is None else key_mask[:, None, None, :]
  dtype = q.dtype
  q, k, v = (a.astype(jnp.float32) for a in (q, k, v))
  return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="xla").astype(dtype)


def dot_product_attention(q, k, v, key_mask=None, implementation: str = "xla"):
  """q [B, Lq, N, D], k and v [B, Lk, N, D], key_mask [B, Lk] bool (True = attend) or None."""
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"attention implementation {implementation!r}: allowed {IMPLEMENTATIONS}")
  if implementation == "cudnn":
    mask = None if key_mask is None else key_mask[:, None, None, :]
    return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="cudnn")
  mesh = mesh_lib.current_mesh()
  if implementation == "splash":
    if mesh is None:
      return splash_attention.splash_attention(q, k, v, key_mask)
    return context_attention.shard_attention(splash_attention.splash_attention, mesh, q, k, v, key_mask,
                                             check_vma=False)
  if implementation == "context" and mesh is not None and mesh.shape.get(context_attention.AXIS, 1) > 1:
    return context_attention.context_attention(q, k, v, key_mask, mesh, xla_attention)
  return xla_attention(q, k, v, key_mask)


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
