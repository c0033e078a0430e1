"""The latent diffusion transformer over spacetime patches, laid out like Wan 2.1's WanModel.

Latent [B, F, H, W, C] -> patchify (pt, ph, pw) -> tokens -> blocks of (adaLN-modulated
self-attention with 3D RoPE and QK-norm, cross-attention to text, adaLN-modulated GELU MLP) ->
modulated head -> unpatchify to the velocity. The layout follows Wan 2.1: modules and parameters
carry Wan's names (patch_embedding, text_embedding, time_embedding, time_projection,
blocks_i/{self_attn, cross_attn, ffn, norm3, modulation}, head/{head, modulation}), so the key mapping
from Wan 2.1 checkpoints is mechanical (PyTorch Linear weights transpose; Conv3d OIDHW -> DHWIO): see
vidgen/weights/wan_dit.py, which loads and writes both the Wan and the diffusers layout (with
context_mask=None, as Wan attends to its zero padding: diffusers' WanTransformer3DModel agrees to ~5e-6,
and Wan's own WanModel to ~5e-7 with `reference_precision`). Two additions, off for Wan's layout:
`text_pool` adds a pooled text vector to the time embedding (fast attribute learning for small models),
and `in_dim` > out_dim leaves room for frame-conditioning channels. With `scan_blocks` the blocks are
one scanned module whose parameters stack on a leading axis; stack_blocks/unstack_blocks convert between
the two layouts.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vidgen.models import attention
from vidgen.models import layers
from vidgen.models import rope as rope_lib


POS_EMBEDS = ("none", "sincos")
# What a block keeps for the backward pass; the rest is recomputed. 'full' keeps only the block's input.
REMAT_POLICIES = {
    "none": None,
    "full": None,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


class DiTBlock(nn.Module):
  num_heads: int
  ffn_dim: int
  qk_norm: bool = True
  cross_attn_norm: bool = True
  eps: float = 1e-6
  implementation: str = "xla"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, e6, context, context_mask, freqs):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    dim = x.shape[-1]
    # adaLN-zero: the shared time projection is zero-initialised, so every block starts as identity.
    modulation = self.param("modulation", nn.with_logical_partitioning(
        nn.initializers.zeros_init(), (None, None, "embed")), (1, 6, dim), self.param_dtype)
    mod = (modulation.astype(jnp.float32) + e6.astype(jnp.float32))  # [B, 6, dim]
    shift1, scale1, gate1, shift2, scale2, gate2 = [mod[:, i][:, None] for i in range(6)]
    attn_kw = dict(qk_norm=self.qk_norm, eps=self.eps, implementation=self.implementation, **kw)

    h = layers.LayerNorm(self.eps, name="norm1", **kw)(x).astype(jnp.float32)
    h = (h * (1 + scale1) + shift1).astype(self.dtype)
    h = attention.Attention(self.num_heads, name="self_attn", **attn_kw)(h, rope_freqs=freqs)
    x = x + (h.astype(jnp.float32) * gate1).astype(x.dtype)

    h = layers.LayerNorm(self.eps, affine=self.cross_attn_norm, name="norm3", **kw)(x)
    x = x + attention.Attention(self.num_heads, name="cross_attn", **attn_kw)(
        h, context=context, key_mask=context_mask)

    h = layers.LayerNorm(self.eps, name="norm2", **kw)(x).astype(jnp.float32)
    h = (h * (1 + scale2) + shift2).astype(self.dtype)
    h = layers.MLP(self.ffn_dim, name="ffn", **kw)(h)
    x = x + (h.astype(jnp.float32) * gate2).astype(x.dtype)
    return layers.constrain(x, ("activation_batch", "activation_length", "activation_embed"))


class ScannedDiTBlock(DiTBlock):
  """A DiTBlock in the (carry, output) form nn.scan wants."""

  def __call__(self, x, e6, context, context_mask, freqs):
    return super().__call__(x, e6, context, context_mask, freqs), None


class DiT(nn.Module):
  """Velocity model v(x_t, t, text) for rectified flow."""
  patch_size: tuple[int, int, int] = (1, 2, 2)
  in_dim: int = 16
  out_dim: int = 16
  dim: int = 1536
  ffn_dim: int = 8960
  freq_dim: int = 256
  num_heads: int = 12
  depth: int = 30
  qk_norm: bool = True
  cross_attn_norm: bool = True
  text_pool: bool = False
  eps: float = 1e-6
  rope_theta: float = 10000.0
  # 'sincos' adds a fixed absolute (frame, row, column) embedding to the tokens (rope.sincos_embedding). With
  # RoPE alone attention sees only offsets between tokens, so where an object is in the frame can only be
  # guessed from the edges of the grid. Wan has none.
  pos_embed: str = "none"
  # The sinusoidal time embedding and the RoPE tables to float64 accuracy, as Wan's reference computes them
  # (layers.sinusoidal_embedding(precise=True), rope.rope_freqs(cos_sin=True)); off, in float32 they are off
  # by up to ~6e-5 (the sinusoid near t = 1000) and ~3e-6 (RoPE on a 480p grid). For running Wan 2.1 weights.
  reference_precision: bool = False
  remat: str = "none"  # a key of REMAT_POLICIES
  # One block traced once and looped (parameters stacked under `blocks` on a leading 'layers' axis):
  # compile time and HLO size stop growing with depth, and FSDP gathers/reduces one block at a time.
  scan_blocks: bool = False
  implementation: str = "xla"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, t, context, context_mask=None, pooled=None):
    """x [B, F, H, W, in_dim] noisy latent, t [B] in [0, 1], context [B, L, text_dim]."""
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    b, f, h, w, _ = x.shape
    pt, ph, pw = self.patch_size
    if f % pt or h % ph or w % pw:
      raise ValueError(f"latent grid {(f, h, w)} is not divisible by dit.patch_size={self.patch_size}")
    grid = (f // pt, h // ph, w // pw)

    x = nn.Conv(self.dim, self.patch_size, strides=self.patch_size, padding="VALID",
                name="patch_embedding", kernel_init=nn.with_logical_partitioning(
                    nn.initializers.xavier_uniform(), (None, None, None, "conv_in", "embed")), **kw)(
                        x.astype(self.dtype))
    x = x.reshape(b, -1, self.dim)
    if self.pos_embed == "sincos":
      x = x + rope_lib.sincos_embedding(grid, self.dim, self.rope_theta).astype(x.dtype)[None]
    elif self.pos_embed != "none":
      raise ValueError(f"dit.pos_embed={self.pos_embed!r}: allowed {POS_EMBEDS}")
    x = layers.constrain(x, ("activation_batch", "activation_length", "activation_embed"))

    # Wan feeds timesteps on a 0..1000 scale.
    e = layers.sinusoidal_embedding(t * 1000.0, self.freq_dim, precise=self.reference_precision)
    e = layers.dense(self.dim, (None, "embed"), "time_embedding_0", **kw)(e)
    e = layers.dense(self.dim, ("embed", "embed_out"), "time_embedding_2", **kw)(nn.silu(e))
    if self.text_pool:
      if pooled is None:
        raise ValueError("dit.text_pool=True needs the pooled text vector")
      p = layers.dense(self.dim, (None, "embed"), "text_pool_embedding_0", **kw)(pooled)
      e = e + layers.dense(self.dim, ("embed", "embed_out"), "text_pool_embedding_2", **kw)(nn.silu(p))
    e6 = layers.dense(6 * self.dim, ("embed", "mlp"), "time_projection", zero_init=True, **kw)(nn.silu(e))
    e6 = e6.reshape(b, 6, self.dim)

    ctx = layers.dense(self.dim, (None, "embed"), "text_embedding_0", **kw)(context)
    ctx = layers.dense(self.dim, ("embed", "embed_out"), "text_embedding_2", **kw)(
        nn.gelu(ctx, approximate=True))

    freqs = rope_lib.rope_freqs(grid, self.dim // self.num_heads, self.rope_theta, cos_sin=self.reference_precision)
    if self.remat not in REMAT_POLICIES:
      raise ValueError(f"remat={self.remat!r}: allowed {tuple(REMAT_POLICIES)}")
    block_args = (self.num_heads, self.ffn_dim, self.qk_norm, self.cross_attn_norm, self.eps, self.implementation)
    block_cls = ScannedDiTBlock if self.scan_blocks else DiTBlock
    if self.remat != "none":
      block_cls = nn.remat(block_cls, policy=REMAT_POLICIES[self.remat])
    if self.scan_blocks:
      # intermediates: capture_intermediates sees each layer's output, stacked like the params.
      x, _ = nn.scan(block_cls, variable_axes={"params": 0, "intermediates": 0}, split_rngs={"params": True},
                     in_axes=(nn.broadcast,) * 4, length=self.depth,
                     metadata_params={nn.PARTITION_NAME: "layers"})(*block_args, name="blocks", **kw)(
                         x, e6, ctx, context_mask, freqs)
    else:
      for i in range(self.depth):
        x = block_cls(*block_args, name=f"blocks_{i}", **kw)(x, e6, ctx, context_mask, freqs)

    # Head: LayerNorm modulated by the time embedding (Wan's Head), zero-initialised output.
    head_mod = self.param("head_modulation", nn.with_logical_partitioning(
        nn.initializers.zeros_init(), (None, None, "embed")), (1, 2, self.dim), self.param_dtype)
    mod = head_mod.astype(jnp.float32) + e.astype(jnp.float32)[:, None]
    shift, scale = mod[:, 0][:, None], mod[:, 1][:, None]
    x = layers.LayerNorm(self.eps, name="head_norm", **kw)(x).astype(jnp.float32)
    x = (x * (1 + scale) + shift).astype(self.dtype)
    x = layers.dense(pt * ph * pw * self.out_dim, ("embed", None), "head", zero_init=True, **kw)(x)
    return unpatchify(x.astype(jnp.float32), grid, self.patch_size, self.out_dim)


def unpatchify(x, grid, patch_size, channels):
  """[B, F'*H'*W', pt*ph*pw*C] -> [B, F'*pt, H'*ph, W'*pw, C]; features ordered (pt, ph, pw, C) like Wan."""
  b = x.shape[0]
  (f, h, w), (pt, ph, pw) = grid, patch_size
  x = x.reshape(b, f, h, w, pt, ph, pw, channels)
  x = jnp.transpose(x, (0, 1, 4, 2, 5, 3, 6, 7))
  return x.reshape(b, f * pt, h * ph, w * pw, channels)


def stack_blocks(params: dict, depth: int) -> dict:
  """DiT parameters with blocks_0..blocks_{depth-1} (Wan's layout) -> one `blocks` tree, layers first."""
  blocks = [params[f"blocks_{i}"] for i in range(depth)]
  rest = {k: v for k, v in params.items() if not k.startswith("blocks_")}
  return {**rest, "blocks": jax.tree_util.tree_map(lambda *a: jnp.stack(a), *blocks)}


def unstack_blocks(params: dict) -> dict:
  """The inverse of stack_blocks: a scanned DiT's parameters in Wan's blocks_i layout."""
  rest = {k: v for k, v in params.items() if k != "blocks"}
  depth = jax.tree_util.tree_leaves(params["blocks"])[0].shape[0]
  return {**rest, **{f"blocks_{i}": jax.tree_util.tree_map(lambda a: a[i], params["blocks"]) for i in range(depth)}}
