"""The attention dispatch: splash and context-parallel kernels against the xla reference, and their config checks."""
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import helpers
from vidgen import config_validation
from vidgen.models import attention
from vidgen.models import build
from vidgen.models import t2v
from vidgen.parallel import mesh as mesh_lib
from vidgen.parallel import rules

TOL = dict(rtol=1e-5, atol=1e-5)


def _qkv(b=2, lq=16, lk=16, n=2, d=8):
  rng = np.random.default_rng(0)  # numpy: inputs cost no compiles
  return tuple(rng.standard_normal((b, l, n, d)).astype(np.float32) for l in (lq, lk, lk))


def _mesh(**sizes):
  return mesh_lib.create_mesh(dict(dict(data=1, fsdp=1, context=1, tensor=1), **sizes))


def _loss(implementation, key_mask=None):
  # sin() makes the output cotangent vary per element, so every gradient term is exercised.
  return lambda q, k, v: jnp.sum(jnp.sin(attention.dot_product_attention(q, k, v, key_mask, implementation)))


def _assert_close(a, b):
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), **TOL)


@pytest.mark.parametrize("lq, lk, masked", [(128, 128, False), (20, 9, True)])
def test_splash_matches_xla(lq, lk, masked):
  """Interpreted splash kernel: one exact 128-token tile, then 20 queries / 9 masked keys padded to tiles."""
  pytest.importorskip("jax.experimental.pallas.ops.tpu.splash_attention")  # a jax that dropped it: nothing to test
  q, k, v = _qkv(lq=lq, lk=lk)
  key_mask = (jnp.arange(lk)[None] < jnp.array([[lk], [4]])) if masked else None
  fwd = lambda impl: jax.jit(lambda q, k, v: attention.dot_product_attention(q, k, v, key_mask, impl))
  _assert_close(fwd("splash")(q, k, v), fwd("xla")(q, k, v))
  if masked:
    _assert_close(jax.jit(jax.grad(_loss("splash", key_mask), (0, 1, 2)))(q, k, v),
                  jax.jit(jax.grad(_loss("xla", key_mask), (0, 1, 2)))(q, k, v))


@pytest.mark.parametrize("sizes", [dict(context=8), dict(data=2, context=4), dict(fsdp=2, context=2, tensor=2)])
def test_ring_attention_matches_xla(sizes):
  q, k, v = _qkv()
  want, want_grads = jax.jit(attention.xla_attention)(q, k, v), jax.jit(jax.grad(_loss("xla"), (0, 1, 2)))(q, k, v)
  with jax.set_mesh(_mesh(**sizes)):
    fwd = jax.jit(lambda q, k, v: attention.dot_product_attention(q, k, v, None, "context"))
    assert "collective_permute" in fwd.lower(q, k, v).as_text()  # the ring, not the fallback
    _assert_close(fwd(q, k, v), want)
    _assert_close(jax.jit(jax.grad(_loss("context"), (0, 1, 2)))(q, k, v), want_grads)


def test_context_cross_attention_replicates_masked_keys():
  q, k, v = _qkv(lk=9)
  key_mask = jnp.arange(9)[None] < jnp.array([[9], [3]])
  with jax.set_mesh(_mesh(data=2, context=4)):
    got = jax.jit(lambda q, k, v: attention.dot_product_attention(q, k, v, key_mask, "context"))(q, k, v)
  _assert_close(got, attention.xla_attention(q, k, v, key_mask))


def test_context_without_mesh_is_xla():
  q, k, v = _qkv()
  np.testing.assert_array_equal(attention.dot_product_attention(q, k, v, None, "context"),
                                attention.xla_attention(q, k, v))


def _perturbed(params):
  """Every parameter moved off its init (in numpy: no compiles), so zero-initialised gates hide nothing."""
  rng = np.random.default_rng(0)
  return jax.tree_util.tree_map(lambda p: (np.asarray(p) + 0.1 * rng.standard_normal(p.shape)).astype(np.float32),
                                params)


def test_dit_context_parallel_matches_xla():
  """Text encoder + DiT on (data 2, context 4): 8 video tokens, 2 per device; 9 text tokens, replicated."""
  text = dict(vocab_size=64, max_length=8, width=16, depth=1, num_heads=2)
  dit = dict(patch_size=(1, 2, 2), in_dim=4, out_dim=4, dim=16, ffn_dim=32, freq_dim=16, num_heads=2, depth=1,
             text_pool=True)

  def apply_fn(impl):
    model = t2v.TextToVideo(text_kwargs=dict(text, implementation=impl), dit_kwargs=dict(dit, implementation=impl))
    return jax.jit(lambda p, x, t, ids: model.apply({"params": p}, x, t, ids)), model

  x = np.random.default_rng(1).standard_normal((2, 2, 4, 4, 4)).astype(np.float32)
  t = np.array([0.3, 0.8], np.float32)
  ids = np.array([[5, 9, 3, 0, 0, 0, 0, 0], [7, 2, 0, 0, 0, 0, 0, 0]], np.int32)
  xla_fwd, model = apply_fn("xla")
  params = _perturbed(nn.unbox(jax.jit(model.init)(jax.random.key(0), x, t, ids)["params"]))
  want = xla_fwd(params, x, t, ids)
  with jax.set_mesh(_mesh(data=2, context=4)), nn.logical_axis_rules(rules.DIT_RULES):
    lowered = apply_fn("context")[0].lower(params, x, t, ids)
    assert "collective_permute" in lowered.as_text()
    got = lowered.compile()(params, x, t, ids)
  _assert_close(got, want)


def test_mesh_has_a_context_axis():
  mesh = _mesh(data=2, context=4)
  assert dict(mesh.shape) == {"data": 2, "fsdp": 1, "context": 4, "tensor": 1}
  assert mesh_lib.data_parallel_size(mesh) == 2


@pytest.mark.parametrize("overrides, needle", [
    ({"dit.attention": "flash"},
     "config.dit.attention='flash' is invalid: allowed ('xla', 'cudnn', 'splash', 'context')"),
    ({"dit.num_heads": 4, "mesh.tensor": 3}, "config.dit.num_heads=4 is invalid: must be divisible by mesh.tensor=3"),
])
def test_invalid_attention_configs(overrides, needle):
  with pytest.raises(config_validation.ConfigError, match=re.escape(needle)):
    config_validation.validate(helpers.load_config(**overrides))


def test_context_must_divide_dit_tokens():
  config = helpers.load_config()
  tokens = build.dit_tokens(config)
  config.mesh.context = tokens + 1
  needle = f"config.mesh.context={tokens + 1} is invalid: must divide the {tokens} DiT tokens"
  with pytest.raises(config_validation.ConfigError, match=re.escape(needle)):
    config_validation.validate(config)
  config.mesh.context = -1  # known only with the mesh: checked by validate_for_mesh
  config_validation.validate(config)
  with pytest.raises(config_validation.ConfigError, match="config.mesh.context"):
    config_validation.validate_for_mesh(config, 1, context=tokens + 1)
