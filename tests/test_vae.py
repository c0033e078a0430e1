"""Tests for the causal 3D video VAE (vidgen/models/vae.py). Tiny shapes: every test runs in seconds on CPU."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vidgen.models import vae as V
from vidgen.weights import wan_vae

# Tiny config: 4x spatial (8x with patch 2), 4x temporal compression.
TINY = dict(dim=8, z_dim=4, dim_mult=(1, 2, 2), num_res_blocks=1, temporal_downsample=(True, True))
H = W = 16


# The tests are compile-bound on CPU: XLA's backend optimisation level 0 halves compile times of these tiny models.
_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def _key(seed):
  # 'rbg' keys compile parameter init ~5x faster than threefry on CPU; the model does not care which is used.
  return jax.random.key(seed, impl="rbg")


def _video(seed, b, t, h=H, w=W):
  return jax.random.uniform(jax.random.PRNGKey(seed), (b, t, h, w, 3), minval=-1.0, maxval=1.0)


class Tiny:
  """A tiny VAE with params and jitted entry points (compiled once per input shape, shared across tests)."""

  def __init__(self, patch_size):
    self.model = V.VideoVAE(**TINY, patch_size=patch_size)
    self.params = _jit(self.model.init)({"params": _key(0)}, _video(0, 1, 1))["params"]
    m = self.model
    self.encode = _jit(lambda p, x: m.apply({"params": p}, x, method=m.encode))
    self.decode = _jit(lambda p, z: m.apply({"params": p}, z, method=m.decode))
    self.encode_chunked = _jit(lambda p, x, n=1: m.apply({"params": p}, x, latents_per_chunk=n,
                                                            method=m.encode_chunked), static_argnums=2)
    self.decode_chunked = _jit(lambda p, z, n=1: m.apply({"params": p}, z, latents_per_chunk=n,
                                                            method=m.decode_chunked), static_argnums=2)


@pytest.fixture(scope="module")
def tiny():
  return Tiny(patch_size=1)


@pytest.fixture(scope="module")
def tiny_p2():
  return Tiny(patch_size=2)


@pytest.mark.parametrize("patch_size", [1, 2])
@pytest.mark.parametrize("num_frames", [1, 5, 9])
def test_output_shapes(patch_size, num_frames):
  model = V.VideoVAE(**TINY, patch_size=patch_size)
  x = jax.ShapeDtypeStruct((2, num_frames, H, W, 3), jnp.float32)
  (recon, mean, logvar), variables = jax.eval_shape(
      lambda x: model.init_with_output({"params": _key(0), "sample": _key(1)}, x), x)
  sc = 4 * patch_size
  assert model.spatial_compression == sc and model.temporal_compression == 4
  lat = (2, 1 + (num_frames - 1) // 4, H // sc, W // sc, 4)
  assert mean.shape == logvar.shape == lat
  assert model.latent_shape(num_frames, H, W) == lat[1:]
  assert recon.shape == (2, num_frames, H, W, 3) and recon.dtype == jnp.float32
  # Patch size only changes the first and last conv.
  variables = nn.unbox(variables)
  assert variables["params"]["encoder"]["conv1"]["kernel"].shape == (3, 3, 3, 3 * patch_size**2, 8)
  assert variables["params"]["decoder"]["head_2"]["kernel"].shape == (3, 3, 3, 8, 3 * patch_size**2)


def test_bf16_compute_keeps_float32_params_and_outputs():
  model = V.VideoVAE(**TINY, dtype=jnp.bfloat16)
  x = jax.ShapeDtypeStruct((1, 5, H, W, 3), jnp.float32)
  (recon, mean, _), variables = jax.eval_shape(
      lambda x: model.init_with_output({"params": _key(0), "sample": _key(1)}, x), x)
  assert {a.dtype for a in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  assert recon.dtype == mean.dtype == jnp.float32


def test_patchify_roundtrip_and_order():
  x = jnp.arange(2 * 1 * 4 * 4 * 3, dtype=jnp.float32).reshape(2, 1, 4, 4, 3)
  y = V.patchify(x, 2)
  assert y.shape == (2, 1, 2, 2, 12)
  np.testing.assert_array_equal(V.unpatchify(y, 2), x)
  # Wan 2.2 channel order (c, r, q): channel c*4 + r*2 + q holds pixel (2h + q, 2w + r, c).
  c, r, q = 1, 1, 0
  np.testing.assert_array_equal(y[0, 0, 1, 0, c * 4 + r * 2 + q], x[0, 0, 2 + q, 0 + r, c])


def test_temporal_patchify_keeps_the_first_frame_alone():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 9, 4, 4, 3))
  y = V.patchify(x, 2, 4)
  assert y.shape == (2, 3, 2, 2, 48)
  np.testing.assert_array_equal(V.unpatchify(y, 2, 4), x)
  # Patch 0 is frame 0 repeated: nothing of frames 1.. leaks into latent frame 0. Order (c, t, r, q).
  for t in range(4):
    np.testing.assert_array_equal(y[:, 0, :, :, t * 4::16], V.patchify(x[:, :1], 2)[:, 0, :, :, ::4])
  c, t, r, q = 2, 3, 1, 0
  np.testing.assert_array_equal(y[0, 2, 1, 0, c * 16 + t * 4 + r * 2 + q], x[0, 4 + t + 1, 2 + q, r, c])


def _assert_causal_and_streams_exactly(model, latent_grid):
  """Latent frame 2 (frames 5..8) does not reach back; chunked encode/decode equal the full passes."""
  x = _video(6, 1, 9)
  params = _jit(model.init)({"params": _key(0)}, x)["params"]
  run = lambda method, v: _jit(lambda p, v: model.apply({"params": p}, v, method=getattr(model, method)))(params, v)
  mean = run("encode", x)[0]
  assert mean.shape == (1, *latent_grid, 4)
  mean2 = run("encode", x.at[:, 5].set(-x[:, 5]))[0]
  np.testing.assert_array_equal(mean[:, :2], mean2[:, :2])
  assert not np.allclose(mean[:, 2], mean2[:, 2])
  np.testing.assert_allclose(run("encode_chunked", x)[0], mean, atol=1e-5, rtol=1e-5)
  full = run("decode", mean)
  assert full.shape == x.shape
  np.testing.assert_allclose(run("decode_chunked", mean), full, atol=1e-5, rtol=1e-5)
  np.testing.assert_array_equal(run("decode", mean.at[:, 2].add(1.0))[:, :5], full[:, :5])
  _assert_decode_continued_is_one_decode(model, params, mean, full)


def _assert_decode_continued_is_one_decode(model, params, z, full):
  """decode_continued on latent frames [0, k) then [k, T) with the cache returned in between equals decode(z)."""
  continued = _jit(lambda p, z, c: model.apply({"params": p}, z, c, method=model.decode_continued))
  for k in range(1, z.shape[1]):
    head, cache = continued(params, z[:, :k], None)
    tail, _ = continued(params, z[:, k:], cache)
    assert head.shape[1] == 1 + 4 * (k - 1) and tail.shape[1] == 4 * (z.shape[1] - k)
    np.testing.assert_allclose(np.concatenate([head, tail], 1), full, atol=1e-5, rtol=1e-5)


def test_temporal_patch_vae_is_causal_and_streams_exactly():
  model = V.VideoVAE(dim=8, z_dim=4, dim_mult=(1, 2), num_res_blocks=1, temporal_downsample=(False,),
                     patch_size=2, temporal_patch_size=4)
  assert model.temporal_compression == 4 and model.spatial_compression == 4
  _assert_causal_and_streams_exactly(model, (3, 4, 4))


def test_level_shortcuts_invert_and_keep_frame_zero_alone():
  x = _video(7, 2, 5, 8, 8)
  for temporal in (False, True):
    f = (8 if temporal else 4) * 3
    down = V.shortcut_down(x, f, True, temporal)
    assert down.shape == (2, 3 if temporal else 5, 4, 4, f)
    np.testing.assert_array_equal(V.shortcut_up(down, 3, True, temporal), x)  # a lossless fold, then unfolded
  # Fewer channels: adjacent channels of the (c, row, column) fold are averaged.
  np.testing.assert_allclose(V.shortcut_down(x, 6, True, False)[0, 0, 0, 0, 0], x[0, 0, 0, :2, 0].mean(), atol=1e-6)
  # Frame 0 is resampled alone: changing frame 1 leaves latent frame 0 as it was.
  a, b = (V.shortcut_down(v, 12, True, True) for v in (x, x.at[:, 1].set(0.0)))
  np.testing.assert_array_equal(a[:, 0], b[:, 0])
  with pytest.raises(ValueError, match="cannot map 12 channels to 5"):
    V.shortcut_down(x, 5, True, False)


@pytest.mark.parametrize("kw", [dict(temporal_downsample=(True, True)),
                                dict(temporal_downsample=(False, False), temporal_patch_size=4, temporal_kernel=1)],
                         ids=["strided_time", "temporal_patch_per_frame_convs"])
def test_vae_with_level_shortcuts_is_causal_and_streams_exactly(kw):
  _assert_causal_and_streams_exactly(V.VideoVAE(**dict(TINY, **kw), patch_size=2, level_shortcuts=True), (3, 2, 2))


def test_causal_conv_impls_agree():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 7, 6, 6, 5))
  for kw in (dict(kernel_size=(3, 3, 3)), dict(kernel_size=(3, 1, 1), strides=(2, 1, 1), padding=(0, 0, 0))):
    a = V.CausalConv3d(4, impl="conv2d", **kw)
    b = V.CausalConv3d(4, impl="conv3d", **kw)
    params = a.init(_key(0), x)
    ya, ca = a.apply(params, x)
    yb, _ = b.apply(params, x)
    np.testing.assert_allclose(ya, yb, atol=1e-5)
  assert ya.shape == (2, 3, 6, 6, 4) and ca is None


def test_encoder_is_causal(tiny):
  x = _video(1, 1, 9)
  mean, _ = tiny.encode(tiny.params, x)
  x2 = x.at[:, 5].set(-x[:, 5])  # frame 5 belongs to latent frame 2 (frames 5..8)
  mean2, _ = tiny.encode(tiny.params, x2)
  np.testing.assert_array_equal(mean[:, :2], mean2[:, :2])
  assert not np.allclose(mean[:, 2], mean2[:, 2])


def test_decoder_is_causal(tiny):
  z = jax.random.normal(jax.random.PRNGKey(2), (1, 3, 4, 4, 4))
  x = tiny.decode(tiny.params, z)
  assert x.shape == (1, 9, H, W, 3)
  for j, first_frame in ((1, 1), (2, 5)):  # latent frame j decodes to frames 1 + 4 (j - 1) .. 4 j
    x2 = tiny.decode(tiny.params, z.at[:, j].add(1.0))
    np.testing.assert_array_equal(x[:, :first_frame], x2[:, :first_frame])
    assert not np.allclose(x[:, first_frame], x2[:, first_frame])


def test_encode_chunked_matches_full(tiny):
  x = _video(3, 1, 9)
  mean, logvar = tiny.encode(tiny.params, x)
  for n in (1, 2):
    mean_c, logvar_c = tiny.encode_chunked(tiny.params, x, n)
    np.testing.assert_allclose(mean_c, mean, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(logvar_c, logvar, atol=1e-5, rtol=1e-5)


def test_decode_chunked_matches_full(tiny):
  z = jax.random.normal(jax.random.PRNGKey(4), (1, 3, 4, 4, 4))
  x = tiny.decode(tiny.params, z)
  np.testing.assert_allclose(tiny.decode_chunked(tiny.params, z), x, atol=1e-5, rtol=1e-5)


def test_decode_continued_is_one_decode(tiny):
  z = jax.random.normal(jax.random.PRNGKey(4), (1, 3, 4, 4, 4))
  _assert_decode_continued_is_one_decode(tiny.model, tiny.params, z, tiny.decode(tiny.params, z))


def test_image_roundtrip(tiny_p2):
  img = _video(5, 1, 1)  # an image is a 1-frame video
  mean, logvar = tiny_p2.encode(tiny_p2.params, img)
  assert mean.shape == logvar.shape == (1, 1, 2, 2, 4)
  recon = tiny_p2.decode(tiny_p2.params, mean)
  assert recon.shape == (1, 1, H, W, 3) and np.isfinite(recon).all()


def test_validate_video_shape_errors():
  V.validate_video_shape(9, 64, 32)
  with pytest.raises(ValueError, match=r"num_frames=8 must be 1 \+ 4k.*nearest allowed: 5 or 9"):
    V.validate_video_shape(8, 64, 64)
  with pytest.raises(ValueError, match=r"height=20 must be a positive multiple of the spatial compression 8"):
    V.validate_video_shape(5, 20, 64)
  with pytest.raises(ValueError, match=r"num_frames=0.*width=4"):
    V.validate_video_shape(0, 64, 4)
  model = V.VideoVAE(**TINY, patch_size=2)
  with pytest.raises(ValueError, match="multiple of the spatial compression 8"):
    model.latent_shape(5, 16, 12)
  with pytest.raises(ValueError, match="num_frames=6"):
    jax.eval_shape(lambda x: model.init({"params": _key(0)}, x), jax.ShapeDtypeStruct((1, 6, 16, 16, 3), jnp.float32))
  with pytest.raises(ValueError, match="temporal_downsample"):
    V.VideoVAE(**{**TINY, "temporal_downsample": (True,)}).init(_key(0), jnp.zeros((1, 1, 16, 16, 3)))


def test_adam_reduces_reconstruction_error(tiny):
  model, params = tiny.model, tiny.params
  # A smooth moving pattern (white noise would only teach the model to predict its mean).
  t, h, w, c = np.meshgrid(np.arange(5), np.arange(H), np.arange(W), np.arange(3), indexing="ij")
  x = jnp.asarray(np.stack([0.8 * np.sin(2 * np.pi * (h / H * (1 + b) + w / W + t / 8 * (1 + b)) + 2 * c)
                            for b in range(2)]), jnp.float32)
  opt = optax.adam(1e-2)

  @_jit
  def step(params, opt_state, key):
    def loss_fn(p):
      recon, mean, logvar = model.apply({"params": p}, x, rngs={"sample": key})
      mse = jnp.mean(jnp.square(recon - x))
      return mse + 1e-6 * jnp.mean(V.gaussian_kl(mean, logvar)), mse
    (_, mse), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = opt.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, mse

  opt_state = opt.init(params)
  losses = []
  for i in range(12):
    params, opt_state, mse = step(params, opt_state, jax.random.PRNGKey(i))
    losses.append(float(mse))
  assert np.isfinite(losses).all()
  # Below half the data variance: it reconstructs the pattern, not just its mean.
  assert losses[-1] < 0.3 * losses[0] and losses[-1] < 0.5 * float(jnp.var(x)), losses


# Known Wan 2.1 VAE (Wan2.1_VAE.pth) state-dict entries and their PyTorch shapes.
WAN_KEYS = {
    "conv1.weight": (32, 32, 1, 1, 1),
    "conv2.weight": (16, 16, 1, 1, 1),
    "encoder.conv1.weight": (96, 3, 3, 3, 3),
    "encoder.downsamples.0.residual.0.gamma": (96, 1, 1, 1),
    "encoder.downsamples.0.residual.2.weight": (96, 96, 3, 3, 3),
    "encoder.downsamples.2.resample.1.weight": (96, 96, 3, 3),
    "encoder.downsamples.3.shortcut.weight": (192, 96, 1, 1, 1),
    "encoder.downsamples.5.time_conv.weight": (192, 192, 3, 1, 1),
    "encoder.downsamples.8.time_conv.bias": (384,),
    "encoder.middle.1.norm.gamma": (384, 1, 1),
    "encoder.middle.1.to_qkv.weight": (1152, 384, 1, 1),
    "encoder.middle.1.proj.weight": (384, 384, 1, 1),
    "encoder.head.0.gamma": (384, 1, 1, 1),
    "encoder.head.2.weight": (32, 384, 3, 3, 3),
    "decoder.conv1.weight": (384, 16, 3, 3, 3),
    "decoder.middle.2.residual.6.weight": (384, 384, 3, 3, 3),
    "decoder.upsamples.3.time_conv.weight": (768, 384, 3, 1, 1),
    "decoder.upsamples.3.resample.1.weight": (192, 384, 3, 3),
    "decoder.upsamples.4.shortcut.weight": (384, 192, 1, 1, 1),
    "decoder.upsamples.7.time_conv.weight": (768, 384, 3, 1, 1),
    "decoder.upsamples.11.resample.1.weight": (96, 192, 3, 3),
    "decoder.upsamples.12.residual.2.weight": (96, 96, 3, 3, 3),
    "decoder.upsamples.14.residual.6.weight": (96, 96, 3, 3, 3),
    "decoder.head.0.gamma": (96, 1, 1, 1),
    "decoder.head.2.weight": (3, 96, 3, 3, 3),
}


def test_wan_name_mapping_matches_default_tree():
  model = V.VideoVAE()  # Wan 2.1 defaults
  params = nn.unbox(jax.eval_shape(lambda x: model.init({"params": _key(0)}, x),
                                   jax.ShapeDtypeStruct((1, 1, 16, 16, 3), jnp.float32))["params"])
  assert wan_vae.wan_key_to_flax_path("decoder.upsamples.3.resample.1.weight") == (
      "decoder", "upsamples_3", "resample_1", "kernel")
  flat = {tuple(k.key for k in path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(params)}
  for key, shape in WAN_KEYS.items():
    path = wan_vae.wan_key_to_flax_path(key)
    assert path in flat, key
    assert wan_vae.wan_tensor_to_flax(key, np.zeros(shape, np.float32)).shape == flat[path].shape, key
  # Nothing beyond Wan's module tree: the decoder has 15 upsamples blocks, the encoder 11 downsamples blocks.
  assert sorted(params["decoder"], key=str) == sorted(
      ["conv1", "head_0", "head_2", *[f"middle_{i}" for i in range(3)], *[f"upsamples_{i}" for i in range(15)]])
  assert len([k for k in params["encoder"] if k.startswith("downsamples_")]) == 11
  converted = wan_vae.params_from_state_dict({k: np.zeros(s, np.float32) for k, s in WAN_KEYS.items()})
  assert converted["decoder"]["upsamples_3"]["resample_1"]["kernel"].shape == (3, 3, 384, 192)


def test_fsdp_mesh_shards_the_vae_conv_kernels():
  """On fsdp=8 under VAE_RULES every conv kernel is split over fsdp: its output channels, else (a head conv with
  3 p^2 = 12 outputs) its input channels; one that 8 divides neither way (conv2, 4 -> 4) is replicated, and jit
  accepts the shardings. Per-device parameter bytes are then a small fraction of the whole VAE."""
  import ml_collections
  from tests import helpers
  from vidgen.parallel import mesh as mesh_lib
  from vidgen.parallel import rules
  from vidgen.parallel import sharding

  config = helpers.load_config("test")
  v, d = config.vae, config.data
  vae = V.VideoVAE(dim=v.dim, z_dim=v.z_dim, dim_mult=tuple(v.dim_mult), num_res_blocks=v.num_res_blocks,
                   attn_scales=tuple(v.attn_scales), temporal_downsample=tuple(v.temporal_downsample),
                   spatial_downsample=tuple(v.spatial_downsample), patch_size=v.patch_size,
                   temporal_patch_size=v.temporal_patch_size, level_shortcuts=v.level_shortcuts,
                   temporal_kernel=v.temporal_kernel)
  init = lambda r: vae.init({"params": r, "sample": r}, jnp.zeros((1, d.num_frames, d.height, d.width, 3)))["params"]
  mesh = mesh_lib.create_mesh(ml_collections.ConfigDict({"data": 1, "fsdp": 8, "tensor": 1}))
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules.VAE_RULES):
    boxed = jax.eval_shape(init, _key(0))
    shardings = sharding.logical_shardings(boxed, mesh, rules.VAE_RULES)
    jax.jit(lambda r: nn.unbox(init(r)), out_shardings=shardings).lower(_key(0))  # no indivisible split
  params = nn.unbox(boxed)
  assert jax.tree.structure(shardings) == jax.tree.structure(params)
  flat = {tuple(k.key for k in path): (leaf, s) for (path, leaf), s in zip(
      jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(shardings))}
  kernels = {p: v for p, v in flat.items() if p[-1] == "kernel"}
  assert len(kernels) > 20
  for path, (leaf, s) in kernels.items():
    spec = tuple(s.spec) + (None,) * (leaf.ndim - len(s.spec))
    shard = s.shard_shape(leaf.shape)
    c_in, c_out = leaf.shape[-2:]
    axis = -1 if c_out % 8 == 0 else -2 if c_in % 8 == 0 else None
    if axis is None:
      assert "fsdp" not in spec and shard == leaf.shape, (path, spec)
      continue
    assert spec[axis] == "fsdp" and spec.count("fsdp") == 1, (path, spec)
    assert shard[axis] * 8 == leaf.shape[axis] and shard[:axis] == leaf.shape[:axis], (path, shard)
  assert tuple(kernels["decoder", "head_2", "kernel"][1].spec)[-2:] == ("fsdp", None)  # 12 outputs: inputs split
  assert "fsdp" not in tuple(kernels["conv2", "kernel"][1].spec)  # 4 -> 4: replicated
  whole = sum(leaf.size * leaf.dtype.itemsize for leaf, _ in flat.values())
  per_device = sum(np.prod(s.shard_shape(leaf.shape)) * leaf.dtype.itemsize for leaf, s in flat.values())
  assert per_device < 0.2 * whole, (per_device, whole)


def test_logical_shardings_match_flax_where_the_mesh_divides():
  from jax.sharding import PartitionSpec as P
  from vidgen.parallel import rules
  from vidgen.parallel import sharding
  mesh_shape = {"data": 2, "fsdp": 8, "context": 1, "tensor": 2}
  spec = lambda names, shape, r=rules.VAE_RULES: sharding.logical_to_mesh_spec(names, shape, mesh_shape, r)
  for names, shape in [(V.DHWIO_AXES, (3, 3, 3, 16, 32)), (V.HWIO_AXES, (3, 3, 16, 8)), (V.CHANNEL_AXES, (16,))]:
    assert spec(names, shape) == nn.logical_to_mesh_axes(names, rules.VAE_RULES)
  dit = (("embed", "mlp"), (64, 128)), (("activation_batch", "activation_length", None), (16, 8, 4))
  for names, shape in dit:
    assert spec(names, shape, rules.DIT_RULES) == nn.logical_to_mesh_axes(names, rules.DIT_RULES)
  assert spec(V.DHWIO_AXES, (3, 3, 3, 96, 3)) == P(None, None, None, "fsdp", None)  # the output axis is 3
  assert spec(V.DHWIO_AXES, (1, 1, 1, 12, 4)) == P(None, None, None, None, None)  # neither divides: replicated
  assert spec(("activation_batch",), (4,)) == P(None)  # data x fsdp = 16 does not divide 4
