"""Models from a config: the one place where config fields become modules, and a clip's shape its latent grid.

Trainers, the generator, the tasks, the evaluation and the config checks all build through here, so a second
model family adds its constructors here and nowhere else. Nothing is initialised: modules are unbound.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from vidgen.diffusion import conditioning
from vidgen.models import dit as dit_lib
from vidgen.models import t2v
from vidgen.models import tokenizer as tokenizer_lib
from vidgen.models import umt5 as umt5_lib
from vidgen.models import vae as vae_lib


def compute_dtype(name: str):
  """A config's compute dtype: 'auto' is bfloat16 on accelerators and float32 on CPU (where bf16 is slow)."""
  if name == "auto":
    return jnp.bfloat16 if jax.default_backend() != "cpu" else jnp.float32
  return jnp.dtype(name)


def compiler_options(dtype) -> dict | None:
  """XLA options for a model computing in `dtype`. On CPU, XLA computes bfloat16 dots in float32, and its
  loop-invariant code motion hoists the casts of every scanned layer out of the loop: float32 copies of the whole
  stack at once (19 GB for umt5-xxl, 6 GB for Wan-1.3B's DiT). Off there, each layer is cast as it runs."""
  if jnp.dtype(dtype) == jnp.bfloat16 and jax.default_backend() == "cpu":
    return {"xla_disable_hlo_passes": "while-loop-invariant-code-motion"}
  return None


def vae(config) -> vae_lib.VideoVAE:
  """The causal video VAE of config.vae."""
  v = config.vae
  return vae_lib.VideoVAE(dim=v.dim, z_dim=v.z_dim, dim_mult=tuple(v.dim_mult), num_res_blocks=v.num_res_blocks,
                          attn_scales=tuple(v.attn_scales), temporal_downsample=tuple(v.temporal_downsample),
                          spatial_downsample=tuple(v.spatial_downsample), patch_size=v.patch_size,
                          temporal_patch_size=v.temporal_patch_size, level_shortcuts=v.level_shortcuts,
                          temporal_kernel=v.temporal_kernel, dropout=v.dropout,
                          decoder_level_attention=v.decoder_level_attention, dtype=compute_dtype(v.dtype))


def compression(config) -> tuple[int, int]:
  """(temporal, spatial) compression of config.vae, as the module computes it."""
  model = vae(config)
  return model.temporal_compression, model.spatial_compression


def latent_grid(config, frames: int | None = None, height: int | None = None,
                width: int | None = None) -> tuple[int, int, int]:
  """(latent frames, height, width) of a clip of frames x height x width pixels (default: config.data's);
  raises ValueError naming the problem for a shape the VAE cannot take."""
  d = config.data
  shape = (d.num_frames if frames is None else frames, d.height if height is None else height,
           d.width if width is None else width)
  return tuple(vae(config).latent_shape(*shape)[:3])


def dit_tokens(config, grid: tuple[int, int, int] | None = None) -> int:
  """Spacetime patches the DiT sees for one clip: the latent grid (default: config.data's) / dit.patch_size."""
  grid = latent_grid(config) if grid is None else grid
  return math.prod(g // p for g, p in zip(grid, config.dit.patch_size))


def dit_in_dim(config) -> int:
  """The DiT's input channels: z_dim, or x_t + mask + known-frame latents with dit.frame_conditioning."""
  z = config.vae.z_dim
  return conditioning.channels(z, compression(config)[0]) if config.dit.frame_conditioning else z


def tokenizer(config) -> tokenizer_lib.HashedWordTokenizer:
  return tokenizer_lib.HashedWordTokenizer(config.text.vocab_size, config.text.max_length)


def text_tokens(config) -> int:
  """Context tokens the DiT cross-attends to: the text encoder's summary token and text.max_length words."""
  return 1 + config.text.max_length


def _dit_kwargs(config) -> dict:
  dit = config.dit
  return dict(patch_size=tuple(dit.patch_size), in_dim=dit_in_dim(config), out_dim=config.vae.z_dim, dim=dit.dim,
              ffn_dim=dit.ffn_dim, freq_dim=dit.freq_dim, num_heads=dit.num_heads, depth=dit.depth,
              qk_norm=dit.qk_norm, cross_attn_norm=dit.cross_attn_norm, text_pool=dit.text_pool, remat=dit.remat,
              scan_blocks=dit.scan_blocks, implementation=dit.attention, pos_embed=dit.pos_embed,
              rope_theta=dit.rope_theta)


def denoiser(config) -> t2v.TextToVideo:
  """The text encoder and DiT of config.text and config.dit, trained jointly as one module (model='vidgen')."""
  text = config.text
  return t2v.TextToVideo(
      dtype=compute_dtype(config.dit.dtype),
      text_kwargs=dict(vocab_size=text.vocab_size, max_length=text.max_length, width=text.width,
                       depth=text.depth, num_heads=text.num_heads, token_init_std=text.token_init_std,
                       position_init_std=text.position_init_std, position=text.position,
                       rope_theta=text.rope_theta, implementation=config.dit.attention),
      dit_kwargs=_dit_kwargs(config))


def dit(config) -> dit_lib.DiT:
  """The DiT alone, reading a frozen text encoder's context (model='wan2.1'): Wan's sinusoid and RoPE accuracy."""
  return dit_lib.DiT(**_dit_kwargs(config), reference_precision=True, dtype=compute_dtype(config.dit.dtype))


def umt5(config) -> umt5_lib.UMT5Encoder:
  """Wan's frozen UMT5 text encoder of config.text (text.encoder='umt5')."""
  t = config.text
  return umt5_lib.UMT5Encoder(vocab_size=t.vocab_size, d_model=t.width, d_kv=t.d_kv, d_ff=t.d_ff,
                              num_heads=t.num_heads, num_layers=t.depth, relative_attention_num_buckets=t.num_buckets,
                              relative_attention_max_distance=t.max_distance, scan_layers=True,
                              dtype=compute_dtype(config.dit.dtype))


def denoiser_init_inputs(config, grid: tuple[int, int, int] | None = None) -> tuple:
  """(x_t, t, ids) of batch 1 for `denoiser(config).init`: parameter shapes do not depend on the grid."""
  grid = latent_grid(config) if grid is None else grid
  return (jnp.zeros((1, *grid, dit_in_dim(config)), jnp.float32), jnp.zeros((1,), jnp.float32),
          jnp.zeros((1, config.text.max_length), jnp.int32))


def vae_init_input(config):
  """A zero clip of config.data's shape for `vae(config).init`."""
  d = config.data
  return jnp.zeros((1, d.num_frames, d.height, d.width, 3), jnp.float32)
