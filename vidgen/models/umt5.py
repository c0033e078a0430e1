"""UMT5 encoder (Wan 2.1's frozen text encoder, UMT5-XXL) in Flax linen, at parity with transformers' UMT5EncoderModel.

T5 v1.1 family: RMSNorm without mean subtraction or bias (T5LayerNorm), pre-norm residual blocks, attention with
no 1/sqrt(d) scale and a learned relative position bias in every layer (UMT5; T5 shares layer 0's), a gated-GELU
feed-forward (gelu_tanh(x W0) * (x W1), then Wo), a final norm. Padding is masked out of the keys only, so the
hidden states at padded positions are defined but meaningless; `wan_context` zeroes them as Wan's pipeline does.

Parameters carry the DiT's logical axis names (vocab, embed, heads, mlp, norm; 'layers' with `scan_layers`), so
`vidgen.parallel.rules.DIT_RULES` shards this model too. Checkpoints load with `vidgen.weights.umt5_weights`.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vidgen.models import layers

# google/umt5-xxl, the encoder of Wan 2.1 (models_t5_umt5-xxl-enc-bf16.pth).
UMT5_XXL = dict(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_heads=64, num_layers=24,
                relative_attention_num_buckets=32, relative_attention_max_distance=128, eps=1e-6)

_HIDDEN = ("activation_batch", "activation_length", "activation_embed")


def config_from_transformers(config: Mapping[str, Any]) -> dict:
  """A transformers UMT5 (or T5 v1.1) config.json as a dict -> UMT5Encoder's kwargs (architecture only)."""
  if config.get("feed_forward_proj", "gated-gelu") not in ("gated-gelu",):
    raise ValueError(f"feed_forward_proj={config.get('feed_forward_proj')!r}: UMT5Encoder implements only "
                     "'gated-gelu' (UMT5 and T5 v1.1)")
  missing = [k for k in ("d_model", "d_kv", "d_ff", "num_heads", "num_layers", "vocab_size") if k not in config]
  if missing:
    raise ValueError(f"UMT5 config lacks {missing}")
  return dict(vocab_size=int(config["vocab_size"]), d_model=int(config["d_model"]), d_kv=int(config["d_kv"]),
              d_ff=int(config["d_ff"]), num_heads=int(config["num_heads"]), num_layers=int(config["num_layers"]),
              relative_attention_num_buckets=int(config.get("relative_attention_num_buckets", 32)),
              relative_attention_max_distance=int(config.get("relative_attention_max_distance", 128)),
              eps=float(config.get("layer_norm_epsilon", 1e-6)))


def relative_position_bucket(rel: np.ndarray, num_buckets: int, max_distance: int) -> np.ndarray:
  """The bucket (int32) of each relative position (key position - query position), bidirectional as in the
  encoder: half the buckets for keys after the query; in each half, exact buckets below num_buckets // 4 and
  logarithmic ones up to max_distance, the last bucket beyond. In float32 like transformers (and Wan), so the
  floor at the edges of the log buckets falls the same way."""
  rel = np.asarray(rel, np.int64)
  half = num_buckets // 2
  out = (rel > 0).astype(np.int64) * half
  rel = np.abs(rel)
  max_exact = half // 2
  with np.errstate(divide="ignore"):
    ratio = np.log(rel.astype(np.float32) / np.float32(max_exact)) / np.float32(math.log(max_distance / max_exact))
  large = max_exact + np.nan_to_num(ratio * np.float32(half - max_exact), neginf=0.0).astype(np.int64)
  large = np.minimum(large, half - 1)
  return (out + np.where(rel < max_exact, rel, large)).astype(np.int32)


def relative_position_buckets(length_q: int, length_k: int, num_buckets: int, max_distance: int) -> np.ndarray:
  """[Lq, Lk] buckets of a self-attention over positions 0..L-1 (a constant of the sequence length)."""
  rel = np.arange(length_k)[None, :] - np.arange(length_q)[:, None]
  return relative_position_bucket(rel, num_buckets, max_distance)


class UMT5Block(nn.Module):
  """Pre-norm self-attention with this layer's relative position bias, then the gated-GELU feed-forward."""
  d_kv: int
  d_ff: int
  num_heads: int
  num_buckets: int
  max_distance: int
  eps: float = 1e-6
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, key_mask):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    b, length, d_model = x.shape
    inner = self.num_heads * self.d_kv

    h = layers.RMSNorm(self.eps, name="norm1", **kw)(x)
    proj = lambda name: layers.dense(inner, ("embed", "heads"), name, use_bias=False, **kw)
    split = lambda a: layers.constrain(a.reshape(b, length, self.num_heads, self.d_kv),
                                       ("activation_batch", "activation_length", "activation_heads", "activation_kv"))
    q, k, v = (split(proj(n)(h)) for n in ("q", "k", "v"))
    table = self.param("relative_attention_bias", nn.with_logical_partitioning(
        nn.initializers.normal(1.0 / math.sqrt(self.num_buckets * self.num_heads)), (None, "heads")),
                       (self.num_buckets, self.num_heads), self.param_dtype)
    buckets = relative_position_buckets(length, length, self.num_buckets, self.max_distance)
    bias = jnp.transpose(jnp.take(table.astype(jnp.float32), jnp.asarray(buckets), axis=0), (2, 0, 1))  # [N, L, L]
    # No 1/sqrt(d_kv): T5 folds the scale into its initialisation. Logits and softmax in float32.
    logits = jnp.einsum("bqnd,bknd->bnqk", q, k, preferred_element_type=jnp.float32) + bias[None]
    if key_mask is not None:
      logits = jnp.where(key_mask[:, None, None, :], logits, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    a = jnp.einsum("bnqk,bknd->bqnd", weights, v).reshape(b, length, inner)
    x = x + layers.dense(d_model, ("heads", "embed"), "o", use_bias=False, **kw)(a).astype(x.dtype)
    x = layers.constrain(x, _HIDDEN)

    h = layers.RMSNorm(self.eps, name="norm2", **kw)(x)
    gate = layers.dense(self.d_ff, ("embed", "mlp"), "wi_0", use_bias=False, **kw)(h)
    linear = layers.dense(self.d_ff, ("embed", "mlp"), "wi_1", use_bias=False, **kw)(h)
    h = layers.constrain(nn.gelu(gate, approximate=True) * linear,
                         ("activation_batch", "activation_length", "activation_mlp"))
    x = x + layers.dense(d_model, ("mlp", "embed"), "wo", use_bias=False, **kw)(h).astype(x.dtype)
    return layers.constrain(x, _HIDDEN)


class ScannedUMT5Block(UMT5Block):
  """A UMT5Block in the (carry, output) form nn.scan wants."""

  def __call__(self, x, key_mask):
    return super().__call__(x, key_mask), None


class UMT5Encoder(nn.Module):
  """ids [B, L] int, mask [B, L] (nonzero / True = a real token) -> last hidden state [B, L, d_model].

  Parameters: token_embedding/embedding [vocab, d_model]; per layer (blocks_i, or `blocks` stacked on a leading
  'layers' axis with `scan_layers`) norm1/weight, q k v /kernel [d_model, heads*d_kv], o/kernel,
  relative_attention_bias [num_buckets, heads], norm2/weight, wi_0 wi_1 /kernel [d_model, d_ff], wo/kernel;
  norm/weight.
  """
  vocab_size: int = UMT5_XXL["vocab_size"]
  d_model: int = UMT5_XXL["d_model"]
  d_kv: int = UMT5_XXL["d_kv"]
  d_ff: int = UMT5_XXL["d_ff"]
  num_heads: int = UMT5_XXL["num_heads"]
  num_layers: int = UMT5_XXL["num_layers"]
  relative_attention_num_buckets: int = UMT5_XXL["relative_attention_num_buckets"]
  relative_attention_max_distance: int = UMT5_XXL["relative_attention_max_distance"]
  eps: float = 1e-6
  scan_layers: bool = False  # one layer traced once and looped; parameters stacked under `blocks`
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, ids, mask=None):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    embed = nn.Embed(self.vocab_size, self.d_model, name="token_embedding", embedding_init=nn.with_logical_partitioning(
        nn.initializers.normal(1.0), ("vocab", "embed")), **kw)
    x = layers.constrain(embed(ids.astype(jnp.int32)), _HIDDEN)
    key_mask = None if mask is None else mask.astype(bool)
    block_args = (self.d_kv, self.d_ff, self.num_heads, self.relative_attention_num_buckets,
                  self.relative_attention_max_distance, self.eps)
    if self.scan_layers:
      x, _ = nn.scan(ScannedUMT5Block, variable_axes={"params": 0}, split_rngs={"params": True},
                     in_axes=(nn.broadcast,), length=self.num_layers,
                     metadata_params={nn.PARTITION_NAME: "layers"})(*block_args, name="blocks", **kw)(x, key_mask)
    else:
      for i in range(self.num_layers):
        x = UMT5Block(*block_args, name=f"blocks_{i}", **kw)(x, key_mask)
    return layers.RMSNorm(self.eps, name="norm", **kw)(x)


def wan_context(hidden, mask, length: int | None = None):
  """The encoder output as Wan's pipeline feeds the DiT, in the text interface's form (tokens, mask, pooled).

  tokens [B, length, D]: each prompt's states up to its token count (EOS included), zeros after it and out to
  `length` (default: L; Wan pads to 512). The DiT attends to every position, zeros included, so the mask is all
  True (vidgen's DiT then matches Wan's). pooled [B, D]: the mean over the real tokens (Wan has no pooled vector;
  keep `dit.text_pool` off for Wan weights)."""
  b, l, d = hidden.shape
  length = l if length is None else length
  if length < l:
    raise ValueError(f"wan_context: length={length} is shorter than the encoded {l} tokens")
  valid = mask.astype(bool)
  tokens = jnp.where(valid[..., None], hidden, jnp.zeros((), hidden.dtype))
  tokens = jnp.pad(tokens, ((0, 0), (0, length - l), (0, 0)))
  count = jnp.maximum(valid.sum(axis=1, keepdims=True), 1).astype(jnp.float32)
  pooled = (tokens.astype(jnp.float32).sum(axis=1) / count).astype(hidden.dtype)
  return tokens, jnp.ones((b, length), bool), pooled
