import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vidgen.models import dit as dit_lib
from vidgen.models import rope
from vidgen.models import t2v
from vidgen.models import text as text_lib
from vidgen.models import tokenizer as tok_lib

TEXT = dict(vocab_size=256, max_length=8, width=32, depth=1, num_heads=2)
DIT = dict(patch_size=(1, 2, 2), in_dim=4, out_dim=4, dim=48, ffn_dim=64, freq_dim=32, num_heads=2, depth=2,
           text_pool=True)


def _model():
  return t2v.TextToVideo(text_kwargs=TEXT, dit_kwargs=DIT)


def _random_params(model, x, ids):
  """Init, then perturb every param so zero-initialised gates do not hide wiring bugs."""
  params = nn.unbox(model.init(jax.random.key(0), x, jnp.zeros((x.shape[0],)), ids)["params"])
  leaves, treedef = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  return jax.tree_util.tree_unflatten(treedef, [l + 0.05 * jax.random.normal(k, l.shape) for l, k in zip(leaves, keys)])


@pytest.mark.parametrize("grid", [(3, 4, 4), (2, 4, 8), (1, 8, 2)])
def test_dit_output_shape_any_grid(grid):
  model = _model()
  x = jnp.ones((2, *grid, 4))
  ids = jnp.asarray(tok_lib.HashedWordTokenizer(256, 8).encode_batch(["a red circle", ""])[0])
  params = _random_params(model, x, ids)
  v = model.apply({"params": params}, x, jnp.array([0.3, 0.9]), ids)
  assert v.shape == x.shape
  assert np.isfinite(np.asarray(v)).all()


def test_dit_zero_init_outputs_zero():
  model = _model()
  x = jnp.ones((1, 3, 4, 4, 4))
  ids = jnp.zeros((1, 8), jnp.int32)
  variables = model.init(jax.random.key(0), x, jnp.zeros((1,)), ids)
  assert float(jnp.abs(model.apply(variables, x, jnp.ones((1,)), ids)).max()) == 0.0


def test_dit_depends_on_text_and_time():
  model = _model()
  x = jax.random.normal(jax.random.key(2), (1, 3, 4, 4, 4))
  tok = tok_lib.HashedWordTokenizer(256, 8)
  ids_a = jnp.asarray(tok.encode_batch(["a red circle moving left"])[0])
  ids_b = jnp.asarray(tok.encode_batch(["a blue square moving up"])[0])
  params = _random_params(model, x, ids_a)
  va = model.apply({"params": params}, x, jnp.array([0.5]), ids_a)
  vb = model.apply({"params": params}, x, jnp.array([0.5]), ids_b)
  vt = model.apply({"params": params}, x, jnp.array([0.1]), ids_a)
  assert float(jnp.abs(va - vb).max()) > 1e-4
  assert float(jnp.abs(va - vt).max()) > 1e-4


def test_unpatchify_inverts_patchify_order():
  b, f, h, w, c = 1, 2, 4, 6, 3
  x = jnp.arange(b * f * h * w * c, dtype=jnp.float32).reshape(b, f, h, w, c)
  p = (1, 2, 2)
  tokens = x.reshape(b, f, h // 2, 2, w // 2, 2, c).transpose(0, 1, 2, 4, 3, 5, 6).reshape(b, -1, 4 * c)
  np.testing.assert_array_equal(dit_lib.unpatchify(tokens, (f, h // 2, w // 2), p, c), x)


def test_rope_is_relative():
  """q.k after rotation depends only on the position difference."""
  angles = rope.rope_freqs((4, 3, 3), 12)
  q = jax.random.normal(jax.random.key(0), (1, 1, 1, 12))
  k = jax.random.normal(jax.random.key(1), (1, 1, 1, 12))
  def dot(i, j):
    qi = rope.apply_rope(q, angles[i:i + 1])
    kj = rope.apply_rope(k, angles[j:j + 1])
    return float(jnp.sum(qi * kj))
  # token index = f*9 + h*3 + w: (0,0,0)-(1,0,0) vs (2,1,1)-(3,1,1)
  assert abs(dot(0, 9) - dot(2 * 9 + 4, 3 * 9 + 4)) < 1e-4
  assert abs(dot(0, 9) - dot(0, 18)) > 1e-4
  assert rope.axis_pairs(128) == (22, 21, 21)


@pytest.mark.parametrize("pos_embed", ["none", "sincos"])
def test_absolute_position_embedding_tells_tokens_apart(pos_embed):
  """A latent equal everywhere: with RoPE alone every token attends to identical values, so every patch gets
  the same velocity; the sincos embedding lets the model place things in the frame."""
  model = t2v.TextToVideo(text_kwargs=TEXT, dit_kwargs=dict(DIT, pos_embed=pos_embed))
  x = jnp.ones((1, 3, 4, 6, 4))
  ids = jnp.asarray(tok_lib.HashedWordTokenizer(256, 8).encode_batch(["a red circle"])[0])
  v = np.asarray(model.apply({"params": _random_params(model, x, ids)}, x, jnp.array([0.5]), ids))
  corner = v[:, :, ::2, ::2]  # one pixel of each 2x2 patch
  spread = np.abs(corner - corner[:, :1, :1, :1]).max()
  assert (spread < 1e-4) if pos_embed == "none" else (spread > 1e-2)
  table = np.asarray(rope.sincos_embedding((3, 4, 6), 48))
  assert table.shape == (72, 48) and len(np.unique(table.round(5), axis=0)) == 72


def test_text_encoder_empty_prompt_is_valid_context():
  enc = text_lib.TextEncoder(**TEXT)
  ids = jnp.zeros((2, 8), jnp.int32)
  variables = enc.init(jax.random.key(0), ids)
  tokens, mask, pooled = enc.apply(variables, ids)
  assert tokens.shape == (2, 9, 32) and pooled.shape == (2, 32)
  assert mask[:, 0].all() and not mask[:, 1:].any()
  assert np.isfinite(np.asarray(tokens)).all()


@pytest.mark.parametrize("position", text_lib.POSITIONS)
def test_text_encoder_positions_read_word_order(position):
  """Both position kinds tell "red circle" from "circle red"; rope's attention logits depend only on how far
  apart two words are (rotating q at i and k at j), and it has no position table."""
  enc = text_lib.TextEncoder(**TEXT, position=position)
  ids = jnp.asarray([[5, 6, 7, 0], [7, 6, 5, 0]], jnp.int32)
  variables = enc.init(jax.random.key(0), ids)
  tokens, _, pooled = enc.apply(variables, ids)
  assert np.abs(np.asarray(tokens[0, 1]) - np.asarray(tokens[1, 3])).max() > 1e-3  # word 5, other neighbours
  assert ("position_embedding" in variables["params"]) == (position == "learned")
  freqs = rope.sequence_freqs(12, 16)
  q, k = jax.random.normal(jax.random.key(1), (2, 1, 1, 1, 16))
  at = lambda x, i: rope.apply_rope(jnp.broadcast_to(x, (1, 12, 1, 16)), freqs)[0, i, 0]
  assert abs(float(at(q, 2) @ at(k, 5)) - float(at(q, 6) @ at(k, 9))) < 1e-4
  assert abs(float(at(q, 2) @ at(k, 5)) - float(at(q, 2) @ at(k, 7))) > 1e-3


def test_tokenizer_stable_truncates_and_pads(caplog):
  tok = tok_lib.HashedWordTokenizer(4096, 4)
  ids, mask = tok.encode("A Red circle, moving LEFT")
  assert ids.shape == (4,) and mask.all()
  assert tok.word_id("red") == tok_lib.HashedWordTokenizer(4096, 4).word_id("red")  # no per-process salt
  assert list(ids) == [tok.word_id(w) for w in ["a", "red", "circle", "moving"]]
  empty, empty_mask = tok.encode("")
  assert (empty == tok_lib.PAD_ID).all() and not empty_mask.any()
  with pytest.raises(ValueError, match="vocab_size"):
    tok_lib.HashedWordTokenizer(1, 4)


def _velocity_and_grads(model, params, x, ids):
  loss = lambda p: jnp.mean(jnp.square(model.apply({"params": p}, x, jnp.array([0.4]), ids)))
  v = model.apply({"params": params}, x, jnp.array([0.4]), ids)
  return v, jax.grad(loss)(params)


def test_bfloat16_compute_keeps_float32_params_and_tracks_float32():
  x = jax.random.normal(jax.random.key(3), (1, 3, 4, 4, 4))
  ids = jnp.asarray(tok_lib.HashedWordTokenizer(256, 8).encode_batch(["a red circle moving left"])[0])
  f32 = _model()
  bf16 = t2v.TextToVideo(text_kwargs=TEXT, dit_kwargs=DIT, dtype=jnp.bfloat16)
  params = _random_params(f32, x, ids)
  assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(
      jax.eval_shape(lambda: nn.unbox(bf16.init(jax.random.key(0), x, jnp.zeros((1,)), ids)["params"]))))
  apply = lambda model, p: model.apply({"params": p}, x, jnp.array([0.4]), ids)
  # Gradients reach the float32 master weights as float32 (shapes only: bf16 matmuls are slow on CPU).
  grads = jax.eval_shape(jax.grad(lambda p: jnp.mean(jnp.square(apply(bf16, p)))), params)
  assert all(g.dtype == jnp.float32 for g in jax.tree_util.tree_leaves(grads))
  v32, v16 = apply(f32, params), apply(bf16, params)
  assert v16.dtype == jnp.float32
  scale = float(jnp.abs(v32).max())
  assert float(jnp.abs(v16 - v32).max()) < 0.05 * scale  # bf16 has 8 mantissa bits
  assert float(jnp.abs(v16 - v32).max()) > 0  # and really computed in bf16


@pytest.mark.parametrize("policy", ["full", "dots", "dots_no_batch"])
def test_remat_policies_give_the_same_gradients(policy):
  x = jax.random.normal(jax.random.key(4), (1, 3, 4, 4, 4))
  ids = jnp.asarray(tok_lib.HashedWordTokenizer(256, 8).encode_batch(["a blue box falls"])[0])
  plain = _model()
  remat = t2v.TextToVideo(text_kwargs=TEXT, dit_kwargs=dict(DIT, remat=policy))
  params = _random_params(plain, x, ids)
  _, g_plain = _velocity_and_grads(plain, params, x, ids)
  _, g_remat = _velocity_and_grads(remat, params, x, ids)
  for a, b in zip(jax.tree_util.tree_leaves(g_plain), jax.tree_util.tree_leaves(g_remat)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="allowed"):
    t2v.TextToVideo(text_kwargs=TEXT, dit_kwargs=dict(DIT, remat="everything")).init(
        jax.random.key(0), x, jnp.zeros((1,)), ids)


@pytest.mark.parametrize("remat", ["none", "full"])
def test_scanned_blocks_match_the_loop_with_stacked_params(remat):
  x = jax.random.normal(jax.random.key(5), (1, 3, 4, 4, 4))
  ids = jnp.asarray(tok_lib.HashedWordTokenizer(256, 8).encode_batch(["a green ball moves right"])[0])
  looped = _model()
  scanned = t2v.TextToVideo(text_kwargs=TEXT, dit_kwargs=dict(DIT, scan_blocks=True, remat=remat))
  params = _random_params(looped, x, ids)
  stacked = {**params, "dit": dit_lib.stack_blocks(params["dit"], DIT["depth"])}
  init_shapes = jax.eval_shape(lambda: nn.unbox(scanned.init(jax.random.key(0), x, jnp.zeros((1,)), ids)["params"]))
  assert jax.tree_util.tree_structure(init_shapes) == jax.tree_util.tree_structure(stacked)
  assert init_shapes["dit"]["blocks"]["ffn"]["fc1"]["kernel"].shape[0] == DIT["depth"]
  v_loop, g_loop = _velocity_and_grads(looped, params, x, ids)
  v_scan, g_scan = _velocity_and_grads(scanned, stacked, x, ids)
  np.testing.assert_allclose(np.asarray(v_scan), np.asarray(v_loop), rtol=1e-5, atol=1e-6)
  g_scan = {**g_scan, "dit": dit_lib.unstack_blocks(g_scan["dit"])}
  for a, b in zip(jax.tree_util.tree_leaves(g_loop), jax.tree_util.tree_leaves(g_scan)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)
  round_trip = dit_lib.unstack_blocks(dit_lib.stack_blocks(params["dit"], DIT["depth"]))
  assert jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, round_trip, params["dit"]))
