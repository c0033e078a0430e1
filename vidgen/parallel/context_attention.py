"""Context-parallel attention: the token sequence stays split over the mesh axis "context".

Self-attention runs as ring attention: each device keeps its query shard while the key/value shards travel
round the ring (jax.lax.ppermute), folded in with a float32 online softmax; the backward pass sends the
key/value gradients round the same ring. Cross-attention to short keys (text) replicates keys and values
over "context", so each device runs plain attention for its query shard. Batch is split over
("data", "fsdp") and heads over "tensor", as in vidgen/parallel/rules.py.
"""
from __future__ import annotations

import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

AXIS = "context"
BATCH_AXES = ("data", "fsdp")
HEAD_AXIS = "tensor"


def _fit(mesh, size: int, axes: tuple[str, ...]):
  """The mesh axes among `axes` to split a dimension of `size` over, or None where they do not divide it."""
  axes = tuple(a for a in axes if a in mesh.axis_names)
  if not axes or size % math.prod(mesh.shape[a] for a in axes):
    return None
  return axes if len(axes) > 1 else axes[0]


def shard_attention(fn: Callable, mesh, q, k, v, key_mask=None, *, split_queries: bool = True,
                    split_keys: bool = False, check_vma: bool = True):
  """Runs fn(q, k, v, key_mask) per device under shard_map; q, k, v [B, L, N, D], key_mask [B, Lk] or None.

  Batch goes over ("data", "fsdp"), heads over "tensor", queries (and keys when `split_keys`) over "context".
  A dimension those axes do not divide is replicated instead: correct, only less parallel. Pallas kernels
  need `check_vma=False` (their outputs carry no varying-axes type).
  """
  b, lq, n, _ = q.shape
  batch, heads = _fit(mesh, b, BATCH_AXES), _fit(mesh, n, (HEAD_AXIS,))
  q_len = _fit(mesh, lq, (AXIS,)) if split_queries else None
  kv_len = _fit(mesh, k.shape[1], (AXIS,)) if split_keys else None
  q_spec, kv_spec = P(batch, q_len, heads, None), P(batch, kv_len, heads, None)
  if key_mask is None:
    return jax.shard_map(lambda q, k, v: fn(q, k, v, None), mesh=mesh, in_specs=(q_spec, kv_spec, kv_spec),
                         out_specs=q_spec, check_vma=check_vma)(q, k, v)
  return jax.shard_map(fn, mesh=mesh, in_specs=(q_spec, kv_spec, kv_spec, P(batch, kv_len)),
                       out_specs=q_spec, check_vma=check_vma)(q, k, v, key_mask)


def context_attention(q, k, v, key_mask, mesh, local_attention: Callable):
  """Attention with queries split over "context"; `local_attention` is the reference for replicated keys.

  Ring attention when keys are laid out like queries (same length, no mask: self-attention) and "context"
  divides that length; otherwise keys and values are replicated over "context".
  """
  ring = key_mask is None and k.shape[1] == q.shape[1] and _fit(mesh, q.shape[1], (AXIS,)) is not None
  if ring:
    return shard_attention(lambda q, k, v, _: ring_attention(q, k, v, AXIS), mesh, q, k, v,
                           split_keys=True)
  return shard_attention(local_attention, mesh, q, k, v, key_mask)


def _scores(q_scaled, k):
  """[b, q, n, d] x [b, k, n, d] -> [b, n, q, k] in float32."""
  return jnp.einsum("bqnd,bknd->bnqk", q_scaled, k.astype(jnp.float32))


def _heads_last(x):
  """[b, n, q] -> [b, q, n, 1], to scale an output [b, q, n, d]."""
  return jnp.transpose(x, (0, 2, 1))[..., None]


def _ring(axis: str):
  size = jax.lax.axis_size(axis)
  return size, [(i, (i + 1) % size) for i in range(size)]


def _forward(q, k, v, axis):
  size, perm = _ring(axis)
  qs = q.astype(jnp.float32) * q.shape[-1] ** -0.5

  def fold(carry, k, v):
    """Folds one key/value shard into the running (output, row max, row sum)."""
    s = _scores(qs, k)
    m_blk = jnp.max(s, axis=-1)
    if carry is None:
      p = jnp.exp(s - m_blk[..., None])
      return jnp.einsum("bnqk,bknd->bqnd", p, v.astype(jnp.float32)), m_blk, jnp.sum(p, axis=-1)
    o, m, l = carry
    m_new = jnp.maximum(m, m_blk)
    p = jnp.exp(s - m_new[..., None])
    corr = jnp.exp(m - m_new)
    o = o * _heads_last(corr) + jnp.einsum("bnqk,bknd->bqnd", p, v.astype(jnp.float32))
    return o, m_new, l * corr + jnp.sum(p, axis=-1)

  def step(state, _):
    carry, k, v = state
    k, v = jax.lax.ppermute(k, axis, perm), jax.lax.ppermute(v, axis, perm)
    return (fold(carry, k, v), k, v), None

  # The first shard is the local one; size - 1 hops bring in the rest.
  (carry, _, _), _ = jax.lax.scan(step, (fold(None, k, v), k, v), None, length=size - 1)
  o, m, l = carry
  out = (o / _heads_last(l)).astype(q.dtype)
  return out, m + jnp.log(l)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def ring_attention(q, k, v, axis: str = AXIS):
  """Per-device ring self-attention inside shard_map: q, k, v [b, l, n, d] are this device's shards."""
  return _forward(q, k, v, axis)[0]


def _ring_fwd(q, k, v, axis):
  out, lse = _forward(q, k, v, axis)
  return out, (q, k, v, out, lse)


def _ring_bwd(axis, res, d_out):
  q, k, v, out, lse = res
  size, perm = _ring(axis)
  scale = q.shape[-1] ** -0.5
  qs = q.astype(jnp.float32) * scale
  do = d_out.astype(jnp.float32)
  delta = jnp.transpose(jnp.sum(do * out.astype(jnp.float32), axis=-1), (0, 2, 1))  # [b, n, q]

  def grads(k, v):
    """This shard's (dq, dk, dv) from the saved log-sum-exp: no second softmax pass."""
    p = jnp.exp(_scores(qs, k) - lse[..., None])
    dp = jnp.einsum("bqnd,bknd->bnqk", do, v.astype(jnp.float32))
    ds = p * (dp - delta[..., None])
    dq = jnp.einsum("bnqk,bknd->bqnd", ds, k.astype(jnp.float32)) * scale
    return dq, jnp.einsum("bnqk,bqnd->bknd", ds, qs), jnp.einsum("bnqk,bqnd->bknd", p, do)

  def step(state, _):
    dq, dk, dv, k, v = state
    # Key/value gradients travel with their shard, so each device adds its queries' share.
    k, v, dk, dv = (jax.lax.ppermute(a, axis, perm) for a in (k, v, dk, dv))
    dq_blk, dk_blk, dv_blk = grads(k, v)
    return (dq + dq_blk, dk + dk_blk, dv + dv_blk, k, v), None

  (dq, dk, dv, _, _), _ = jax.lax.scan(step, (*grads(k, v), k, v), None, length=size - 1)
  # After size - 1 hops each shard's gradients sit one device short of home.
  dk, dv = jax.lax.ppermute(dk, axis, perm), jax.lax.ppermute(dv, axis, perm)
  return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype)


ring_attention.defvjp(_ring_fwd, _ring_bwd)
