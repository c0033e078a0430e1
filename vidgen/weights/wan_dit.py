"""Wan 2.1 DiT checkpoints, both ways: the original layout (Wan-Video/Wan2.1's WanModel) and diffusers'
(WanTransformer3DModel), into vidgen's DiT and back.

vidgen's DiT carries Wan's module names (vidgen/models/dit.py), so the map is a rename table per layout plus
two transposes: Linear weights [out, in] -> Dense kernels [in, out], Conv3d OIDHW -> DHWIO. With `scan_blocks`
the per-layer tensors blocks.N.* fill one stacked leaf under `blocks` (streaming.Source(stacked=True)).

  Wan name                        diffusers name                                 vidgen path
  patch_embedding                 patch_embedding                                patch_embedding
  time_embedding.0 / .2           condition_embedder.time_embedder.linear_1 / 2  time_embedding_0 / _2
  time_projection.1               condition_embedder.time_proj                   time_projection
  text_embedding.0 / .2           condition_embedder.text_embedder.linear_1 / 2  text_embedding_0 / _2
  head.head                       proj_out                                       head
  head.modulation                 scale_shift_table                              head_modulation
  blocks.N.modulation             blocks.N.scale_shift_table                     blocks_N/modulation
  blocks.N.self_attn.{q,k,v,o}    blocks.N.attn1.{to_q,to_k,to_v,to_out.0}       blocks_N/self_attn/{q,k,v,o}
  blocks.N.self_attn.norm_q / k   blocks.N.attn1.norm_q / k                      blocks_N/self_attn/norm_q / k
  blocks.N.cross_attn.*           blocks.N.attn2.*                               blocks_N/cross_attn/*
  blocks.N.norm3                  blocks.N.norm2 (diffusers swaps the names)     blocks_N/norm3
  blocks.N.ffn.0 / .2             blocks.N.ffn.net.0.proj / ffn.net.2            blocks_N/ffn/fc1 / fc2

Running a loaded model like the reference: DiT(**dit_kwargs_from_config(folder)) (text_pool off), the text
context zero-padded to Wan's text_len (512) and context_mask=None (Wan attends to the padding too), t = the
reference timestep / 1000, latents [B, F, H, W, C] (the references take [B, C, F, H, W]).
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Callable, Iterable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vidgen.weights import safetensors_io
from vidgen.weights import streaming

WeightsError = safetensors_io.WeightsError
LAYOUTS = ("wan", "diffusers")

# vidgen module (or parameter) path -> (Wan name, diffusers name).
_TOP = {
    "patch_embedding": ("patch_embedding", "patch_embedding"),
    "time_embedding_0": ("time_embedding.0", "condition_embedder.time_embedder.linear_1"),
    "time_embedding_2": ("time_embedding.2", "condition_embedder.time_embedder.linear_2"),
    "time_projection": ("time_projection.1", "condition_embedder.time_proj"),
    "text_embedding_0": ("text_embedding.0", "condition_embedder.text_embedder.linear_1"),
    "text_embedding_2": ("text_embedding.2", "condition_embedder.text_embedder.linear_2"),
    "head": ("head.head", "proj_out"),
}
_TOP_PARAMS = {"head_modulation": ("head.modulation", "scale_shift_table")}
_ATTN = {"q": ("q", "to_q"), "k": ("k", "to_k"), "v": ("v", "to_v"), "o": ("o", "to_out.0"),
         "norm_q": ("norm_q", "norm_q"), "norm_k": ("norm_k", "norm_k")}
_BLOCK = {
    **{f"self_attn/{m}": (f"self_attn.{w}", f"attn1.{d}") for m, (w, d) in _ATTN.items()},
    **{f"cross_attn/{m}": (f"cross_attn.{w}", f"attn2.{d}") for m, (w, d) in _ATTN.items()},
    "norm3": ("norm3", "norm2"),
    "ffn/fc1": ("ffn.0", "ffn.net.0.proj"),
    "ffn/fc2": ("ffn.2", "ffn.net.2"),
}
_BLOCK_PARAMS = {"modulation": ("modulation", "scale_shift_table")}
_LEAVES = {"kernel": "weight", "bias": "bias", "weight": "weight"}
_TEXT_IN = {"wan": "text_embedding.0.weight", "diffusers": "condition_embedder.text_embedder.linear_1.weight"}
_IMAGE_KEYS = re.compile(r"(^img_emb\.|\.k_img\.|\.v_img\.|\.norm_k_img\.|image_embedder\.|\.add_[kv]_proj\.|"
                         r"\.norm_added_k\.)")


def _check_layout(layout: str):
  if layout not in LAYOUTS:
    raise ValueError(f"layout {layout!r}: allowed {LAYOUTS}")


def _permute(leaf: str, ndim: int) -> tuple[int, ...] | None:
  if leaf != "kernel":
    return None
  if ndim == 2:
    return (1, 0)  # Linear [out, in] -> Dense [in, out]
  if ndim == 5:
    return (2, 3, 4, 1, 0)  # Conv3d [O, I, D, H, W] -> [D, H, W, I, O]
  raise ValueError(f"a {ndim}-d kernel has no Wan counterpart")


def _name(path: tuple[str, ...], modules: Mapping, params: Mapping, col: int) -> str | None:
  """The checkpoint name of one (unstacked) leaf path within `modules`/`params`, or None when it has none."""
  joined = "/".join(path)
  if joined in params:
    return params[joined][col]
  module, leaf = "/".join(path[:-1]), path[-1]
  if module in modules and leaf in _LEAVES:
    return f"{modules[module][col]}.{_LEAVES[leaf]}"
  return None


def key_map(shapes: Mapping[tuple[str, ...], tuple[int, ...]], layout: str) -> dict[tuple[str, ...], streaming.Source]:
  """{vidgen param path: Source} for a DiT's flat parameter shapes (scanned `blocks` or unscanned `blocks_i`).
  Paths without a Wan counterpart (text_pool_*) are left out, so streaming.check names them."""
  _check_layout(layout)
  col = LAYOUTS.index(layout)
  out = {}
  for path, shape in shapes.items():
    shape = tuple(shape)
    block = re.fullmatch(r"blocks_(\d+)", path[0])
    if path[0] == "blocks":  # scanned: one leaf, layers on the leading axis
      name = _name(path[1:], _BLOCK, _BLOCK_PARAMS, col)
      if name is None:
        continue
      out[path] = streaming.Source(tuple(f"blocks.{i}.{name}" for i in range(shape[0])),
                                   _permute(path[-1], len(shape) - 1), stacked=True)
      continue
    if block:
      name = _name(path[1:], _BLOCK, _BLOCK_PARAMS, col)
      name = None if name is None else f"blocks.{block.group(1)}.{name}"
    else:
      name = _name(path, _TOP, _TOP_PARAMS, col)
    if name is not None:
      out[path] = streaming.Source((name,), _permute(path[-1], len(shape)))
  return out


def detect_layout(names: Iterable[str]) -> str:
  """'wan' or 'diffusers', from a checkpoint's tensor names."""
  names = list(names)
  diffusers = any(n.startswith(("condition_embedder.", "proj_out.")) or ".attn1." in n for n in names)
  wan = any(n.startswith(("time_embedding.", "time_projection.", "text_embedding.", "head.")) or ".self_attn." in n
            for n in names)
  if diffusers != wan:
    return "diffusers" if diffusers else "wan"
  sample = ", ".join(sorted(names)[:5])
  kind = "both the Wan and the diffusers" if wan else "neither the Wan (time_embedding.0, blocks.N.self_attn.q) nor " \
      "the diffusers (condition_embedder.*, blocks.N.attn1.to_q)"
  prefix = os.path.commonprefix(names) if len(names) > 1 else ""
  more = f" (every name starts with {prefix!r}: strip that prefix first)" if "." in prefix else ""
  raise WeightsError(f"not a Wan 2.1 DiT checkpoint: its tensor names ({len(names)}, first {sample}) follow {kind} "
                     f"layout{more}")


def abstract_params(model: nn.Module, text_dim: int):
  """The DiT's parameter tree as jax.ShapeDtypeStruct (nothing allocated), for text contexts of width text_dim."""
  pt, ph, pw = model.patch_size
  x = jnp.zeros((1, pt, ph, pw, model.in_dim), model.dtype)
  ctx = jnp.zeros((1, 1, text_dim), model.dtype)
  pooled = jnp.zeros((1, text_dim), model.dtype) if getattr(model, "text_pool", False) else None
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, jnp.zeros((1,)), ctx, pooled=pooled))
  return nn.meta.unbox(variables["params"])


def _describe(shapes: Mapping[tuple[str, ...], tuple[int, ...]]) -> str:
  """The Wan config a parameter tree implies, for error messages."""
  def get(*path):
    return shapes.get(tuple(path))
  kernel = get("patch_embedding", "kernel")
  blocks = [p for p in shapes if p[0] == "blocks" or p[0].startswith("blocks_")]
  scanned = any(p[0] == "blocks" for p in blocks)
  depth = (get("blocks", "modulation") or (0,))[0] if scanned else len({p[0] for p in blocks})
  prefix = ("blocks",) if scanned else ("blocks_0",)
  fc1 = shapes.get(prefix + ("ffn", "fc1", "kernel"))
  head = get("head", "kernel")
  parts = []
  if kernel:
    parts += [f"dim={kernel[-1]}", f"in_dim={kernel[3]}", f"patch_size={tuple(kernel[:3])}"]
    if head:
      parts.append(f"out_dim={head[-1] // int(np.prod(kernel[:3]))}")
  if fc1:
    parts.append(f"ffn_dim={fc1[-1]}")
  if get("time_embedding_0", "kernel"):
    parts.append(f"freq_dim={get('time_embedding_0', 'kernel')[0]}")
  if get("text_embedding_0", "kernel"):
    parts.append(f"text_dim={get('text_embedding_0', 'kernel')[0]}")
  parts += [f"num_layers={depth}", f"cross_attn_norm={prefix + ('norm3', 'weight') in shapes}",
            f"qk_norm={prefix + ('self_attn', 'norm_q', 'weight') in shapes}"]
  return ", ".join(parts)


def _config_beside(path: str) -> str:
  folder = path if os.path.isdir(path) else os.path.dirname(path)
  try:
    kwargs = dit_kwargs_from_config(folder)
  except (WeightsError, OSError):
    return ""
  keys = ("dim", "in_dim", "out_dim", "patch_size", "ffn_dim", "freq_dim", "depth", "cross_attn_norm", "qk_norm")
  return "; its config.json says " + ", ".join(f"{'num_layers' if k == 'depth' else k}={kwargs[k]}" for k in keys)


def load_dit(path: str, model_or_abstract_params, shardings=None,
             dtype_of: Callable[[tuple[str, ...]], Any] | None = None) -> dict:
  """A Wan 2.1 DiT checkpoint (either layout, detected from the names; a .safetensors file, an index.json or a
  folder) as the params tree of vidgen's DiT: checked strictly against the model before a byte of weights is
  read, then streamed tensor by tensor. `model_or_abstract_params`: a DiT module (its params are shaped with
  the checkpoint's text width) or its (abstract or concrete, possibly boxed) params tree; `shardings`: a tree
  of the same structure of jax.sharding.Sharding, each leaf placed on its own; `dtype_of(path)`: the dtype per
  leaf (default the abstract dtype)."""
  path = os.fspath(path)
  folder = os.path.join(path, "transformer")
  if os.path.isdir(path) and os.path.exists(os.path.join(folder, "config.json")):
    path = folder  # a diffusers pipeline folder
  files = safetensors_io.TensorFiles(path)
  layout = detect_layout(files.keys())
  if isinstance(model_or_abstract_params, nn.Module):
    text_key = _TEXT_IN[layout]
    if text_key not in files:
      raise WeightsError(f"{path}: no {text_key}, so the text width is unknown (a Wan 2.1 DiT checkpoint in the "
                         f"{layout} layout has it)")
    abstract = abstract_params(model_or_abstract_params, files.shape(text_key)[1])
  else:
    abstract = model_or_abstract_params
  abstract_flat = streaming.targets(abstract, shardings)
  targets = {p: tuple(a.shape) for p, a in abstract_flat.items()}
  keys = key_map(targets, layout)
  hint = f" (the model expects a Wan 2.1 DiT with {_describe(targets)}{_config_beside(path)})"
  image = sorted(k for k in files.keys() if _IMAGE_KEYS.search(k))
  if image:
    hint += (f"; {image[0]} and {len(image) - 1} more belong to an image-to-video model's image cross-attention, "
             "which vidgen's DiT does not have")
  streaming.check(keys, targets, files, f"Wan 2.1 DiT checkpoint in the {layout} layout", hint)
  return streaming.to_tree(streaming.load(keys, abstract_flat, files, dtype_of))


def to_state_dict(params, layout: str, dtype=None) -> dict[str, np.ndarray]:
  """vidgen DiT params (scanned or not) -> {name: numpy array} in the Wan or the diffusers layout, as the
  reference stores it (Linear [out, in], Conv3d OIDHW, one tensor per layer); `dtype` casts (default: as is).
  Raises WeightsError for a parameter with no Wan counterpart (text_pool_*)."""
  flat = streaming.flat_params(params)
  keys = key_map({p: tuple(np.shape(a)) for p, a in flat.items()}, layout)
  unmapped = sorted("/".join(p) for p in set(flat) - set(keys))
  if unmapped:
    raise WeightsError(f"{len(unmapped)} DiT parameters have no Wan 2.1 counterpart: {', '.join(unmapped[:10])} "
                       "(build the DiT with text_pool=False)")
  out = {}
  for path, source in keys.items():
    array = np.asarray(jax.device_get(flat[path]))
    if dtype is not None:
      array = array.astype(dtype)
    layers = list(array) if source.stacked else [array]
    inverse = None if source.permute is None else tuple(int(i) for i in np.argsort(source.permute))
    for key, layer in zip(source.keys, layers):
      out[key] = np.ascontiguousarray(np.transpose(layer, inverse) if inverse else layer)
  return out


# Config fields: diffusers' transformer/config.json and Wan's config.json -> DiT keyword arguments.
_DIFFUSERS_FIELDS = {"patch_size", "num_attention_heads", "attention_head_dim", "in_channels", "out_channels",
                     "text_dim", "freq_dim", "ffn_dim", "num_layers", "cross_attn_norm", "qk_norm", "eps",
                     "image_dim", "added_kv_proj_dim", "rope_max_seq_len", "pos_embed_seq_len"}
_WAN_FIELDS = {"model_type", "patch_size", "text_len", "in_dim", "dim", "ffn_dim", "freq_dim", "text_dim", "out_dim",
               "num_heads", "num_layers", "window_size", "qk_norm", "cross_attn_norm", "eps"}


def read_config(path: str) -> dict:
  """The JSON object of a config.json, a folder holding one, or a diffusers pipeline folder (transformer/)."""
  path = os.fspath(path)
  if os.path.isdir(path):
    sub = os.path.join(path, "transformer", "config.json")
    path = sub if os.path.exists(sub) else os.path.join(path, "config.json")
  try:
    with open(path) as f:
      config = json.load(f)
  except FileNotFoundError:
    raise WeightsError(f"{path}: no such file") from None
  except ValueError as e:
    raise WeightsError(f"{path}: not JSON ({e})") from None
  if not isinstance(config, dict):
    raise WeightsError(f"{path}: not a JSON object")
  return config


def dit_kwargs_from_config(config_or_path) -> dict:
  """A Wan 2.1 DiT config (diffusers' WanTransformer3DModel config or Wan's WanModel config.json; a dict or a
  path) -> the keyword arguments of vidgen.models.dit.DiT. Raises WeightsError naming the first field vidgen's
  DiT cannot honour (an image-to-video model, windowed attention, an unknown field)."""
  where = "config"
  if isinstance(config_or_path, Mapping):
    config = dict(config_or_path)
  else:
    where = os.fspath(config_or_path)
    config = read_config(where)
  fields = {k: v for k, v in config.items() if not k.startswith("_")}
  diffusers = config.get("_class_name") == "WanTransformer3DModel" or "num_attention_heads" in fields
  wan = config.get("_class_name") == "WanModel" or "num_heads" in fields

  def refuse(field, why):
    raise WeightsError(f"{where}: {field}={fields.get(field)!r}: {why}")

  if diffusers == wan:
    raise WeightsError(f"{where}: not a Wan 2.1 DiT config (neither WanTransformer3DModel's num_attention_heads nor "
                       f"WanModel's num_heads; _class_name={config.get('_class_name')!r})")
  known = _DIFFUSERS_FIELDS if diffusers else _WAN_FIELDS
  for field in sorted(fields):
    if field not in known:
      refuse(field, f"not a field of {'WanTransformer3DModel' if diffusers else 'WanModel'} that vidgen knows")
  try:
    if diffusers:
      for field in ("image_dim", "added_kv_proj_dim", "pos_embed_seq_len"):
        if fields.get(field) is not None:
          refuse(field, "an image-to-video model: vidgen's DiT has no image embedding or image cross-attention")
      if fields.get("qk_norm", "rms_norm_across_heads") != "rms_norm_across_heads":
        refuse("qk_norm", "vidgen's DiT has 'rms_norm_across_heads' (RMSNorm over the full width), Wan 2.1's kind")
      heads = int(fields.get("num_attention_heads", 40))
      kwargs = dict(dim=heads * int(fields.get("attention_head_dim", 128)), num_heads=heads,
                    ffn_dim=int(fields.get("ffn_dim", 13824)), freq_dim=int(fields.get("freq_dim", 256)),
                    depth=int(fields.get("num_layers", 40)), in_dim=int(fields.get("in_channels", 16)),
                    out_dim=int(fields.get("out_channels") or fields.get("in_channels", 16)),
                    patch_size=tuple(int(p) for p in fields.get("patch_size", (1, 2, 2))), qk_norm=True,
                    cross_attn_norm=bool(fields.get("cross_attn_norm", True)), eps=float(fields.get("eps", 1e-6)))
    else:
      if fields.get("model_type", "t2v") != "t2v":
        refuse("model_type", "vidgen's DiT is Wan's text-to-video model (t2v); i2v and flf2v need the CLIP image "
               "embedding and image cross-attention, vace its context blocks")
      if tuple(fields.get("window_size", (-1, -1))) != (-1, -1):
        refuse("window_size", "vidgen's DiT attends globally (-1, -1)")
      # WanModel's defaults; its save_config leaves patch_size, qk_norm, cross_attn_norm and text_dim out.
      kwargs = dict(dim=int(fields.get("dim", 2048)), num_heads=int(fields.get("num_heads", 16)),
                    ffn_dim=int(fields.get("ffn_dim", 8192)), freq_dim=int(fields.get("freq_dim", 256)),
                    depth=int(fields.get("num_layers", 32)), in_dim=int(fields.get("in_dim", 16)),
                    out_dim=int(fields.get("out_dim", 16)),
                    patch_size=tuple(int(p) for p in fields.get("patch_size", (1, 2, 2))),
                    qk_norm=bool(fields.get("qk_norm", True)),
                    cross_attn_norm=bool(fields.get("cross_attn_norm", True)), eps=float(fields.get("eps", 1e-6)))
  except WeightsError:
    raise
  except (TypeError, ValueError) as e:
    raise WeightsError(f"{where}: a field has the wrong type ({e})") from None
  if len(kwargs["patch_size"]) != 3:
    refuse("patch_size", "a 3D patch (t, h, w) is needed")
  if kwargs["dim"] % kwargs["num_heads"]:
    raise WeightsError(f"{where}: dim={kwargs['dim']} is not divisible by num_heads={kwargs['num_heads']}")
  return dict(kwargs, text_pool=False)
