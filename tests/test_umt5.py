"""UMT5 encoder (Wan 2.1's text encoder) and its tokenizer against transformers (fixtures: make_umt5.py; no torch)."""
import json
import os
import shutil
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from vidgen.models import umt5
from vidgen.models import umt5_tokenizer
from vidgen.parallel import mesh as mesh_lib
from vidgen.parallel import rules
from vidgen.parallel import sharding
from vidgen.weights import safetensors_io
from vidgen.weights import umt5_weights

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "wan", "umt5")
HF = os.path.join(FIXTURE, "hf")
WAN = os.path.join(FIXTURE, "wan.safetensors")
TOKENIZER = os.path.join(FIXTURE, "tokenizer")
TOLERANCE = 1e-5  # max |ours - transformers| / max |transformers|


@pytest.fixture(scope="module")
def io():
  return dict(np.load(os.path.join(FIXTURE, "io.npz")))


@pytest.fixture(scope="module")
def tokens():
  with open(os.path.join(FIXTURE, "tokens.json"), encoding="utf-8") as f:
    return json.load(f)


def _model(scan_layers=False, **overrides):
  with open(os.path.join(HF, "config.json")) as f:
    kwargs = umt5.config_from_transformers(json.load(f))
  return umt5.UMT5Encoder(**dict(kwargs, scan_layers=scan_layers, **overrides))


def _abstract(model, length=8):
  ids = jnp.zeros((1, length), jnp.int32)
  return jax.eval_shape(model.init, jax.random.key(0), ids, ids)["params"]


def _rel_err(got, want):
  return float(np.abs(np.asarray(got, np.float64) - want).max() / np.abs(want).max())


def test_config_and_xxl_shape():
  with open(os.path.join(HF, "config.json")) as f:
    config = json.load(f)
  kwargs = umt5.config_from_transformers(config)
  assert kwargs == dict(vocab_size=320, d_model=24, d_kv=8, d_ff=40, num_heads=4, num_layers=3,
                        relative_attention_num_buckets=32, relative_attention_max_distance=128, eps=1e-6)
  assert umt5.UMT5_XXL == dict(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_heads=64, num_layers=24,
                               relative_attention_num_buckets=32, relative_attention_max_distance=128, eps=1e-6)
  with pytest.raises(ValueError, match="gated-gelu"):
    umt5.config_from_transformers(dict(config, feed_forward_proj="relu"))
  abstract = _abstract(umt5.UMT5Encoder(scan_layers=True), length=4)  # the XXL tree, shapes only
  n = sum(int(np.prod(x.value.shape)) for x in jax.tree_util.tree_leaves(
      abstract, is_leaf=lambda x: isinstance(x, nn.Partitioned)))
  assert n == 5_680_910_336  # UMT5-XXL encoder: 5.68B parameters (1.05B of them the embedding)


def test_relative_position_buckets_match_transformers(io):
  rel = np.arange(-600, 601)
  for n, d in ((32, 128), (12, 20)):
    np.testing.assert_array_equal(umt5.relative_position_bucket(rel, n, d), io[f"buckets_{n}_{d}"])
  grid = umt5.relative_position_buckets(5, 5, 32, 128)
  assert grid.shape == (5, 5) and grid[0, 0] == 0 and grid[0, 1] == 17 and grid[1, 0] == 1


@pytest.mark.parametrize("path,scan_layers", [(HF, False), (WAN, True), (WAN, False), (HF, True)],
                         ids=["transformers", "wan-scan", "wan", "transformers-scan"])
def test_both_layouts_load_at_parity(io, path, scan_layers):
  model = _model(scan_layers)
  params = umt5_weights.load_umt5(path, _abstract(model))
  hidden = jax.jit(model.apply)({"params": params}, io["ids"], io["mask"])
  assert hidden.shape == io["last_hidden_state"].shape
  assert _rel_err(hidden, io["last_hidden_state"]) <= TOLERANCE


def test_layout_detection_and_sharded_streaming(io):
  assert umt5_weights.detect_layout(safetensors_io.TensorFiles(HF).keys()) == "transformers"
  assert umt5_weights.detect_layout(safetensors_io.TensorFiles(WAN).keys()) == "wan"
  mesh = mesh_lib.create_mesh(dict(data=1, fsdp=2, context=1, tensor=4))
  model = _model(scan_layers=True, dtype=jnp.bfloat16)
  abstract = _abstract(model)
  shardings = sharding.logical_shardings(abstract, mesh, rules.DIT_RULES)
  keep32 = lambda path: jnp.float32 if any(p.startswith("norm") for p in path) else jnp.bfloat16
  params = umt5_weights.load_umt5(WAN, abstract, shardings, dtype_of=keep32)
  q = params["blocks"]["q"]["kernel"]
  assert q.shape == (3, 24, 32) and q.dtype == jnp.bfloat16
  assert q.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
  assert params["blocks"]["norm1"]["weight"].dtype == jnp.float32
  assert params["token_embedding"]["embedding"].sharding.spec == jax.sharding.PartitionSpec("tensor", "fsdp")
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules.DIT_RULES):
    hidden = jax.jit(model.apply)({"params": params}, io["ids"][:2], io["mask"][:2])
  assert _rel_err(hidden.astype(jnp.float32), io["last_hidden_state"][:2]) < 0.05  # bfloat16 compute


@pytest.mark.parametrize("source", ["tokenizer.json", "spiece.model"])
def test_tokenizer_ids_equal_transformers(tokens, source, tmp_path, caplog):
  if source == "spiece.model":  # a folder holding only the sentencepiece model (and its config)
    shutil.copy(os.path.join(TOKENIZER, "spiece.model"), tmp_path)
    shutil.copy(os.path.join(TOKENIZER, "tokenizer_config.json"), tmp_path)
    folder = str(tmp_path)
  else:
    folder = TOKENIZER
  tok = umt5_tokenizer.UMT5Tokenizer.from_folder(folder)
  assert os.path.basename(tok.source) == source and tok.vocab_size == 300
  for which in ("prompts", "clean", "clean_without_ftfy"):  # raw prompts too: unclean text tokenizes alike
    ids, mask = tok(tokens[which], clean=False)
    assert ids.shape == mask.shape == (len(tokens[which]), 512) and ids.dtype == np.int32
    for i, want in enumerate(tokens["ids"][f"{source}:{which}"]):
      assert list(ids[i, : len(want)]) == want, (which, tokens[which][i])
      assert not ids[i, len(want):].any() and mask[i].sum() == len(want) and mask[i, : len(want)].all()
  long_tokens = tokens["long_prompt_tokens"]
  assert long_tokens > 512 and f"Prompt has {long_tokens} tokens" in caplog.text
  assert ids[-1, -1] == umt5_tokenizer.EOS_ID and mask[-1].all()


def test_older_tokenizer_json_tokenizes_as_transformers_5(tokens, tmp_path):
  """transformers 5 rebuilds a T5Tokenizer's pipeline rather than running an older tokenizer.json as stored."""
  with open(os.path.join(TOKENIZER, "tokenizer.json"), encoding="utf-8") as f:
    spec = json.load(f)
  spec["normalizer"] = {"type": "Sequence", "normalizers": [
      spec["normalizer"], {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}]}
  spec["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True}
  with open(tmp_path / "tokenizer.json", "w", encoding="utf-8") as f:
    json.dump(spec, f)
  shutil.copy(os.path.join(TOKENIZER, "tokenizer_config.json"), tmp_path)
  tok = umt5_tokenizer.UMT5Tokenizer.from_folder(str(tmp_path))
  assert [tok.tokenize(t) for t in tokens["legacy_texts"]] == tokens["legacy_ids"]


def test_prompt_clean_matches_diffusers_without_ftfy(tokens, monkeypatch):
  monkeypatch.setitem(sys.modules, "ftfy", None)  # import ftfy -> ImportError
  assert [umt5_tokenizer.prompt_clean(p) for p in tokens["prompts"]] == tokens["clean_without_ftfy"]


def test_prompt_clean_matches_diffusers_with_ftfy(tokens):
  pytest.importorskip("ftfy")
  assert [umt5_tokenizer.prompt_clean(p) for p in tokens["prompts"]] == tokens["clean"]


def test_long_prompt_truncates_with_a_warning(tokens, caplog):
  tok = umt5_tokenizer.UMT5Tokenizer.from_folder(TOKENIZER)
  ids, mask = tok.encode(tokens["clean"][-1], clean=False)
  assert mask.all() and ids[-1] == umt5_tokenizer.EOS_ID
  assert ids[:-1].tolist() == tok.tokenize(tokens["clean"][-1])[:511]
  assert f"Prompt has {tokens['long_prompt_tokens']} tokens (with EOS), more than the text encoder's 512" in caplog.text
  caplog.clear()
  short, short_mask = tok.encode("a red cat")
  assert not caplog.text and short_mask.sum() == len(tok.tokenize("a red cat")) and short[0] != 0
  empty, empty_mask = tok.encode("")
  assert empty[0] == umt5_tokenizer.EOS_ID and empty_mask.sum() == 1


def test_pipeline_context_matches_wan_pipeline(io, tokens):
  """Prompts -> ids -> encoder -> zero-padded context, as WanPipeline._get_t5_prompt_embeds feeds the DiT."""
  prompts = [tokens["prompts"][i] for i in io["context_prompts"]]
  assert all(tokens["clean"][i] == tokens["clean_without_ftfy"][i] for i in io["context_prompts"])  # ftfy or not
  tok = umt5_tokenizer.UMT5Tokenizer.from_folder(TOKENIZER)
  ids, mask = tok(prompts)
  model = _model()
  params = umt5_weights.load_umt5(HF, _abstract(model))
  hidden = jax.jit(model.apply)({"params": params}, ids, mask)
  context, context_mask, pooled = umt5.wan_context(hidden, mask, 512)
  want = io["context"]
  assert context.shape == want.shape == (len(prompts), 512, 24) and context_mask.all() and pooled.shape == (5, 24)
  assert _rel_err(context, want) <= TOLERANCE
  np.testing.assert_array_equal(np.asarray(context) == 0, want == 0)  # zeros exactly past each prompt


def _expect_one_line(path, match, model=None):
  model = model or _model()
  with pytest.raises(safetensors_io.WeightsError, match=match) as err:
    umt5_weights.load_umt5(str(path), _abstract(model))
  assert "\n" not in str(err.value)
  return str(err.value)


def test_strict_check_errors_are_one_line(tmp_path):
  hf = load_file(os.path.join(HF, "model.safetensors"))
  wan = load_file(WAN)

  def write(name, tensors):
    save_file(tensors, str(tmp_path / name))
    return tmp_path / name

  missing = {k: v for k, v in wan.items() if k != "blocks.1.attn.k.weight"}
  msg = _expect_one_line(write("missing.safetensors", missing), "1 missing: blocks.1.attn.k.weight")
  assert "wan layout" in msg
  _expect_one_line(write("extra.safetensors", dict(hf, **{"encoder.block.3.layer.0.layer_norm.weight": hf[
      "encoder.final_layer_norm.weight"]})), "1 unexpected: encoder.block.3.layer.0.layer_norm.weight")
  bad = dict(hf, **{"encoder.block.0.layer.1.DenseReluDense.wo.weight": np.zeros((24, 41), np.float32)})
  _expect_one_line(write("misshaped.safetensors", bad), r"1 misshaped: encoder\.block\.0\.layer\.1\.DenseReluDense"
                   r"\.wo\.weight \(24, 41\) \(the model wants \(24, 40\)")
  _expect_one_line(write("other.safetensors", {"foo.weight": np.zeros(3, np.float32)}), "not a UMT5 encoder")
  _expect_one_line(WAN, r"10 unexpected: blocks\.2\.", model=_model(num_layers=2))
  _expect_one_line(WAN, r"a UMT5Encoder of 2 layers\): 10 unexpected", model=_model(scan_layers=True, num_layers=2))


def test_tied_embedding_and_seq2seq_checkpoints_load(tmp_path, io):
  hf = load_file(os.path.join(HF, "model.safetensors"))
  model = _model()
  variants = {
      "both": dict(hf, **{"encoder.embed_tokens.weight": hf["shared.weight"]}),
      "encoder_only_name": {("encoder.embed_tokens.weight" if k == "shared.weight" else k): v for k, v in hf.items()},
      "seq2seq": dict(hf, **{"decoder.final_layer_norm.weight": hf["encoder.final_layer_norm.weight"],
                             "lm_head.weight": hf["shared.weight"]}),
  }
  for name, tensors in variants.items():
    save_file(tensors, str(tmp_path / f"{name}.safetensors"))
    params = umt5_weights.load_umt5(str(tmp_path / f"{name}.safetensors"), _abstract(model))
    np.testing.assert_array_equal(params["token_embedding"]["embedding"], hf["shared.weight"])
  hidden = jax.jit(model.apply)({"params": params}, io["ids"], io["mask"])
  assert _rel_err(hidden, io["last_hidden_state"]) <= TOLERANCE


def test_bfloat16_on_cpu_casts_one_layer_at_a_time():
  """XLA on CPU computes bfloat16 dots in float32; build.compiler_options keeps the casts of a scanned encoder's
  layers inside the loop instead of float32 copies of the whole stack (19 GB of temporaries for umt5-xxl)."""
  from vidgen.models import build
  model = umt5.UMT5Encoder(vocab_size=64, d_model=128, d_kv=32, d_ff=512, num_heads=4, num_layers=8, scan_layers=True,
                           dtype=jnp.bfloat16)
  ids = jax.ShapeDtypeStruct((1, 16), jnp.int32)
  params = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, jnp.bfloat16),
                        nn.unbox(jax.eval_shape(model.init, jax.random.key(0), ids)["params"]))
  stack_f32 = 4 * sum(a.size for a in jax.tree.leaves(params["blocks"]))
  options = build.compiler_options(jnp.bfloat16)
  assert build.compiler_options(jnp.float32) is None and options is not None
  temp = lambda **kw: jax.jit(lambda p, i: model.apply({"params": p}, i), **kw).lower(params, ids).compile(
  ).memory_analysis().temp_size_in_bytes
  assert 4 * temp(compiler_options=options) < stack_f32  # without the options: > stack_f32 (jax 0.10.2)
