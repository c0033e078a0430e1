"""Wan 2.1 VAE weights in both layouts (Wan's original names, diffusers' AutoencoderKLWan) load into vidgen's VideoVAE
and reproduce diffusers' numbers: encode, decode, and the streaming decode of a longer clip. Reads only the
fixtures of tests/fixtures/wan/make_vae.py (a tiny re-randomised AutoencoderKLWan); no torch here."""
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from vidgen.models import vae as V
from vidgen.weights import safetensors_io
from vidgen.weights import streaming
from vidgen.weights import wan_vae

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "wan", "vae")
FILES = {"wan": os.path.join(FIXTURES, "wan", "vae.safetensors"), "diffusers": os.path.join(FIXTURES, "diffusers")}
TOLERANCE = 1e-4  # max |a - b| / max |b|


def rel_error(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  assert a.shape == b.shape, (a.shape, b.shape)
  return float(np.abs(a - b).max() / np.abs(b).max())


def channels_last(x):
  return np.transpose(x, (0, 2, 3, 4, 1))  # PyTorch [B, C, T, H, W] -> vidgen [B, T, H, W, C]


@pytest.fixture(scope="module")
def io():
  with np.load(os.path.join(FIXTURES, "io.npz")) as f:
    return {k: channels_last(f[k]) for k in f.files}


@pytest.fixture(scope="module")
def vae():
  """(model, abstract boxed params, latents_mean, latents_std) from the fixture's diffusers config.json."""
  kwargs, mean, std = wan_vae.vae_config_from_diffusers(FILES["diffusers"])
  model = V.VideoVAE(**kwargs)
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 1, 16, 24, 3))))["params"]
  return model, abstract, mean, std


@pytest.fixture(scope="module")
def run(vae):
  """Jitted entry points shared by both layouts (each compiles once)."""
  model = vae[0]
  apply = lambda method, **kw: jax.jit(lambda p, x: model.apply({"params": p}, x, method=method, **kw))
  return dict(encode=apply(model.encode), decode=apply(model.decode),
              decode_chunked=apply(model.decode_chunked),
              decode_continued=jax.jit(lambda p, z, c: model.apply({"params": p}, z, c, method=model.decode_continued)))


@pytest.fixture(scope="module")
def loaded(vae):
  return {layout: wan_vae.load_vae(path, vae[1]) for layout, path in FILES.items()}


def test_config_from_diffusers_json(vae):
  kwargs, mean, std = wan_vae.vae_config_from_diffusers(FILES["diffusers"])
  assert kwargs == dict(dim=4, z_dim=4, dim_mult=(1, 2, 2, 2), num_res_blocks=1, attn_scales=(),
                        temporal_downsample=(False, True, True), dropout=0.0, decoder_level_attention=False)
  with open(os.path.join(FILES["diffusers"], "config.json")) as f:
    config = json.load(f)
  np.testing.assert_array_equal(mean, np.float32(config["latents_mean"]))
  np.testing.assert_array_equal(std, np.float32(config["latents_std"]))
  assert mean.shape == std.shape == (4,) and mean.dtype == np.float32
  defaults, _, wan_std = wan_vae.vae_config_from_diffusers({"_class_name": "AutoencoderKLWan"})  # Wan 2.1's
  assert defaults["dim"] == 96 and defaults["z_dim"] == 16
  np.testing.assert_array_equal(wan_std, np.float32(wan_vae.WAN21_LATENT_STATS["latents_std"]))
  for bad, field in ((dict(is_residual=True), "is_residual"), (dict(decoder_base_dim=8), "decoder_base_dim"),
                     (dict(new_field=1), "new_field"), (dict(scale_factor_spatial=16), "scale_factor_spatial")):
    with pytest.raises(safetensors_io.WeightsError, match=field):
      wan_vae.vae_config_from_diffusers({**config, **bad})


def test_both_layouts_are_detected_and_fill_the_same_params(loaded):
  assert wan_vae.detect_layout(safetensors_io.TensorFiles(FILES["wan"]).keys()) == "wan"
  assert wan_vae.detect_layout(safetensors_io.TensorFiles(FILES["diffusers"]).keys()) == "diffusers"
  with pytest.raises(safetensors_io.WeightsError, match="not a Wan 2.1 VAE"):
    wan_vae.detect_layout(["blocks.0.weight"])
  with pytest.raises(safetensors_io.WeightsError, match="mixed"):
    wan_vae.detect_layout(["encoder.conv1.weight", "quant_conv.weight"])
  flat = {layout: streaming.flat_params(p) for layout, p in loaded.items()}
  assert flat["wan"].keys() == flat["diffusers"].keys()
  for path, value in flat["wan"].items():
    np.testing.assert_array_equal(value, flat["diffusers"][path], err_msg="/".join(path))
  # Wan's (C, 1, 1, 1) gammas are squeezed, OIDHW kernels transposed to DHWIO.
  files = load_file(FILES["wan"])
  np.testing.assert_array_equal(flat["wan"]["decoder", "upsamples_1", "residual_0", "gamma"],
                                files["decoder.upsamples.1.residual.0.gamma"][:, 0, 0, 0])
  np.testing.assert_array_equal(flat["wan"]["encoder", "conv1", "kernel"],
                                files["encoder.conv1.weight"].transpose(2, 3, 4, 1, 0))


@pytest.mark.parametrize("layout", ["wan", "diffusers"])
def test_numerical_parity_with_diffusers(layout, loaded, io, run):
  params = loaded[layout]
  mean, logvar = run["encode"](params, io["video"])
  errors = {"mean": rel_error(mean, io["mean"]), "logvar": rel_error(logvar, io["logvar"])}
  decoded = run["decode"](params, io["latents"])
  errors["decode"] = rel_error(decoded, io["decoded"])
  errors["decode clipped"] = rel_error(jnp.clip(decoded, -1, 1), np.clip(io["decoded"], -1, 1))  # diffusers' output
  errors["decode_chunked long"] = rel_error(run["decode_chunked"](params, io["latents_long"]), io["decoded_long"])
  pieces, cache, z = [], None, io["latents_long"]
  for start, stop in ((0, 1), (1, 3), (3, 5)):  # latents arriving in pieces (tasks.extend) decode as one stream
    video, cache = run["decode_continued"](params, z[:, start:stop], cache)
    pieces.append(video)
  errors["decode_continued long"] = rel_error(jnp.concatenate(pieces, axis=1), io["decoded_long"])
  print(layout, {k: f"{v:.2e}" for k, v in errors.items()})
  assert max(errors.values()) < TOLERANCE, errors


def test_key_maps_name_the_full_size_wan_checkpoints():
  """The key maps of VideoVAE() (Wan 2.1's config) are exactly the real checkpoints' names and shapes, in both
  layouts (the names of AutoencoderKLWan() and of Wan's WanVAE_, recorded by make_vae.py)."""

  class Headers:  # what streaming.check reads of a TensorFiles
    def __init__(self, shapes):
      self.path, self._shapes = "default_keys.json", {k: tuple(v) for k, v in shapes.items()}

    def keys(self):
      return sorted(self._shapes)

    def shape(self, key):
      return self._shapes[key]

  with open(os.path.join(FIXTURES, "default_keys.json")) as f:
    names = json.load(f)
  model = V.VideoVAE(decoder_level_attention=False)
  abstract = streaming.flat_params(nn.unbox(jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, 1, 16, 16, 3))))["params"]))
  targets = {p: tuple(a.shape) for p, a in abstract.items()}
  for layout in wan_vae.LAYOUTS:
    mapping = wan_vae.key_map(abstract, layout)
    streaming.check(mapping, targets, Headers(names[layout]), layout)
    assert wan_vae.detect_layout(names[layout]) == layout
  diffusers = wan_vae.key_map(abstract, "diffusers")
  assert diffusers["decoder", "upsamples_3", "resample_1", "kernel"].keys == (
      "decoder.up_blocks.0.upsamplers.0.resample.1.weight",)
  assert diffusers["decoder", "upsamples_4", "shortcut", "kernel"].keys == (
      "decoder.up_blocks.1.resnets.0.conv_shortcut.weight",)
  for path in abstract:
    assert wan_vae.wan_key_to_flax_path(wan_vae.flax_path_to_wan_key(path)) == path


def _one_line_error(path, abstract) -> str:
  with pytest.raises(safetensors_io.WeightsError) as info:
    wan_vae.load_vae(path, abstract)
  message = str(info.value)
  assert "\n" not in message and "does not match the model" in message, message
  return message


@pytest.mark.parametrize("layout", ["wan", "diffusers"])
def test_strict_check_names_missing_unexpected_and_misshaped(layout, vae, tmp_path):
  abstract = vae[1]
  source = FILES[layout] if layout == "wan" else os.path.join(FILES[layout], "diffusion_pytorch_model.safetensors")
  tensors = load_file(source)
  victim = "decoder.head.2.bias" if layout == "wan" else "decoder.conv_out.bias"

  def write(name, changed):
    path = str(tmp_path / f"{name}.safetensors")
    save_file(changed, path)
    return path

  message = _one_line_error(write("missing", {k: v for k, v in tensors.items() if k != victim}), abstract)
  assert f"1 missing: {victim}" in message and "the model: VideoVAE dim=4, z_dim=4" in message, message
  message = _one_line_error(write("unexpected", {**tensors, "decoder.extra.weight": np.zeros(3, np.float32)}),
                            abstract)
  assert "1 unexpected: decoder.extra.weight" in message, message
  message = _one_line_error(write("misshaped", {**tensors, victim: np.zeros(5, np.float32)}), abstract)
  assert f"1 misshaped: {victim} (5,) (the model wants (3,) for decoder/head_2/bias)" in message, message
  kernel = "decoder.head.2.weight" if layout == "wan" else "decoder.conv_out.weight"
  message = _one_line_error(write("rank", {**tensors, kernel: tensors[kernel][:, :, 0]}), abstract)
  assert f"1 misshaped: {kernel} (3, 4, 3, 3)" in message, message
  # A model of another size: the error says which model was expected and what the checkpoint holds.
  other = V.VideoVAE(dim=8, z_dim=4, dim_mult=(1, 2, 2, 2), num_res_blocks=1, decoder_level_attention=False)
  wider = jax.eval_shape(lambda: other.init(jax.random.key(0), jnp.zeros((1, 1, 16, 24, 3))))["params"]
  message = _one_line_error(source, wider)
  assert "misshaped" in message and "VideoVAE dim=8" in message and "the checkpoint" in message, message
  assert "dim=4" in message, message


def test_sharded_load_places_every_leaf(vae):
  """With shardings (here: replicated on the 8 faked devices) every loaded leaf lands on its sharding."""
  mesh = jax.make_mesh((8,), ("fsdp",), axis_types=(jax.sharding.AxisType.Auto,))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  shardings = jax.tree.map(lambda _: replicated, nn.unbox(vae[1]))
  params = wan_vae.load_vae(FILES["wan"], vae[1], shardings, dtype_of=lambda path: jnp.bfloat16)
  leaves = jax.tree.leaves(params)
  assert leaves and all(x.sharding == replicated and x.dtype == jnp.bfloat16 for x in leaves)
