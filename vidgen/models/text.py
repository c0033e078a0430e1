"""The embedded text encoder: a small transformer trained jointly with the DiT.

A learned summary token is prepended to the word tokens and is always valid, so an empty prompt (all
padding) still yields a context: that context is the unconditional one used by classifier-free
guidance, and text dropout during training simply blanks the ids. The frozen T5/UMT5 encoders
implement the same interface: `(tokens [B, L, D], mask [B, L], pooled [B, D])`.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from vidgen.models import attention
from vidgen.models import layers
from vidgen.models import rope as rope_lib
from vidgen.models.tokenizer import PAD_ID

# learned: an absolute position embedding added to the words; rope: rotary positions in self-attention, so a
# word sees only how far away the others are (a phrase reads the same wherever it stands in the prompt).
POSITIONS = ("learned", "rope")


class TextBlock(nn.Module):
  num_heads: int
  mlp_ratio: float = 4.0
  implementation: str = "xla"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask, rope_freqs=None):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    h = layers.LayerNorm(affine=True, name="norm1", **kw)(x)
    x = x + attention.Attention(self.num_heads, qk_norm=True, implementation=self.implementation,
                                name="attn", **kw)(h, key_mask=mask, rope_freqs=rope_freqs)
    h = layers.LayerNorm(affine=True, name="norm2", **kw)(x)
    return x + layers.MLP(int(x.shape[-1] * self.mlp_ratio), name="ffn", **kw)(h)


class TextEncoder(nn.Module):
  """ids [B, L] int32 -> (tokens [B, 1+L, width], mask [B, 1+L], pooled [B, width])."""
  vocab_size: int
  max_length: int
  width: int = 128
  depth: int = 2
  num_heads: int = 4
  # Init scales of the word and position embeddings (0.02 next to the blocks' outputs of ~1 at init). On Shapes
  # a scale of 1.0 did not make AdamW learn the motion words (Muon did: experiments/README.md).
  token_init_std: float = 0.02
  position_init_std: float = 0.02
  position: str = "learned"  # one of POSITIONS
  rope_theta: float = 10000.0
  implementation: str = "xla"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, ids):
    if ids.shape[-1] > self.max_length:
      raise ValueError(f"text ids have length {ids.shape[-1]} > text.max_length={self.max_length}")
    if self.position not in POSITIONS:
      raise ValueError(f"text.position={self.position!r}: allowed {POSITIONS}")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    embed = nn.Embed(self.vocab_size, self.width, name="token_embedding",
                     embedding_init=nn.with_logical_partitioning(nn.initializers.normal(self.token_init_std),
                                                                 ("vocab", "embed")), **kw)
    summary = self.param("summary_token",
                         nn.with_logical_partitioning(nn.initializers.normal(0.02), ("embed",)),
                         (self.width,), self.param_dtype)
    b, length = ids.shape
    x = embed(ids)
    x = jnp.concatenate([jnp.broadcast_to(summary.astype(x.dtype), (b, 1, self.width)), x], axis=1)
    freqs = None
    if self.position == "learned":
      pos = self.param("position_embedding",
                       nn.with_logical_partitioning(nn.initializers.normal(self.position_init_std), (None, "embed")),
                       (1 + self.max_length, self.width), self.param_dtype)
      x = x + pos[None, : 1 + length].astype(x.dtype)
    else:
      freqs = rope_lib.sequence_freqs(1 + length, self.width // self.num_heads, self.rope_theta)
    mask = jnp.concatenate([jnp.ones((b, 1), bool), ids != PAD_ID], axis=1)
    for i in range(self.depth):
      x = TextBlock(self.num_heads, implementation=self.implementation, name=f"blocks_{i}", **kw)(x, mask, freqs)
    x = layers.LayerNorm(affine=True, name="norm", **kw)(x)
    return x, mask, x[:, 0]
