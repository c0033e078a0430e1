"""TPU splash attention (Pallas), with a full non-causal mask; interpreted off TPU so tests run on CPU.

The kernel works in tiles of 128 tokens, so queries and keys are zero-padded to a multiple of 128. Padded
keys, and keys a padding mask turns off, get segment id 0 while queries get 1: the kernel then gives them
no weight. Every query row must keep at least one key (true of the text encoder's summary token).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

TILE = 128  # the kernel's lane width: every block size is a multiple of it
BLOCKS = (512, 256, 128)  # largest first: bigger tiles run faster on TPU


def _splash():
  try:
    from jax.experimental.pallas.ops.tpu import splash_attention
  except ImportError as e:
    raise ImportError("dit.attention='splash' needs jax.experimental.pallas.ops.tpu.splash_attention, "
                      f"which this jax {jax.__version__} lacks; use 'xla' or 'cudnn'") from e
  return splash_attention


def _padded(length: int) -> int:
  return -(-length // TILE) * TILE


def _block(length: int) -> int:
  """The largest block size that divides a padded length (a multiple of TILE)."""
  return next(b for b in BLOCKS if length % b == 0)


def _kernel(num_heads: int, q_len: int, kv_len: int, interpret: bool):
  sa = _splash()
  bq, bkv = _block(q_len), _block(kv_len)
  sizes = sa.BlockSizes(block_q=bq, block_kv=bkv, block_kv_compute=bkv, block_q_dkv=bq, block_kv_dkv=bkv,
                        block_kv_dkv_compute=bkv, block_q_dq=bq, block_kv_dq=bkv)
  mask = sa.MultiHeadMask([sa.FullMask((q_len, kv_len))] * num_heads)
  return sa.make_splash_mha(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1, interpret=interpret)


def splash_attention(q, k, v, key_mask=None):
  """q [B, Lq, N, D], k and v [B, Lk, N, D], key_mask [B, Lk] bool or None -> [B, Lq, N, D]."""
  b, lq, n, d = q.shape
  lk = k.shape[1]
  pq, pk = _padded(lq), _padded(lk)
  # Heads-first [B, N, L, D], the kernel's layout; the kernel does not scale q itself.
  heads_first = lambda a, pad: jnp.pad(jnp.transpose(a, (0, 2, 1, 3)), ((0, 0), (0, 0), (0, pad), (0, 0)))
  q = heads_first(q * jnp.asarray(d ** -0.5, q.dtype), pq - lq)
  k, v = heads_first(k, pk - lk), heads_first(v, pk - lk)
  segments = None
  if key_mask is not None or pk != lk:
    sa = _splash()
    keep = jnp.ones((b, lk), bool) if key_mask is None else key_mask.astype(bool)
    kv_ids = jnp.pad(keep, ((0, 0), (0, pk - lk))).astype(jnp.int32)
    segments = sa.SegmentIds(q=jnp.ones((b, pq), jnp.int32), kv=kv_ids)
  kernel = _kernel(n, pq, pk, jax.default_backend() != "tpu")
  if segments is None:
    out = jax.vmap(kernel)(q, k, v)
  else:
    out = jax.vmap(lambda q, k, v, s: kernel(q, k, v, segment_ids=s))(q, k, v, segments)
  return jnp.transpose(out[:, :, :lq], (0, 2, 1, 3))
