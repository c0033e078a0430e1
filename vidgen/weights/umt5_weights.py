"""UMT5 encoder checkpoints (Wan 2.1's text encoder) into vidgen.models.umt5.UMT5Encoder parameters.

Two layouts, told apart by their tensor names:
  transformers  UMT5EncoderModel / UMT5Model safetensors (Wan-AI's *-Diffusers repos ship text_encoder/ so, sharded
                with an index): shared.weight (or encoder.embed_tokens.weight), encoder.block.N.layer.0.SelfAttention.
                {q,k,v,o,relative_attention_bias}.weight, encoder.block.N.layer.{0,1}.layer_norm.weight,
                encoder.block.N.layer.1.DenseReluDense.{wi_0,wi_1,wo}.weight, encoder.final_layer_norm.weight. A
                full encoder-decoder checkpoint loads too: its decoder.* and lm_head.weight are left unread.
  wan           Wan's models_t5_umt5-xxl-enc-bf16.pth (wan/modules/t5.py's T5Encoder) once converted with
                `python -m vidgen.weights.convert_pth FILE`: token_embedding.weight, blocks.N.norm1/norm2.weight,
                blocks.N.attn.{q,k,v,o}.weight, blocks.N.pos_embedding.embedding.weight, blocks.N.ffn.gate.0.weight
                (the GELU branch = wi_0), blocks.N.ffn.fc1.weight (the linear branch = wi_1),
                blocks.N.ffn.fc2.weight (= wo), norm.weight.
Linear weights are [out, in] in both and transpose to Flax's [in, out] kernels; embeddings, norms and the bias
tables keep their layout.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable


from vidgen.weights import safetensors_io
from vidgen.weights import streaming
from vidgen.weights.streaming import Source

LAYOUTS = ("transformers", "wan")
_T = (1, 0)  # torch Linear [out, in] -> Flax kernel [in, out]

# The names of one layer, per layout: vidgen leaf (below blocks_i) -> (checkpoint name with {i}, permute).
_LAYER = {
    "transformers": {
        ("norm1", "weight"): ("encoder.block.{i}.layer.0.layer_norm.weight", None),
        ("q", "kernel"): ("encoder.block.{i}.layer.0.SelfAttention.q.weight", _T),
        ("k", "kernel"): ("encoder.block.{i}.layer.0.SelfAttention.k.weight", _T),
        ("v", "kernel"): ("encoder.block.{i}.layer.0.SelfAttention.v.weight", _T),
        ("o", "kernel"): ("encoder.block.{i}.layer.0.SelfAttention.o.weight", _T),
        ("relative_attention_bias",): ("encoder.block.{i}.layer.0.SelfAttention.relative_attention_bias.weight", None),
        ("norm2", "weight"): ("encoder.block.{i}.layer.1.layer_norm.weight", None),
        ("wi_0", "kernel"): ("encoder.block.{i}.layer.1.DenseReluDense.wi_0.weight", _T),
        ("wi_1", "kernel"): ("encoder.block.{i}.layer.1.DenseReluDense.wi_1.weight", _T),
        ("wo", "kernel"): ("encoder.block.{i}.layer.1.DenseReluDense.wo.weight", _T),
    },
    "wan": {
        ("norm1", "weight"): ("blocks.{i}.norm1.weight", None),
        ("q", "kernel"): ("blocks.{i}.attn.q.weight", _T),
        ("k", "kernel"): ("blocks.{i}.attn.k.weight", _T),
        ("v", "kernel"): ("blocks.{i}.attn.v.weight", _T),
        ("o", "kernel"): ("blocks.{i}.attn.o.weight", _T),
        ("relative_attention_bias",): ("blocks.{i}.pos_embedding.embedding.weight", None),
        ("norm2", "weight"): ("blocks.{i}.norm2.weight", None),
        ("wi_0", "kernel"): ("blocks.{i}.ffn.gate.0.weight", _T),
        ("wi_1", "kernel"): ("blocks.{i}.ffn.fc1.weight", _T),
        ("wo", "kernel"): ("blocks.{i}.ffn.fc2.weight", _T),
    },
}
_TOP = {
    "transformers": {("token_embedding", "embedding"): "shared.weight",
                     ("norm", "weight"): "encoder.final_layer_norm.weight"},
    "wan": {("token_embedding", "embedding"): "token_embedding.weight", ("norm", "weight"): "norm.weight"},
}
_TIED_EMBEDDING = "encoder.embed_tokens.weight"  # transformers ties it to shared.weight; either may be stored
_DECODER_PREFIXES = ("decoder.", "lm_head.")


def key_map(layout: str, num_layers: int, scan_layers: bool = False) -> streaming.KeyMap:
  """{vidgen parameter path: Source} for UMT5Encoder(num_layers, scan_layers) from `layout`'s names."""
  if layout not in LAYOUTS:
    raise ValueError(f"UMT5 layout {layout!r}: allowed {LAYOUTS}")
  out = {path: Source((key,)) for path, key in _TOP[layout].items()}
  for leaf, (pattern, permute) in _LAYER[layout].items():
    keys = tuple(pattern.format(i=i) for i in range(num_layers))
    if scan_layers:
      out[("blocks",) + leaf] = Source(keys, permute, stacked=True)
    else:
      out.update({(f"blocks_{i}",) + leaf: Source((key,), permute) for i, key in enumerate(keys)})
  return out


def detect_layout(keys) -> str:
  """'transformers' or 'wan' from a checkpoint's tensor names; a one-line error for anything else."""
  keys = set(keys)
  if any(k.startswith("encoder.block.") for k in keys):
    return "transformers"
  if "token_embedding.weight" in keys or any(k.startswith("blocks.") and ".attn." in k for k in keys):
    return "wan"
  sample = sorted(keys)[:3]
  raise safetensors_io.WeightsError(
      f"not a UMT5 encoder checkpoint: neither transformers names (encoder.block.N...) nor Wan's "
      f"(token_embedding, blocks.N.attn...); {len(keys)} tensors, e.g. {sample}")


class _View:
  """The tensors of a checkpoint that the encoder reads, under the names the key map uses: a tied duplicate of the
  embedding and a seq2seq model's decoder are hidden, so the strict check still holds for every other name."""

  def __init__(self, files: safetensors_io.TensorFiles, layout: str):
    self._files, self.path = files, files.path
    keys = set(files.keys())
    self.hidden = set()
    if layout == "transformers":
      self.hidden = {k for k in keys if k.startswith(_DECODER_PREFIXES)}
      if _TIED_EMBEDDING in keys and "shared.weight" in keys:
        if files.shape(_TIED_EMBEDDING) != files.shape("shared.weight"):
          raise safetensors_io.WeightsError(
              f"{files.path}: shared.weight {files.shape('shared.weight')} and {_TIED_EMBEDDING} "
              f"{files.shape(_TIED_EMBEDDING)} differ in shape, but transformers ties them")
        self.hidden.add(_TIED_EMBEDDING)
    self._names = {k: k for k in keys - self.hidden}  # the key map's name -> the file's
    if layout == "transformers" and _TIED_EMBEDDING in self._names:
      self._names["shared.weight"] = self._names.pop(_TIED_EMBEDDING)

  def keys(self) -> list[str]:
    return sorted(self._names)

  def shape(self, key: str) -> tuple[int, ...]:
    return self._files.shape(self._names[key])

  def read(self, key: str):
    return self._files.read(self._names[key])


def _layers(abstract: dict) -> tuple[int, bool]:
  if any(p[0] == "blocks" for p in abstract):
    return abstract[("blocks", "norm1", "weight")].shape[0], True
  return len({p[0] for p in abstract if p[0].startswith("blocks_")}), False


def load_umt5(path: str, abstract_params, shardings=None,
              dtype_of: Callable[[tuple[str, ...]], Any] | None = None, layout: str | None = None) -> dict:
  """UMT5Encoder params (a nested dict) from a safetensors file, index or folder, in either layout (detected unless
  given). `abstract_params`: the model's params tree, abstract (jax.eval_shape(model.init, ...)['params']) or
  concrete, boxed or not; `shardings`: the same tree of NamedShardings (each tensor is put there as it is read), or
  None; `dtype_of(path)`: the dtype of a leaf (default: the abstract one). Every tensor is checked first (one-line
  WeightsError naming what is missing, unexpected or misshaped), then streamed one at a time."""
  files = safetensors_io.TensorFiles(path)
  layout = layout or detect_layout(files.keys())
  abstract = streaming.targets(abstract_params, shardings)
  num_layers, scan = _layers(abstract)
  mapping = key_map(layout, num_layers, scan)
  view = _View(files, layout)
  streaming.check(mapping, {p: tuple(a.shape) for p, a in abstract.items()}, view, f"UMT5 encoder ({layout} layout)",
                  hint=f" (a UMT5Encoder of {num_layers} layers)")
  return streaming.to_tree(streaming.load(mapping, abstract, view, dtype_of))


def read_config(path: str) -> dict | None:
  """The transformers config.json beside a checkpoint (in the folder, or the folder of the file), if any."""
  folder = path if os.path.isdir(path) else os.path.dirname(path)
  file = os.path.join(folder, "config.json")
  if not os.path.exists(file):
    return None
  with open(file) as f:
    return json.load(f)
