"""Wan 2.1 DiT checkpoints into vidgen's DiT and back (vidgen/weights/wan_dit.py), against the fixture that
tests/fixtures/wan/make_dit.py writes from a tiny random diffusers WanTransformer3DModel (no torch here)."""
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from vidgen.models import dit as dit_lib
from vidgen.weights import streaming
from vidgen.weights import wan_dit
from vidgen.weights.safetensors_io import WeightsError

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "wan", "dit")
FILE = "diffusion_pytorch_model.safetensors"
LAYOUTS = ("diffusers", "wan")
EXPECTED_KWARGS = dict(dim=32, num_heads=2, ffn_dim=48, freq_dim=64, depth=2, in_dim=8, out_dim=4,
                       patch_size=(1, 2, 2), qk_norm=True, cross_attn_norm=True, eps=1e-6, text_pool=False)


def _io():
  return dict(np.load(os.path.join(FIXTURE, "io.npz")))


def _model(layout, scan=False, **kw):
  return dit_lib.DiT(**wan_dit.dit_kwargs_from_config(os.path.join(FIXTURE, layout)), scan_blocks=scan, **kw)


def _rel(got, want):
  return float(np.abs(np.asarray(got, np.float64) - want).max() / np.abs(want).max())


def _run(model, params, io):
  """velocity [B, C, F, H, W] like diffusers, the time embedding, time projection and block 0's output."""
  x = jnp.asarray(io["hidden_states"].transpose(0, 2, 3, 4, 1))  # diffusers [B, C, F, H, W] -> [B, F, H, W, C]
  names = ("time_embedding_2", "time_projection", "blocks_0", "blocks")
  v, state = model.apply({"params": params}, x, jnp.asarray(io["t"]), jnp.asarray(io["context"]),
                         context_mask=None, capture_intermediates=lambda m, _: m.name in names)
  inter = state["intermediates"]
  # A scanned DiT captures each layer's output stacked on a leading axis.
  block0 = inter["blocks"]["__call__"][0][0] if model.scan_blocks else inter["blocks_0"]["__call__"][0]
  return dict(velocity=np.asarray(v).transpose(0, 4, 1, 2, 3), temb=inter["time_embedding_2"]["__call__"][0],
              timestep_proj=inter["time_projection"]["__call__"][0], block0=block0)


def test_config_both_layouts():
  for layout in LAYOUTS:
    assert wan_dit.dit_kwargs_from_config(os.path.join(FIXTURE, layout)) == EXPECTED_KWARGS
    assert wan_dit.dit_kwargs_from_config(os.path.join(FIXTURE, layout, "config.json")) == EXPECTED_KWARGS


def test_config_refusals():
  with open(os.path.join(FIXTURE, "wan", "config.json")) as f:
    wan = json.load(f)
  with open(os.path.join(FIXTURE, "diffusers", "config.json")) as f:
    dif = json.load(f)
  cases = [(dict(wan, model_type="i2v"), "model_type='i2v'"), (dict(wan, window_size=[4, 4]), "window_size"),
           (dict(dif, image_dim=1280), "image_dim=1280"), (dict(dif, qk_norm="rms_norm"), "qk_norm='rms_norm'"),
           (dict(dif, sliding_window=8), "sliding_window"), ({"hidden_size": 8}, "not a Wan 2.1 DiT config")]
  for config, needle in cases:
    with pytest.raises(WeightsError) as e:
      wan_dit.dit_kwargs_from_config(config)
    assert needle in str(e.value) and "\n" not in str(e.value) and "wrong type" not in str(e.value), str(e.value)


def test_detect_layout():
  for layout in LAYOUTS:
    assert wan_dit.detect_layout(load_file(os.path.join(FIXTURE, layout, FILE))) == layout
  with pytest.raises(WeightsError, match="strip that prefix"):
    wan_dit.detect_layout(["model.diffusion_model.x.weight", "model.diffusion_model.y.weight"])


@pytest.mark.parametrize("scan", [False, True], ids=["unscanned", "scanned"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_parity_with_diffusers(layout, scan):
  io = _io()
  model = _model(layout, scan)
  got = _run(model, wan_dit.load_dit(os.path.join(FIXTURE, layout), model), io)
  errors = {name: _rel(got[name], io[name]) for name in got}
  assert max(errors.values()) <= 1e-5, errors
  if "wan_velocity" in io:  # the fixture was made with --wan-src: Wan's own WanModel, float64 sinusoid and RoPE
    model = _model(layout, scan, reference_precision=True)
    got = _run(model, wan_dit.load_dit(os.path.join(FIXTURE, layout), model), io)
    errors = {name: _rel(got[name], io["wan_" + name]) for name in got}
    assert max(errors.values()) <= 2e-6, errors


@pytest.mark.parametrize("scan", [False, True], ids=["unscanned", "scanned"])
def test_round_trip_both_layouts(scan):
  stored = {layout: load_file(os.path.join(FIXTURE, layout, FILE)) for layout in LAYOUTS}
  for layout in LAYOUTS:
    params = wan_dit.load_dit(os.path.join(FIXTURE, layout), _model(layout, scan))
    leaves = streaming.flat_params(params)
    assert ("blocks", "modulation") in leaves if scan else ("blocks_1", "modulation") in leaves
    for out_layout in LAYOUTS:  # back to the same layout, and across to the other
      back = wan_dit.to_state_dict(params, out_layout)
      want = stored[out_layout]
      assert sorted(back) == sorted(want)
      for key in want:
        assert back[key].shape == want[key].shape and back[key].dtype == want[key].dtype, key
        np.testing.assert_array_equal(back[key], want[key], err_msg=key)


def _edited(tmp_path, layout, edit):
  folder = tmp_path / layout
  shutil.copytree(os.path.join(FIXTURE, layout), folder)
  tensors = load_file(str(folder / FILE))
  edit(tensors)
  save_file(tensors, str(folder / FILE))
  return str(folder)


def _error(path, model):
  with pytest.raises(WeightsError) as e:
    wan_dit.load_dit(path, model)
  message = str(e.value)
  assert "\n" not in message, message
  return message


@pytest.mark.parametrize("scan", [False, True], ids=["unscanned", "scanned"])
def test_strict_check(tmp_path, scan):
  model = _model("wan", scan)
  missing = _error(_edited(tmp_path / "m", "wan", lambda t: t.pop("blocks.1.cross_attn.k.bias")), model)
  assert "1 missing: blocks.1.cross_attn.k.bias" in missing and "unexpected" not in missing
  assert "dim=32" in missing and "num_layers=2" in missing  # the config the model expects, and the file's
  extra = _error(_edited(tmp_path / "e", "diffusers",
                         lambda t: t.update({"blocks.0.attn1.to_added.weight": np.zeros(2, np.float32)})), model)
  assert "1 unexpected: blocks.0.attn1.to_added.weight" in extra and "missing" not in extra
  misshaped = _error(_edited(tmp_path / "s", "wan", lambda t: t.update(
      {"blocks.0.ffn.0.weight": np.zeros((40, 32), np.float32)})), model)
  assert "1 misshaped: blocks.0.ffn.0.weight (40, 32)" in misshaped and "ffn/fc1/kernel" in misshaped


def test_image_to_video_and_text_pool_refused(tmp_path):
  i2v = _edited(tmp_path, "wan", lambda t: t.update({"img_emb.proj.1.weight": np.zeros((4, 4), np.float32)}))
  assert "image-to-video" in _error(i2v, _model("wan"))
  assert "no mapping" in _error(os.path.join(FIXTURE, "wan"), dit_lib.DiT(**{**EXPECTED_KWARGS, "text_pool": True}))
  params = wan_dit.load_dit(os.path.join(FIXTURE, "wan"), _model("wan"))
  with pytest.raises(WeightsError, match="text_pool"):
    wan_dit.to_state_dict({**params, "text_pool_embedding_0": {"kernel": np.zeros((2, 2))}}, "wan")


def test_load_onto_shardings_and_dtypes():
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
  model = _model("diffusers", scan=True)
  abstract = wan_dit.abstract_params(model, text_dim=24)
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  shardings = jax.tree_util.tree_map(lambda _: replicated, abstract)
  params = wan_dit.load_dit(os.path.join(FIXTURE, "diffusers", FILE), abstract, shardings=shardings,
                            dtype_of=lambda path: jnp.float32 if "modulation" in path[-1] else jnp.bfloat16)
  leaves = streaming.flat_params(params)
  assert leaves[("blocks", "self_attn", "q", "kernel")].dtype == jnp.bfloat16
  assert leaves[("blocks", "modulation")].dtype == jnp.float32
  assert all(a.sharding == replicated for a in leaves.values())


def test_from_pretrained_runs_like_wan():
  io = _io()
  from vidgen.models import wan
  model, params = wan.dit_from_pretrained(os.path.join(FIXTURE, "wan"), remat="full")
  assert model.reference_precision and not model.text_pool
  got = _run(model, params, io)
  want = io["wan_velocity"] if "wan_velocity" in io else io["velocity"]
  assert _rel(got["velocity"], want) <= (2e-6 if "wan_velocity" in io else 1e-5)


def test_precise_sinusoid_and_rope_tables():
  from vidgen.models import layers
  from vidgen.models import rope
  t = np.concatenate([[0.0, 0.5, 999.0, 1000.0], np.random.default_rng(0).uniform(0, 1000, 252)]).astype(np.float32)
  args = np.outer(t.astype(np.float64), 10000.0 ** (-np.arange(128) / 128))
  want = np.concatenate([np.cos(args), np.sin(args)], axis=-1)
  assert np.abs(np.asarray(layers.sinusoidal_embedding(jnp.asarray(t), 256, precise=True)) - want).max() < 3e-7
  assert np.abs(np.asarray(layers.sinusoidal_embedding(jnp.asarray(t), 256)) - want).max() < 1e-4
  angles = rope.rope_freqs((3, 30, 52), 128)
  cos, sin = rope.rope_freqs((3, 30, 52), 128, cos_sin=True)
  assert cos.dtype == sin.dtype == jnp.float32 and cos.shape == angles.shape
  np.testing.assert_allclose(cos, np.cos(np.asarray(angles)), atol=5e-6)
  x = jax.random.normal(jax.random.key(0), (1, angles.shape[0], 2, 128))
  np.testing.assert_allclose(rope.apply_rope(x, (cos, sin)), rope.apply_rope(x, angles), atol=2e-5)
