"""Causal 3D video VAE (Wan 2.1 layout) in Flax linen.

Videos are channels-last float arrays ``[B, T, H, W, C]`` in [-1, 1] with ``T = 1 + 4k`` (for the default 4x
temporal compression): the first frame is encoded on its own, so an image is a 1-frame video and images and
videos share one latent space. Latents are ``[B, 1 + k, H / 8, W / 8, z_dim]`` for the default config.

Every convolution is causal in time (all temporal padding on the past side), so latent frame ``j`` depends only
on input frames ``<= 4j`` and decoded frame ``t`` only on latent frames ``<= ceil(t / 4)``. That makes streaming
exact: ``encode_chunked`` / ``decode_chunked`` process the first frame alone, then 4 frames (1 latent frame) at a
time under ``nn.scan``, carrying a small causal cache, and return the same result as ``encode`` / ``decode`` on the
whole clip with memory independent of the clip length. ``decode_continued`` hands the cache to the caller, so
latents that arrive in pieces (the chunks of ``tasks.extend``) decode as one stream.

Block protocol: every block below (``CausalConv3d``, ``ResidualBlock``, ``AttentionBlock``, ``Resample``,
``Encoder3d``, ``Decoder3d``) maps ``(x, cache=None) -> (y, new_cache)``. ``cache=None`` means "the stream
starts here" (causal zero padding), which is also the full-sequence path; ``new_cache`` is what the next chunk
needs (``None`` for blocks that need nothing). Caches are plain pytrees of arrays keyed by submodule name:

* ``CausalConv3d`` with temporal kernel 3: the last 2 frames of its (time-padded) input.
* ``Resample('downsample3d')``: the last frame of the spatially downsampled input.
* ``Resample('upsample3d')``: the cache of its ``time_conv``, which only ever sees frames ``1..`` (frame 0 of the
  stream passes through unchanged), exactly like Wan's ``'Rep'`` cache logic.

The full-sequence path has no Python loop over frames: 2D ops fold time into the batch, temporal resampling is a
strided conv plus reshapes. On CPU a ``kt x kh x kw`` causal conv runs as ``kt`` 2D convs over time-shifted views
(2-3x faster than XLA's CPU conv3d, forward and backward), elsewhere as one conv3d; both use the same
DHWIO kernel.

Extension (Wan 2.2 style): ``patch_size = p > 1`` pixel-unshuffles every frame ``(H, W, 3) -> (H/p, W/p, 3p^2)``
before the encoder (channel order ``(c, r, q)`` as Wan 2.2's ``b c f (h q) (w r) -> b (c r q) f h w``) and
shuffles back after the decoder. ``patch_size = 1`` is exactly Wan 2.1. ``temporal_patch_size = pt > 1`` also
folds ``pt`` frames into channels (frame 0 repeated to fill its own patch, so it stays encoded alone): temporal
compression then happens at the input, and every conv runs at the latent frame rate, which makes a small VAE
several times cheaper per frame and (measured on Shapes) much faster to train than strided temporal resampling.
``temporal_kernel = 1`` makes the 3x3x3 convs per-frame 3x3 convs: with a temporal patch the patch is then the
temporal receptive field (the `tiny` preset's training step drops from 15 to 5.8 GFLOP). ``level_shortcuts`` adds a parameter-free
space(-time)-to-channel shortcut around every encoder level and its inverse around every decoder level (DC-AE's
residual autoencoding, Wan 2.2's ``AvgDown3D`` / ``DupUp3D``), so each level learns a residual over plain
resampling. Both default off, so the default config stays exactly Wan 2.1.

Sharding: every parameter carries logical axis names (``DHWIO_AXES`` / ``HWIO_AXES`` for conv kernels,
``CHANNEL_AXES`` for biases and norm gammas), so ``init`` returns ``nn.Partitioned`` leaves (``nn.unbox`` gives
plain arrays, ``apply`` takes either) and ``rules.VAE_RULES`` shards the kernels over the ``fsdp`` mesh axis.

Wan 2.1 weights (``Wan2.1_VAE.pth``, the default config: dim=96, z_dim=16, dim_mult=(1, 2, 4, 4),
num_res_blocks=2, attn_scales=(), temporal_downsample=(False, True, True)) map on mechanically
(``vidgen.weights.wan_vae``: this table, diffusers' names, strict loading from files):

==============================================  ==============================================  ==================
Wan 2.1 PyTorch state-dict key                  Flax param path (in ``params``)                 tensor transform
==============================================  ==============================================  ==================
``conv1.weight`` / ``conv1.bias``               ``conv1/kernel`` / ``conv1/bias``               OIDHW -> DHWIO
``conv2.weight``                                ``conv2/kernel``                                OIDHW -> DHWIO
``encoder.conv1.weight``                        ``encoder/conv1/kernel``                        OIDHW -> DHWIO
``encoder.downsamples.0.residual.0.gamma``      ``encoder/downsamples_0/residual_0/gamma``      (C,1,1,1) -> (C,)
``encoder.downsamples.0.residual.2.weight``     ``encoder/downsamples_0/residual_2/kernel``     OIDHW -> DHWIO
``encoder.downsamples.0.residual.3.gamma``      ``encoder/downsamples_0/residual_3/gamma``      (C,1,1,1) -> (C,)
``encoder.downsamples.0.residual.6.weight``     ``encoder/downsamples_0/residual_6/kernel``     OIDHW -> DHWIO
``encoder.downsamples.3.shortcut.weight``       ``encoder/downsamples_3/shortcut/kernel``       OIDHW -> DHWIO
``encoder.downsamples.2.resample.1.weight``     ``encoder/downsamples_2/resample_1/kernel``     OIHW -> HWIO
``encoder.downsamples.5.time_conv.weight``      ``encoder/downsamples_5/time_conv/kernel``      OIDHW -> DHWIO
``encoder.middle.1.norm.gamma``                 ``encoder/middle_1/norm/gamma``                 (C,1,1) -> (C,)
``encoder.middle.1.to_qkv.weight``              ``encoder/middle_1/to_qkv/kernel``              OIHW -> HWIO
``encoder.middle.1.proj.weight``                ``encoder/middle_1/proj/kernel``                OIHW -> HWIO
``encoder.head.0.gamma`` / ``head.2.weight``    ``encoder/head_0/gamma`` / ``head_2/kernel``    as above
``decoder.conv1.weight``                        ``decoder/conv1/kernel``                        OIDHW -> DHWIO
``decoder.middle.{0,2}.residual.*``             ``decoder/middle_{0,2}/residual_*``             as above
``decoder.upsamples.3.time_conv.weight``        ``decoder/upsamples_3/time_conv/kernel``        OIDHW -> DHWIO
``decoder.upsamples.3.resample.1.weight``       ``decoder/upsamples_3/resample_1/kernel``       OIHW -> HWIO
``decoder.head.2.weight``                       ``decoder/head_2/kernel``                       OIDHW -> DHWIO
==============================================  ==============================================  ==================

The rule: ``.N`` (a Sequential index) becomes ``_N``, ``.`` becomes ``/``, ``weight`` becomes ``kernel``; 5D conv
weights transpose ``(2, 3, 4, 1, 0)``, 4D ones ``(2, 3, 1, 0)``, ``gamma`` is flattened, biases are unchanged.
Sequential indices are kept as in Wan (``residual_2`` is the first conv, because indices 1, 4, 5 are SiLU /
Dropout), and ``downsamples_i`` / ``upsamples_i`` count blocks across levels exactly as Wan's flat Sequentials do.
Wan's latent normalisation (per-channel mean / std applied in its ``WanVAE`` wrapper) is not applied here; its
values are ``vidgen.weights.wan_vae.WAN21_LATENT_STATS`` (normalised latent = (mean - MEAN) / STD).

Parity with Wan 2.1 and diffusers' ``AutoencoderKLWan`` (tests/test_wan_vae.py: encode, decode and the streaming
decode of random-weight models in both layouts agree to ~1e-5 relative, Wan's own code to diffusers' exactly):
* Decoder channel schedule: level ``i > 0`` starts at half its width, since each upsample outputs ``dim // 2``
  (diffusers' rule; Wan hard-codes levels 1, 2, 3, which is the same wherever Wan's code runs: with more than 4
  levels its shapes do not fit).
* Attention in the levels (``attn_scales``, empty in every public Wan VAE) is placed as Wan places it: encoder
  level ``i`` at scale ``2 ** -i``, decoder level ``i`` at ``2 ** -(L - 2 - i)`` (Wan's decoder count starts one
  octave off the mirror of its encoder), so the parameter trees match Wan's for every ``attn_scales``. diffusers
  builds none in decoder levels: ``decoder_level_attention=False`` (``wan_vae.vae_config_from_diffusers`` sets
  it). Neither reference can run level attention (their cached forward hands the cache to attention blocks, which
  take none), so only the names and shapes are checked there.
* Wan's non-cached forward skips the temporal resampling; here the full-sequence path computes what Wan's chunked
  (cached) path computes (the first frame alone, then 4 at a time), which is how its weights are used.
* ``decode`` does not clamp; Wan's ``WanVAE.decode`` and diffusers' ``decode`` clamp to [-1, 1]: clip for parity.
* Loading either layout (Wan's names above, or diffusers' ``AutoencoderKLWan`` names) with a strict check:
  ``vidgen.weights.wan_vae.load_vae``; the naming rule lives there, the functions below delegate to it.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array
Dtype = Any
Cache = Any  # a pytree of arrays (or None) mirroring the module tree

LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0

# ----------------------------------------------------------------------------------------------------------------
# Shape rules
# ----------------------------------------------------------------------------------------------------------------

def validate_video_shape(num_frames: int, height: int, width: int, *, spatial_compression: int = 8,
                         temporal_compression: int = 4) -> None:
  """Raises ValueError naming every problem with a ``(T, H, W)`` video shape and what is allowed instead."""
  tc, sc = temporal_compression, spatial_compression
  problems = []
  if num_frames < 1 or (num_frames - 1) % tc:
    lo = max(1, 1 + (num_frames - 1) // tc * tc)
    hint = f"; nearest allowed: {lo} or {lo + tc}" if num_frames > 1 else ""
    problems.append(f"num_frames={num_frames} must be 1 + {tc}k (1, {1 + tc}, {1 + 2 * tc}, ...): the first frame "
                    f"is encoded alone, then groups of {tc}{hint}")
  for name, size in (("height", height), ("width", width)):
    if size < sc or size % sc:
      lo = max(sc, size // sc * sc)
      problems.append(f"{name}={size} must be a positive multiple of the spatial compression {sc} "
                      f"(nearest allowed: {lo} or {lo + sc})")
  if problems:
    raise ValueError(f"invalid video shape (T, H, W) = ({num_frames}, {height}, {width}): " + "; ".join(problems))


# Logical axis names of the parameters (vidgen/parallel/rules.py maps them onto the mesh; VAE_RULES shard conv
# kernels over fsdp). Boxing a parameter (nn.with_logical_partitioning) changes neither its value nor its path.
DHWIO_AXES = (None, None, None, "conv_in", "conv_out")  # CausalConv3d kernels
HWIO_AXES = (None, None, "conv_in", "conv_out")  # Conv2d kernels
CHANNEL_AXES = ("channels",)  # per-channel vectors: conv biases, RMSNorm gamma / bias


def _sub(cache: Cache, name: str) -> Cache:
  return None if cache is None else cache[name]


# ----------------------------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------------------------

def _conv2d(x: Array, kernel: Array, strides: Tuple[int, int], padding) -> Array:
  """NHWC x HWIO -> NHWC; 1x1 stride-1 convs are plain matmuls (much faster than a conv on CPU)."""
  if kernel.shape[:2] == (1, 1) and tuple(strides) == (1, 1) and all(p == (0, 0) for p in padding):
    return jnp.einsum("...c,co->...o", x, kernel[0, 0])
  return lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))


class Conv2d(nn.Module):
  """Per-image conv (Wan's ``nn.Conv2d``) with an HWIO ``kernel`` and ``bias``; input ``[N, H, W, C]``."""
  features: int
  kernel_size: Tuple[int, int] = (3, 3)
  strides: Tuple[int, int] = (1, 1)
  padding: Tuple[Tuple[int, int], Tuple[int, int]] = ((1, 1), (1, 1))
  kernel_init: Any = nn.initializers.lecun_normal()
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kernel = self.param("kernel", nn.with_logical_partitioning(self.kernel_init, HWIO_AXES),
                        (*self.kernel_size, x.shape[-1], self.features), self.param_dtype)
    bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, CHANNEL_AXES), (self.features,),
                      self.param_dtype)
    y = _conv2d(x.astype(self.dtype), kernel.astype(self.dtype), self.strides, self.padding)
    return y + bias.astype(self.dtype)


class CausalConv3d(nn.Module):
  """3D conv, causal in time: ``2 * padding[0]`` frames of zeros (or the cache) in front, none behind.

  ``padding`` is Wan's ``(pad_t, pad_h, pad_w)`` (default: half the kernel); spatial padding is symmetric zeros.
  ``__call__(x, cache)`` returns ``(y, new_cache)``; the cache holds the last ``2 * pad_t`` input frames.
  ``impl``: 'conv2d' (kt 2D convs over shifted frames), 'conv3d' (one XLA conv3d) or 'auto' (conv2d on CPU).
  """
  features: int
  kernel_size: Tuple[int, int, int] = (3, 3, 3)
  strides: Tuple[int, int, int] = (1, 1, 1)
  padding: Optional[Tuple[int, int, int]] = None
  impl: str = "auto"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, cache: Optional[Array] = None) -> Tuple[Array, Optional[Array]]:
    kt, kh, kw = self.kernel_size
    pt, ph, pw = self.padding if self.padding is not None else (kt // 2, kh // 2, kw // 2)
    kernel = self.param("kernel", nn.with_logical_partitioning(nn.initializers.lecun_normal(), DHWIO_AXES),
                        (kt, kh, kw, x.shape[-1], self.features), self.param_dtype)
    bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, CHANNEL_AXES), (self.features,),
                      self.param_dtype)
    x = x.astype(self.dtype)
    n_cache = 2 * pt
    new_cache = None
    if n_cache:
      if cache is None:
        x = jnp.pad(x, ((0, 0), (n_cache, 0), (0, 0), (0, 0), (0, 0)))
      else:
        x = jnp.concatenate([cache.astype(self.dtype), x], axis=1)
      new_cache = x[:, -n_cache:]
    y = self._conv(x, kernel.astype(self.dtype), ((ph, ph), (pw, pw)))
    return y + bias.astype(self.dtype), new_cache

  def _conv(self, x: Array, kernel: Array, spatial_padding) -> Array:
    """Temporal 'VALID' conv of an already time-padded ``x``."""
    kt = kernel.shape[0]
    st, sh, sw = self.strides
    impl = self.impl if self.impl != "auto" else ("conv2d" if jax.default_backend() == "cpu" else "conv3d")
    if impl == "conv3d" and kernel.shape[:3] != (1, 1, 1):
      return lax.conv_general_dilated(x, kernel, self.strides, ((0, 0), *spatial_padding),
                                      dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
    b, t, h, w, c = x.shape
    t_out = (t - kt) // st + 1
    y = None
    for i in range(kt):  # a loop over kernel taps, not frames
      xi = lax.slice_in_dim(x, i, i + (t_out - 1) * st + 1, stride=st, axis=1).reshape(b * t_out, h, w, c)
      yi = _conv2d(xi, kernel[i], (sh, sw), spatial_padding)
      y = yi if y is None else y + yi
    return y.reshape(b, t_out, *y.shape[1:])


class RMSNorm(nn.Module):
  """Wan's RMS_norm over the last (channel) axis: ``x / max(||x||_2, eps) * sqrt(C) * gamma (+ bias)``."""
  use_bias: bool = False
  eps: float = 1e-12
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    c = x.shape[-1]
    gamma = self.param("gamma", nn.with_logical_partitioning(nn.initializers.ones, CHANNEL_AXES), (c,),
                       self.param_dtype)
    xf = x.astype(jnp.float32)
    sq = jnp.sum(xf * xf, axis=-1, keepdims=True)
    y = xf * lax.rsqrt(jnp.maximum(sq, self.eps * self.eps)) * (math.sqrt(c) * gamma.astype(jnp.float32))
    if self.use_bias:
      bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, CHANNEL_AXES), (c,),
                        self.param_dtype)
      y = y + bias.astype(jnp.float32)
    return y.astype(self.dtype)


class ResidualBlock(nn.Module):
  """RMSNorm, SiLU, conv 3x3x3, RMSNorm, SiLU, dropout, conv 3x3x3 (+ 1x1x1 shortcut when dims differ)."""
  in_dim: int
  out_dim: int
  dropout: float = 0.0
  temporal_kernel: int = 3
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, cache: Cache = None, *, deterministic: bool = True) -> Tuple[Array, Cache]:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    k = (self.temporal_kernel, 3, 3)
    h = nn.silu(RMSNorm(name="residual_0", **kw)(x))
    h, c2 = CausalConv3d(self.out_dim, k, name="residual_2", **kw)(h, _sub(cache, "residual_2"))
    h = nn.silu(RMSNorm(name="residual_3", **kw)(h))
    h = nn.Dropout(self.dropout, name="residual_5")(h, deterministic=deterministic)
    h, c6 = CausalConv3d(self.out_dim, k, name="residual_6", **kw)(h, _sub(cache, "residual_6"))
    if self.in_dim != self.out_dim:
      x, _ = CausalConv3d(self.out_dim, (1, 1, 1), name="shortcut", **kw)(x)
    return x.astype(self.dtype) + h, {"residual_2": c2, "residual_6": c6}


class AttentionBlock(nn.Module):
  """Per-frame single-head self-attention over H*W (RMSNorm, 1x1 qkv, softmax, 1x1 proj, residual)."""
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, cache: Cache = None, *, deterministic: bool = True) -> Tuple[Array, Cache]:
    del deterministic
    b, t, h, w, c = x.shape
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    y = RMSNorm(name="norm", **kw)(x).reshape(b * t, h * w, c)  # fold time into batch, flatten space
    qkv = Conv2d(3 * c, (1, 1), padding=((0, 0), (0, 0)), name="to_qkv", **kw)(y)
    q, k, v = jnp.split(qkv[:, :, None, :], 3, axis=-1)  # [B*T, HW, 1 head, C]
    y = jax.nn.dot_product_attention(q, k, v)[:, :, 0, :]
    y = Conv2d(c, (1, 1), padding=((0, 0), (0, 0)), kernel_init=nn.initializers.zeros, name="proj", **kw)(y)
    return x.astype(self.dtype) + y.reshape(b, t, h, w, c), None


class Resample(nn.Module):
  """Wan's Resample: 'downsample2d', 'downsample3d', 'upsample2d', 'upsample3d' (see the module docstring).

  Up modes output ``dim // 2`` channels, down modes ``dim``. ``spatial=False`` (a vidgen extension for
  large ``patch_size``) keeps the frame size: the spatial conv runs at stride 1 and only time is resampled.
  """
  dim: int
  mode: str
  spatial: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, cache: Cache = None, *, deterministic: bool = True) -> Tuple[Array, Cache]:
    del deterministic
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    new_cache = None
    if self.mode == "upsample3d":
      # time_conv doubles the frame rate of frames 1.. (frame 0 of the stream passes unchanged and is never seen
      # by time_conv, as in Wan's 'Rep' cache): 2*dim channels = two output frames, interleaved in time.
      time_conv = CausalConv3d(2 * self.dim, (3, 1, 1), padding=(1, 0, 0), name="time_conv", **kw)
      first, rest = (x[:, :1], x[:, 1:]) if cache is None else (None, x)
      if rest.shape[1]:
        y, new_cache = time_conv(rest, cache)
        b, t, h, w, _ = y.shape
        y = y.reshape(b, t, h, w, 2, self.dim).transpose(0, 1, 4, 2, 3, 5).reshape(b, 2 * t, h, w, self.dim)
        x = y if first is None else jnp.concatenate([first.astype(y.dtype), y], axis=1)
      else:  # a lone first frame: time_conv has seen nothing yet, its cache is zeros
        new_cache = jnp.zeros((x.shape[0], 2, *x.shape[2:]), self.dtype)
        if self.is_initializing():
          time_conv(x)
    b, t, h, w, c = x.shape
    x = x.reshape(b * t, h, w, c)
    if self.mode.startswith("upsample"):
      if self.spatial:
        x = jnp.broadcast_to(x[:, :, None, :, None, :], (b * t, h, 2, w, 2, c)).reshape(b * t, 2 * h, 2 * w, c)
      x = Conv2d(self.dim // 2, name="resample_1", **kw)(x)
    elif self.mode.startswith("downsample"):
      if self.spatial:
        x = Conv2d(self.dim, strides=(2, 2), padding=((0, 1), (0, 1)), name="resample_1", **kw)(x)
      else:
        x = Conv2d(self.dim, name="resample_1", **kw)(x)
    else:
      raise ValueError(f"Resample.mode={self.mode!r}; allowed: 'upsample2d', 'upsample3d', 'downsample2d', "
                       "'downsample3d'")
    x = x.reshape(b, t, *x.shape[1:])
    if self.mode == "downsample3d":
      # Valid conv (3,1,1) stride 2: output i sees frames (2i, 2i+1, 2i+2); frame 0 of the stream passes alone.
      time_conv = CausalConv3d(self.dim, (3, 1, 1), strides=(2, 1, 1), padding=(0, 0, 0), name="time_conv", **kw)
      new_cache = x[:, -1:]
      if cache is not None:
        x, _ = time_conv(jnp.concatenate([cache.astype(x.dtype), x], axis=1))
      elif x.shape[1] >= 3:
        x = jnp.concatenate([x[:, :1], time_conv(x)[0]], axis=1)
      elif self.is_initializing():
        time_conv(jnp.concatenate([x, x, x], axis=1))
    return x, new_cache


# ----------------------------------------------------------------------------------------------------------------
# Parameter-free level shortcuts (DC-AE, Chen et al. 2024; Wan 2.2's AvgDown3D / DupUp3D)
# ----------------------------------------------------------------------------------------------------------------

def _match_channels(x: Array, channels: int) -> Array:
  """Averages groups of adjacent channels (fewer out) or repeats each channel (more out)."""
  c = x.shape[-1]
  if c == channels:
    return x
  if c % channels == 0:
    return x.reshape(*x.shape[:-1], channels, c // channels).mean(axis=-1)
  if channels % c == 0:
    return jnp.repeat(x, channels // c, axis=-1)
  raise ValueError(f"a level shortcut cannot map {c} channels to {channels}: one must divide the other")


def shortcut_down(x: Array, channels: int, spatial: bool, temporal: bool, stream_start: bool = True) -> Array:
  """Space(-time)-to-channel then channel averaging: what a downsampling level adds to its output.

  With ``temporal`` frame 0 of a stream (``stream_start``) maps to itself and frames ``1..`` in pairs, matching
  the causal ``downsample3d`` (chunks after the first frame hold an even number of frames).
  """
  first = None
  if temporal and stream_start:
    first, x = x[:, :1], x[:, 1:]
  b, t, h, w, c = x.shape
  ft, fs = (2 if temporal else 1), (2 if spatial else 1)

  def fold(v, ft):
    n = v.shape[1] // ft
    v = v.reshape(b, n, ft, h // fs, fs, w // fs, fs, c).transpose(0, 1, 3, 5, 7, 2, 4, 6)
    return v.reshape(b, n, h // fs, w // fs, c * ft * fs * fs)

  y = _match_channels(fold(x, ft), channels) if t else None
  if first is not None:
    y0 = _match_channels(fold(first, 1), channels)
    y = y0 if y is None else jnp.concatenate([y0, y], axis=1)
  return y


def shortcut_up(x: Array, channels: int, spatial: bool, temporal: bool, stream_start: bool = True) -> Array:
  """Channel repetition then channel-to-space(-time): what an upsampling level adds to its output (the inverse
  layout of ``shortcut_down``; with ``temporal`` frame 0 of a stream stays one frame, later frames become two)."""
  first = None
  if temporal and stream_start:
    first, x = x[:, :1], x[:, 1:]
  b, t, h, w, _ = x.shape
  fs = 2 if spatial else 1

  def unfold(v, ft):
    v = _match_channels(v, channels * ft * fs * fs)
    n = v.shape[1]
    v = v.reshape(b, n, h, w, channels, ft, fs, fs).transpose(0, 1, 5, 2, 6, 3, 7, 4)
    return v.reshape(b, n * ft, h * fs, w * fs, channels)

  y = unfold(x, 2 if temporal else 1) if t else None
  if first is not None:
    y0 = unfold(first, 1)
    y = y0 if y is None else jnp.concatenate([y0, y], axis=1)
  return y


# ----------------------------------------------------------------------------------------------------------------
# Encoder / decoder
# ----------------------------------------------------------------------------------------------------------------

def _run_blocks(blocks: Sequence[nn.Module], x: Array, cache: Cache, deterministic: bool) -> Tuple[Array, Cache]:
  """Runs blocks in order; their caches are keyed by block name."""
  new_cache = {}
  for block in blocks:
    x, new_cache[block.name] = block(x, _sub(cache, block.name), deterministic=deterministic)
  return x, new_cache


def _run_level(prefix: str, count: int, specs: list, kw: dict, x: Array, cache: Cache, new_cache: dict,
               deterministic: bool, shortcut) -> Tuple[Array, int]:
  """Builds one level's blocks from ``(class, args)`` specs (named ``prefix_N``, N counting across levels as in
  Wan), runs them, records their caches in ``new_cache`` and adds ``shortcut(level input)`` when given."""
  blocks = [cls(*args, name=f"{prefix}_{count + j}", **kw) for j, (cls, args) in enumerate(specs)]
  y, level_cache = _run_blocks(blocks, x, cache, deterministic)
  new_cache.update(level_cache)
  if shortcut:
    y = y + shortcut(x, stream_start=cache is None).astype(y.dtype)
  return y, count + len(blocks)


def _middle(dim: int, dropout: float, temporal_kernel: int, kw: dict) -> list:
  """The middle stack shared by encoder and decoder: ``middle_0`` res, ``middle_1`` attention, ``middle_2`` res."""
  return [ResidualBlock(dim, dim, dropout, temporal_kernel, name="middle_0", **kw),
          AttentionBlock(name="middle_1", **kw),
          ResidualBlock(dim, dim, dropout, temporal_kernel, name="middle_2", **kw)]


def _spatial_flags(flags: Sequence[bool] | None, levels: int) -> tuple:
  return (True,) * (levels - 1) if flags is None else tuple(flags)


class Encoder3d(nn.Module):
  """Wan's Encoder3d: conv1, ``downsamples_*`` (res [+attn] blocks and resamples), ``middle_*``, ``head_*``.

  ``z_dim`` is the number of output channels (``VideoVAE`` passes ``2 * z_dim``: mean and log-variance).
  """
  dim: int = 96
  z_dim: int = 32
  dim_mult: Sequence[int] = (1, 2, 4, 4)
  num_res_blocks: int = 2
  attn_scales: Sequence[float] = ()
  temporal_downsample: Sequence[bool] = (False, True, True)
  spatial_downsample: Sequence[bool] | None = None  # None: every level (Wan)
  level_shortcuts: bool = False  # add shortcut_down around every level (not Wan 2.1)
  temporal_kernel: int = 3  # of every 3x3 conv; 1 makes them per-frame 2D convs (not Wan 2.1)
  dropout: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, cache: Cache = None, *, deterministic: bool = True) -> Tuple[Array, Cache]:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    spatial = _spatial_flags(self.spatial_downsample, len(self.dim_mult))
    dims = [self.dim * u for u in (1, *self.dim_mult)]
    k = (self.temporal_kernel, 3, 3)
    x, c1 = CausalConv3d(dims[0], k, name="conv1", **kw)(x, _sub(cache, "conv1"))
    count, scale, c_down = 0, 1.0, {}
    for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
      specs = []  # (class, args) of this level's blocks
      resample = i != len(self.dim_mult) - 1
      for _ in range(self.num_res_blocks):
        specs.append((ResidualBlock, (in_dim, out_dim, self.dropout, self.temporal_kernel)))
        if scale in self.attn_scales:
          specs.append((AttentionBlock, ()))
        in_dim = out_dim
      if resample:
        mode = "downsample3d" if self.temporal_downsample[i] else "downsample2d"
        specs.append((Resample, (out_dim, mode, spatial[i])))
        scale /= 2.0
      shortcut = self.level_shortcuts and functools.partial(
          shortcut_down, channels=out_dim, spatial=resample and spatial[i],
          temporal=resample and self.temporal_downsample[i])
      x, count = _run_level("downsamples", count, specs, kw, x, cache, c_down, deterministic, shortcut)
    x, c_mid = _run_blocks(_middle(dims[-1], self.dropout, self.temporal_kernel, kw), x, cache, deterministic)
    x = nn.silu(RMSNorm(name="head_0", **kw)(x))
    x, c_head = CausalConv3d(self.z_dim, k, name="head_2", **kw)(x, _sub(cache, "head_2"))
    return x, {"conv1": c1, **c_down, **c_mid, "head_2": c_head}


class Decoder3d(nn.Module):
  """Wan's Decoder3d: conv1, ``middle_*``, ``upsamples_*`` (num_res_blocks + 1 res blocks per level, then an
  upsample that halves the channels), ``head_*`` to ``out_channels``.

  Channel schedule (Wan's): ``dims = dim * [dim_mult[-1], *reversed(dim_mult)]``; level ``i`` maps ``dims[i]``
  (halved for ``i > 0``, since the previous upsample output ``dims[i] // 2``) to ``dims[i + 1]``. Level ``i``
  has attention after each residual block when Wan's scale for it, ``2 ** -(levels - 2 - i)``, is in
  ``attn_scales`` and ``level_attention`` (False: none, as diffusers' ``AutoencoderKLWan``).
  """
  dim: int = 96
  z_dim: int = 16
  dim_mult: Sequence[int] = (1, 2, 4, 4)
  num_res_blocks: int = 2
  attn_scales: Sequence[float] = ()
  temporal_upsample: Sequence[bool] = (True, True, False)
  spatial_upsample: Sequence[bool] | None = None  # None: every level (Wan)
  level_shortcuts: bool = False  # add shortcut_up around every level (not Wan 2.1)
  temporal_kernel: int = 3  # of every 3x3 conv; 1 makes them per-frame 2D convs (not Wan 2.1)
  level_attention: bool = True  # False: no attention in the levels whatever attn_scales says (diffusers)
  out_channels: int = 3
  dropout: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, cache: Cache = None, *, deterministic: bool = True) -> Tuple[Array, Cache]:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    levels = len(self.dim_mult)
    spatial = _spatial_flags(self.spatial_upsample, levels)
    dims = [self.dim * u for u in (self.dim_mult[-1], *self.dim_mult[::-1])]
    k = (self.temporal_kernel, 3, 3)
    x, c1 = CausalConv3d(dims[0], k, name="conv1", **kw)(x, _sub(cache, "conv1"))
    x, c_mid = _run_blocks(_middle(dims[0], self.dropout, self.temporal_kernel, kw), x, cache, deterministic)
    count, c_up = 0, {}
    for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
      specs = []  # (class, args) of this level's blocks
      in_dim = in_dim // 2 if i > 0 else in_dim
      resample = i != levels - 1
      scale = 2.0 ** -(levels - 2 - i)  # Wan's count: one octave off the encoder's mirror
      for _ in range(self.num_res_blocks + 1):
        specs.append((ResidualBlock, (in_dim, out_dim, self.dropout, self.temporal_kernel)))
        if self.level_attention and scale in self.attn_scales:
          specs.append((AttentionBlock, ()))
        in_dim = out_dim
      if resample:
        specs.append((Resample, (out_dim, "upsample3d" if self.temporal_upsample[i] else "upsample2d", spatial[i])))
      shortcut = self.level_shortcuts and functools.partial(
          shortcut_up, channels=out_dim // 2 if resample else out_dim, spatial=resample and spatial[i],
          temporal=resample and self.temporal_upsample[i])
      x, count = _run_level("upsamples", count, specs, kw, x, cache, c_up, deterministic, shortcut)
    x = nn.silu(RMSNorm(name="head_0", **kw)(x))
    x, c_head = CausalConv3d(self.out_channels, k, name="head_2", **kw)(x, _sub(cache, "head_2"))
    return x, {"conv1": c1, **c_mid, **c_up, "head_2": c_head}


# ----------------------------------------------------------------------------------------------------------------
# The VAE
# ----------------------------------------------------------------------------------------------------------------

def patchify(x: Array, p: int, pt: int = 1) -> Array:
  """``[B, T, H, W, C] -> [B, 1 + (T-1)/pt, H/p, W/p, C*pt*p*p]``, channel order ``(c, t, r, q)``.

  Spatially this is Wan 2.2's pixel patchify (``(c, r, q)``). In time, frame 0 is repeated ``pt`` times so that
  it fills a patch of its own: the first frame stays encoded alone, and an image is a 1-frame video.
  """
  if p == 1 and pt == 1:
    return x
  if pt > 1:
    x = jnp.concatenate([jnp.repeat(x[:, :1], pt - 1, axis=1), x], axis=1)
  b, t, h, w, c = x.shape
  x = x.reshape(b, t // pt, pt, h // p, p, w // p, p, c).transpose(0, 1, 3, 5, 7, 2, 6, 4)
  return x.reshape(b, t // pt, h // p, w // p, c * pt * p * p)


def unpatchify(x: Array, p: int, pt: int = 1, stream_start: bool = True) -> Array:
  """Inverse of ``patchify`` (at the stream start the repeats of frame 0 are dropped; the last copy is kept)."""
  if p == 1 and pt == 1:
    return x
  b, n, h, w, cpp = x.shape
  c = cpp // (pt * p * p)
  x = x.reshape(b, n, h, w, c, pt, p, p).transpose(0, 1, 5, 2, 7, 3, 6, 4)
  return x.reshape(b, n * pt, h * p, w * p, c)[:, pt - 1 if stream_start else 0:]


def gaussian_kl(mean: Array, logvar: Array) -> Array:
  """KL(N(mean, exp(logvar)) || N(0, I)) summed over all but the batch axis -> ``[B]``."""
  kl = 0.5 * (jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar)
  return jnp.sum(kl.reshape(kl.shape[0], -1), axis=-1)


class VideoVAE(nn.Module):
  """Causal 3D video VAE (Wan 2.1 ``WanVAE_``): ``encoder``, ``conv1`` (1x1x1, 2z -> 2z), ``conv2`` (z -> z),
  ``decoder``. Defaults are Wan 2.1's (8x8 spatial, 4x temporal compression, 16 latent channels).

  Inputs are ``[B, T, H, W, 3]`` in [-1, 1] with ``T = 1 + temporal_compression * k`` and ``H, W`` multiples of
  ``spatial_compression``; outputs (mean, log-variance, reconstructions) are float32 whatever ``dtype`` is.
  """
  dim: int = 96
  z_dim: int = 16
  dim_mult: Sequence[int] = (1, 2, 4, 4)
  num_res_blocks: int = 2
  attn_scales: Sequence[float] = ()
  temporal_downsample: Sequence[bool] = (False, True, True)
  spatial_downsample: Sequence[bool] | None = None  # None: every level halves H and W (Wan)
  patch_size: int = 1
  temporal_patch_size: int = 1
  level_shortcuts: bool = False
  temporal_kernel: int = 3
  decoder_level_attention: bool = True  # False: attn_scales act in the encoder only (diffusers' AutoencoderKLWan)
  dropout: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    spatial = _spatial_flags(self.spatial_downsample, len(self.dim_mult))
    if len(spatial) != len(self.dim_mult) - 1:
      raise ValueError(f"spatial_downsample={spatial} needs len(dim_mult) - 1 = {len(self.dim_mult) - 1} entries")
    if len(self.temporal_downsample) != len(self.dim_mult) - 1:
      raise ValueError(f"temporal_downsample={tuple(self.temporal_downsample)} needs len(dim_mult) - 1 = "
                       f"{len(self.dim_mult) - 1} entries (one per downsampling level)")
    for name in ("patch_size", "temporal_patch_size"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
    if self.level_shortcuts and self.level_shortcut_mismatches():
      raise ValueError("level_shortcuts need channel counts that divide one another; got (where, from, to) "
                       f"{self.level_shortcut_mismatches()}: change dim_mult")
    if self.temporal_kernel < 1 or self.temporal_kernel % 2 == 0:
      raise ValueError(f"temporal_kernel={self.temporal_kernel} must be odd and >= 1 (1, 3, 5, ...)")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    common = dict(dim=self.dim, dim_mult=tuple(self.dim_mult), num_res_blocks=self.num_res_blocks,
                  attn_scales=tuple(self.attn_scales), level_shortcuts=self.level_shortcuts,
                  temporal_kernel=self.temporal_kernel, dropout=self.dropout, **kw)
    self.encoder = Encoder3d(z_dim=2 * self.z_dim, temporal_downsample=tuple(self.temporal_downsample),
                             spatial_downsample=spatial, **common)
    self.conv1 = CausalConv3d(2 * self.z_dim, (1, 1, 1), **kw)
    self.conv2 = CausalConv3d(self.z_dim, (1, 1, 1), **kw)
    out_channels = 3 * self.temporal_patch_size * self.patch_size ** 2
    self.decoder = Decoder3d(z_dim=self.z_dim, temporal_upsample=tuple(self.temporal_downsample[::-1]),
                             spatial_upsample=spatial[::-1], out_channels=out_channels,
                             level_attention=self.decoder_level_attention, **common)

  def level_shortcut_mismatches(self) -> list:
    """``[(where, from_channels, to_channels)]`` of level shortcuts whose channel counts do not divide."""
    levels = len(self.dim_mult)
    spatial = _spatial_flags(self.spatial_downsample, levels)
    fold = lambda k: (4 if spatial[k] else 1) * (2 if self.temporal_downsample[k] else 1)  # resample of level k
    enc = [self.dim * u for u in (1, *self.dim_mult)]
    dec = [self.dim * u for u in (self.dim_mult[-1], *self.dim_mult[::-1])]
    pairs = []
    for i in range(levels):
      pairs.append((f"encoder level {i}", enc[i] * (fold(i) if i < levels - 1 else 1), enc[i + 1]))
      resample = i < levels - 1  # decoder level i mirrors encoder level levels - 2 - i
      out = dec[i + 1] // 2 * fold(levels - 2 - i) if resample else dec[i + 1]
      pairs.append((f"decoder level {i}", dec[i] // 2 if i > 0 else dec[i], out))
    return [(w, a, b) for w, a, b in pairs if a % b and b % a]

  # -- shapes --------------------------------------------------------------------------------------------------
  @property
  def spatial_compression(self) -> int:
    return self.patch_size * 2 ** sum(_spatial_flags(self.spatial_downsample, len(self.dim_mult)))

  @property
  def temporal_compression(self) -> int:
    return self.temporal_patch_size * 2 ** sum(bool(t) for t in self.temporal_downsample)

  def validate_video_shape(self, num_frames: int, height: int, width: int) -> None:
    validate_video_shape(num_frames, height, width, spatial_compression=self.spatial_compression,
                         temporal_compression=self.temporal_compression)

  def latent_shape(self, num_frames: int, height: int, width: int) -> Tuple[int, int, int, int]:
    """``(T, H, W)`` of a video -> ``(T_lat, H_lat, W_lat, z_dim)`` of its latent (validates the shape)."""
    self.validate_video_shape(num_frames, height, width)
    sc, tc = self.spatial_compression, self.temporal_compression
    return 1 + (num_frames - 1) // tc, height // sc, width // sc, self.z_dim

  def _check_video(self, x: Array) -> None:
    if x.ndim != 5 or x.shape[-1] != 3:
      raise ValueError(f"expected a video [B, T, H, W, 3], got shape {tuple(x.shape)}")
    self.validate_video_shape(*x.shape[1:4])

  def _check_latent(self, z: Array) -> None:
    if z.ndim != 5 or z.shape[-1] != self.z_dim:
      raise ValueError(f"expected a latent [B, T, H, W, {self.z_dim}], got shape {tuple(z.shape)}")

  # -- full sequence -------------------------------------------------------------------------------------------
  def _patchify(self, x: Array) -> Array:
    return patchify(x, self.patch_size, self.temporal_patch_size)

  def _unpatchify(self, h: Array, stream_start: bool = True) -> Array:
    return unpatchify(h.astype(jnp.float32), self.patch_size, self.temporal_patch_size, stream_start)

  def _moments(self, h: Array) -> Tuple[Array, Array]:
    h, _ = self.conv1(h)
    mean, logvar = jnp.split(h.astype(jnp.float32), 2, axis=-1)
    return mean, jnp.clip(logvar, LOGVAR_MIN, LOGVAR_MAX)

  def encode(self, x: Array, *, deterministic: bool = True) -> Tuple[Array, Array]:
    """``[B, T, H, W, 3] -> (mean, logvar)``, each ``[B, 1 + (T-1)/tc, H/sc, W/sc, z_dim]``."""
    self._check_video(x)
    h, _ = self.encoder(self._patchify(x), deterministic=deterministic)
    return self._moments(h)

  def decode(self, z: Array, *, deterministic: bool = True) -> Array:
    """``[B, T_lat, h, w, z_dim] -> [B, 1 + tc (T_lat - 1), h sc, w sc, 3]`` (not clipped to [-1, 1])."""
    self._check_latent(z)
    h, _ = self.conv2(z)
    h, _ = self.decoder(h, deterministic=deterministic)
    return self._unpatchify(h)

  def __call__(self, x: Array, *, sample_posterior: bool = True,
               deterministic: bool = True) -> Tuple[Array, Array, Array]:
    """Returns ``(recon, mean, logvar)``; with ``sample_posterior`` draws z using the 'sample' rng stream."""
    mean, logvar = self.encode(x, deterministic=deterministic)
    z = mean
    if sample_posterior:
      z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(self.make_rng("sample"), mean.shape, mean.dtype)
    return self.decode(z, deterministic=deterministic), mean, logvar

  # -- streaming -----------------------------------------------------------------------------------------------
  def _stream(self, block: str, x: Array, chunk: int) -> Array:
    """Runs ``getattr(self, block)`` on ``x[:, :1]`` then on chunks of ``chunk`` frames under ``nn.scan``,
    carrying the causal cache; concatenates the outputs in time."""
    y0, cache = getattr(self, block)(x[:, :1])
    rest = x[:, 1:]
    if not rest.shape[1]:
      return y0
    b, t = rest.shape[:2]
    chunks = rest.reshape(b, t // chunk, chunk, *rest.shape[2:]).swapaxes(0, 1)

    def body(mdl, carry, xs):
      y, carry = getattr(mdl, block)(xs, carry)
      return carry, y

    scan = nn.scan(body, variable_broadcast="params", split_rngs={"params": False})
    _, ys = scan(self, cache, chunks)  # [n, B, frames per chunk, ...]
    ys = ys.swapaxes(0, 1).reshape(b, -1, *ys.shape[3:])
    return jnp.concatenate([y0, ys.astype(y0.dtype)], axis=1)

  def encode_chunked(self, x: Array, *, latents_per_chunk: int = 1) -> Tuple[Array, Array]:
    """``encode`` with memory independent of T: the first frame alone, then ``tc * latents_per_chunk`` frames
    at a time (Wan: 4) with a causal cache. Equals ``encode(x)`` to float tolerance."""
    self._check_video(x)
    tc = self.temporal_compression
    n_lat = (x.shape[1] - 1) // tc
    if n_lat % latents_per_chunk:
      raise ValueError(f"latents_per_chunk={latents_per_chunk} must divide the {n_lat} latent frames after the "
                       "first")
    h = self._stream("encoder", self._patchify(x), tc // self.temporal_patch_size * latents_per_chunk)
    return self._moments(h)

  def decode_chunked(self, z: Array, *, latents_per_chunk: int = 1) -> Array:
    """``decode`` with memory independent of T: latent frame 0 alone, then ``latents_per_chunk`` latent frames
    at a time (Wan: 1) with a causal cache. Equals ``decode(z)`` to float tolerance."""
    self._check_latent(z)
    if (z.shape[1] - 1) % latents_per_chunk:
      raise ValueError(f"latents_per_chunk={latents_per_chunk} must divide the {z.shape[1] - 1} latent frames "
                       "after the first")
    h, _ = self.conv2(z)
    h = self._stream("decoder", h, latents_per_chunk)
    return self._unpatchify(h)

  def decode_continued(self, z: Array, cache: Cache = None) -> Tuple[Array, Cache]:
    """``(video, cache)``: decodes latent frames that continue the ones a previous call decoded, given the cache
    that call returned (``None`` starts the stream: the video is then ``decode(z)``). Chained calls equal one
    ``decode`` of all the latents, so a video generated chunk by chunk decodes as a whole one (tasks.extend)."""
    self._check_latent(z)
    h, _ = self.conv2(z)
    h, cache_out = self.decoder(h, cache)
    return self._unpatchify(h, stream_start=cache is None), cache_out
