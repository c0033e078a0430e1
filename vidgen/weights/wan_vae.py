"""Wan 2.1 VAE weights into vidgen's ``VideoVAE``, from either public layout, checked strictly, then streamed.

Two layouts name the same tensors (PyTorch shapes, identical values):

* ``wan``: the original ``Wan2.1_VAE.pth`` state dict (``WanVAE_``; convert the pickle once with
  ``python -m vidgen.weights.convert_pth``), whose module tree vidgen's param tree copies name for name.
* ``diffusers``: ``AutoencoderKLWan`` (``vae/diffusion_pytorch_model.safetensors`` + ``vae/config.json``).

The one naming rule (vidgen path <-> Wan key) lives here; ``vae.wan_key_to_flax_path`` and friends delegate to it:
``_N`` <-> ``.N`` (Sequential indices), ``/`` <-> ``.``, ``kernel`` <-> ``weight``. Tensors: conv weights
OIDHW -> DHWIO (``permute (2, 3, 4, 1, 0)``), OIHW -> HWIO (``(2, 3, 1, 0)``), RMS_norm ``gamma`` ``(C, 1, ..)``
squeezed to ``(C,)``, biases as stored. diffusers renames modules on top of that:

==============================================  =================================================
Wan 2.1 key (vidgen path with ``.`` for ``/``)  diffusers ``AutoencoderKLWan`` key
==============================================  =================================================
``conv1.*`` / ``conv2.*``                       ``quant_conv.*`` / ``post_quant_conv.*``
``{encoder,decoder}.conv1.*``                   ``{encoder,decoder}.conv_in.*``
``*.head.0.gamma`` / ``*.head.2.*``             ``*.norm_out.gamma`` / ``*.conv_out.*``
``*.middle.0`` / ``.middle.1`` / ``.middle.2``  ``*.mid_block.resnets.0`` / ``.attentions.0`` / ``.resnets.1``
``encoder.downsamples.N.*``                     ``encoder.down_blocks.N.*`` (the same flat index)
``decoder.upsamples.N.*``                       ``decoder.up_blocks.L.resnets.J.*`` or ``.upsamplers.0.*``
                                                (``N`` counted over levels; ``L`` the level, ``J`` its resnet)
inside a residual block: ``residual.0.gamma``,  ``norm1.gamma``, ``conv1``, ``norm2.gamma``, ``conv2``,
``residual.2``, ``residual.3.gamma``,           ``conv_shortcut``
``residual.6``, ``shortcut``
attention (``norm``, ``to_qkv``, ``proj``),     unchanged
resample (``resample.1``, ``time_conv``)
==============================================  =================================================

diffusers' decoder levels have no attention blocks whatever ``attn_scales`` says (its ``WanUpBlock``), so a
vidgen model for a diffusers checkpoint with attention needs ``decoder_level_attention=False``
(``vae_config_from_diffusers`` sets it); with it the names and shapes match for any ``attn_scales`` (checked
against diffusers' and Wan's module trees; every public Wan 2.1 VAE has none). The key maps are derived from the
model's parameter tree, so any ``VideoVAE`` configuration gets one; the strict check then says what the checkpoint
lacks or has extra.

  kwargs, mean, std = wan_vae.vae_config_from_diffusers("Wan2.1-T2V-1.3B-Diffusers/vae")
  model = vae.VideoVAE(**kwargs)
  abstract = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 1, 16, 16, 3)))["params"]
  params = wan_vae.load_vae("Wan2.1-T2V-1.3B-Diffusers/vae", abstract)   # or the converted Wan2.1_VAE.safetensors
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Callable, Mapping

import numpy as np

from vidgen.weights import safetensors_io
from vidgen.weights import streaming

Path = tuple[str, ...]
WAN, DIFFUSERS = "wan", "diffusers"
LAYOUTS = (WAN, DIFFUSERS)

# Per-channel latent statistics of the public Wan 2.1 VAE (its ``WanVAE`` wrapper; AutoencoderKLWan's defaults):
# normalised latent = (z - mean) / std. vae.WAN21_LATENT_MEAN / _STD are these.
WAN21_LATENT_STATS = {
    "latents_mean": (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                     0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921),
    "latents_std": (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160),
}

# ----------------------------------------------------------------------------------------------------------------
# Names: vidgen path <-> Wan key <-> diffusers key
# ----------------------------------------------------------------------------------------------------------------


def wan_key_to_flax_path(key: str) -> Path:
  """``'decoder.upsamples.3.resample.1.weight'`` -> ``('decoder', 'upsamples_3', 'resample_1', 'kernel')``."""
  parts = re.sub(r"\.(\d+)(?=\.)", r"_\1", key).split(".")
  return (*parts[:-1], "kernel" if parts[-1] == "weight" else parts[-1])


def flax_path_to_wan_key(path: Path) -> str:
  """The inverse of ``wan_key_to_flax_path``."""
  *modules, leaf = path
  return ".".join([re.sub(r"_(\d+)$", r".\1", m) for m in modules] + ["weight" if leaf == "kernel" else leaf])


def wan_source(key: str, ndim: int) -> streaming.Source:
  """How the stored PyTorch tensor ``key`` becomes a leaf with ``ndim`` axes (5: a CausalConv3d kernel)."""
  if key.endswith("gamma"):
    return streaming.Source((key,), squeeze=True)
  if key.endswith("weight"):
    return streaming.Source((key,), permute=(2, 3, 4, 1, 0) if ndim == 5 else (2, 3, 1, 0))
  return streaming.Source((key,))


def wan_tensor_to_flax(key: str, value: np.ndarray) -> np.ndarray:
  """One tensor of a Wan (or diffusers) state dict in vidgen's layout (conv weights by their own rank)."""
  value = np.asarray(value)
  return wan_source(key, value.ndim).transform(value)


_TOP = {"conv1": "quant_conv", "conv2": "post_quant_conv"}
_ENDS = {"conv1": "conv_in", "head_0": "norm_out", "head_2": "conv_out"}
_MIDDLE = {"middle_0": "mid_block.resnets.0", "middle_1": "mid_block.attentions.0", "middle_2": "mid_block.resnets.1"}
_RESIDUAL = {"residual_0": "norm1", "residual_2": "conv1", "residual_3": "norm2", "residual_6": "conv2",
             "shortcut": "conv_shortcut"}


def _block_kind(subtree_paths) -> str:
  names = {name for path in subtree_paths for name in path}
  return "upsamplers" if "resample_1" in names else "attentions" if "to_qkv" in names else "resnets"


def decoder_blocks(paths) -> dict[str, str]:
  """``{'upsamples_N': 'up_blocks.L.resnets.J' | 'up_blocks.L.attentions.J' | 'up_blocks.L.upsamplers.0'}``
  from the decoder's flat blocks in a parameter tree: a level ends at its upsampler (the last has none)."""
  blocks: dict[int, list] = {}
  for path in paths:
    if len(path) > 2 and path[0] == "decoder" and re.fullmatch(r"upsamples_\d+", path[1]):
      blocks.setdefault(int(path[1].split("_")[1]), []).append(path[2:])
  out, level, counts = {}, 0, {"resnets": 0, "attentions": 0}
  for n in sorted(blocks):
    kind = _block_kind(blocks[n])
    if kind == "upsamplers":
      out[f"upsamples_{n}"] = f"up_blocks.{level}.upsamplers.0"
      level, counts = level + 1, {"resnets": 0, "attentions": 0}
    else:
      out[f"upsamples_{n}"] = f"up_blocks.{level}.{kind}.{counts[kind]}"
      counts[kind] += 1
  return out


def flax_path_to_diffusers_key(path: Path, decoder: Mapping[str, str]) -> str:
  """A vidgen path -> its ``AutoencoderKLWan`` key; ``decoder`` is ``decoder_blocks`` of the same tree."""
  *modules, leaf = path
  leaf = "weight" if leaf == "kernel" else leaf
  if len(modules) == 1 and modules[0] in _TOP:
    return f"{_TOP[modules[0]]}.{leaf}"
  if len(modules) < 2 or modules[0] not in ("encoder", "decoder"):
    raise ValueError(f"no diffusers name for the vidgen parameter {'/'.join(path)}")
  side, block, *rest = modules
  if block in _ENDS and not rest:
    head = _ENDS[block]
  elif block in _MIDDLE:
    head = _MIDDLE[block]
  elif block.startswith("downsamples_"):
    head = "down_blocks." + block.split("_")[1]
  elif block.startswith("upsamples_"):
    head = decoder[block]
  else:
    raise ValueError(f"no diffusers name for the vidgen parameter {'/'.join(path)}")
  rest = [_RESIDUAL.get(m, re.sub(r"_(\d+)$", r".\1", m)) for m in rest]
  return ".".join([side, head, *rest, leaf])


def key_map(targets: Mapping[Path, Any], layout: str) -> dict[Path, streaming.Source]:
  """The ``streaming.KeyMap`` of a VAE parameter tree (``{path: leaf with .shape}``) for ``layout``."""
  if layout not in LAYOUTS:
    raise ValueError(f"layout={layout!r}; allowed: {LAYOUTS}")
  decoder = decoder_blocks(targets) if layout == DIFFUSERS else {}
  out = {}
  for path, leaf in targets.items():
    key = flax_path_to_wan_key(path) if layout == WAN else flax_path_to_diffusers_key(path, decoder)
    out[path] = wan_source(key, len(leaf.shape))  # the tensor rule depends on the leaf name only
  return out


_DIFFUSERS_MARKS = ("quant_conv.", "post_quant_conv.", ".conv_in.", ".down_blocks.", ".up_blocks.", ".mid_block.",
                    ".norm_out.", ".conv_out.")
_WAN_MARKS = (".downsamples.", ".upsamples.", ".middle.", ".head.", "encoder.conv1.", "decoder.conv1.")


def detect_layout(keys) -> str:
  """'wan' or 'diffusers', from the tensor names; WeightsError when they are neither or both."""
  keys = list(keys)
  marked = lambda marks: [k for k in keys if any(k.startswith(m) if not m.startswith(".") else m in k for m in marks)]
  diffusers, wan = marked(_DIFFUSERS_MARKS), marked(_WAN_MARKS)
  if diffusers and not wan:
    return DIFFUSERS
  if wan and not diffusers:
    return WAN
  if diffusers and wan:
    raise safetensors_io.WeightsError(f"mixed VAE tensor names: Wan's (e.g. {wan[0]}) and diffusers' (e.g. "
                                      f"{diffusers[0]}); expected one layout")
  raise safetensors_io.WeightsError(f"not a Wan 2.1 VAE checkpoint: none of its {len(keys)} tensor names "
                                    f"({', '.join(sorted(keys)[:3])}{', ...' if len(keys) > 3 else ''}) is Wan's "
                                    "(encoder.downsamples.*, ...) or diffusers' (encoder.down_blocks.*, ...)")


# ----------------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------------


def describe(targets: Mapping[Path, Any]) -> str:
  """A short account of the VAE a parameter tree is for, named by what a checkpoint would have to match."""
  get = lambda *path: targets.get(path)
  parts = []
  if get("encoder", "conv1", "kernel") is not None:
    parts.append(f"dim={get('encoder', 'conv1', 'kernel').shape[-1]}")
  if get("conv2", "kernel") is not None:
    parts.append(f"z_dim={get('conv2', 'kernel').shape[-1]}")
  for side, name in (("encoder", "downsamples"), ("decoder", "upsamples")):
    blocks = {p[1] for p in targets if p[0] == side and p[1].startswith(name + "_")}
    attn = {p[1] for p in targets if p[0] == side and p[1] in blocks and "to_qkv" in p}
    parts.append(f"{len(blocks)} {side} blocks ({len(attn)} attention)")
  return ", ".join(parts)


def _checkpoint_summary(files: safetensors_io.TensorFiles, layout: str) -> str:
  first = {WAN: ("encoder.conv1.weight", "conv2.weight"), DIFFUSERS: ("encoder.conv_in.weight",
                                                                      "post_quant_conv.weight")}[layout]
  found = [f"{name}={files.shape(key)[0]}" for name, key in zip(("dim", "z_dim"), first) if key in files]
  return f"; the checkpoint ({layout} layout) has {', '.join(found) or 'neither conv_in nor post_quant_conv'}"


def _resolve_folder(path: str) -> str:
  """A diffusers pipeline folder -> its vae/ subfolder (a VAE folder or file stays as it is)."""
  if os.path.isdir(path) and os.path.isdir(os.path.join(path, "vae")) and not any(
      n.endswith((".safetensors", ".safetensors.index.json")) for n in os.listdir(path)):
    return os.path.join(path, "vae")
  return path


def load_vae(path, abstract_params, shardings=None, dtype_of: Callable[[Path], Any] | None = None, *,
             layout: str | None = None, config: Mapping[str, Any] | None = None) -> dict:
  """The params of a ``VideoVAE`` from Wan 2.1 VAE weights in either layout (detected from the names).

  ``path``: a .safetensors file, a sharded index, a diffusers ``vae/`` folder (or the pipeline folder above it)
  or a ``TensorFiles``. ``abstract_params``: the VAE's params tree (``jax.eval_shape`` of ``init``; boxed or
  not; ``{'params': ...}`` accepted), whose shapes and dtypes the loaded arrays take. ``shardings``: a tree of
  NamedShardings matching it (e.g. ``parallel.sharding.logical_shardings``), or None for default placement.
  ``dtype_of(path)`` overrides the dtype per leaf. ``config`` (VideoVAE keyword arguments) only names the
  expected model in errors. Every parameter must be filled, no tensor left over and every shape equal, or one
  WeightsError names the first ten missing / unexpected / misshaped tensors before any weight is read.
  Returns the nested params (plain arrays) ``VideoVAE.apply`` takes.
  """
  files = path if isinstance(path, safetensors_io.TensorFiles) else safetensors_io.TensorFiles(_resolve_folder(path))
  layout = layout or detect_layout(files.keys())
  abstract = streaming.targets(abstract_params, shardings)
  mapping = key_map(abstract, layout)
  expected = ", ".join(f"{k}={v}" for k, v in config.items()) if config else describe(abstract)
  hint = f" (the model: VideoVAE {expected}{_checkpoint_summary(files, layout)})"
  streaming.check(mapping, {p: tuple(a.shape) for p, a in abstract.items()}, files,
                  f"Wan VAE weights ({layout})", hint)
  return streaming.to_tree(streaming.load(mapping, abstract, files, dtype_of))


def params_from_state_dict(state_dict: Mapping[str, Any]) -> dict:
  """An in-memory Wan-layout state dict (name -> array) -> nested vidgen params (no checks; see ``load_vae``)."""
  tree = {}
  for key, value in state_dict.items():
    *path, leaf = wan_key_to_flax_path(key)
    node = tree
    for p in path:
      node = node.setdefault(p, {})
    node[leaf] = wan_tensor_to_flax(key, value)
  return tree


# ----------------------------------------------------------------------------------------------------------------
# diffusers config.json -> VideoVAE keyword arguments
# ----------------------------------------------------------------------------------------------------------------

# Fields of AutoencoderKLWan's config that vidgen either maps or checks (value: what vidgen supports).
_CHECKED = {"decoder_base_dim": None, "is_residual": False, "in_channels": 3, "out_channels": 3, "patch_size": None}


def vae_config_from_diffusers(config) -> tuple[dict, np.ndarray, np.ndarray]:
  """``(VideoVAE kwargs, latents_mean, latents_std)`` from an ``AutoencoderKLWan`` config (a dict, its
  config.json, or a folder holding it or a ``vae/`` one). Normalised latents are ``(z - mean) / std``.

  Raises WeightsError for a config vidgen's VAE cannot express (Wan 2.2's residual VAE, a separate decoder
  width, other channel counts) or fields it does not know, naming them.
  """
  if not isinstance(config, Mapping):
    path = str(config)
    for candidate in (path, os.path.join(path, "config.json"), os.path.join(path, "vae", "config.json")):
      if os.path.isfile(candidate):
        with open(candidate) as f:
          config = json.load(f)
        break
    else:
      raise safetensors_io.WeightsError(f"{path}: no diffusers VAE config.json there")
  if config.get("_class_name", "AutoencoderKLWan") != "AutoencoderKLWan":
    raise safetensors_io.WeightsError(f"config of a {config['_class_name']}, not an AutoencoderKLWan")
  known = {"base_dim", "z_dim", "dim_mult", "num_res_blocks", "attn_scales", "temperal_downsample", "dropout",
           "latents_mean", "latents_std", "scale_factor_temporal", "scale_factor_spatial", *_CHECKED}
  unknown = sorted(k for k in config if k not in known and not k.startswith("_"))
  problems = [f"unknown field(s) {unknown}"] if unknown else []
  base_dim = config.get("base_dim", 96)
  for name, supported in _CHECKED.items():
    value = config.get(name, supported)
    if name == "decoder_base_dim" and value in (None, base_dim):
      continue
    if name == "patch_size" and value in (None, 1):
      continue
    if value != supported:
      problems.append(f"{name}={value!r} (vidgen supports {supported!r})")
  dim_mult = tuple(int(m) for m in config.get("dim_mult", (1, 2, 4, 4)))
  temporal = tuple(bool(t) for t in config.get("temperal_downsample", (False, True, True)))
  kwargs = dict(dim=int(base_dim), z_dim=int(config.get("z_dim", 16)), dim_mult=dim_mult,
                num_res_blocks=int(config.get("num_res_blocks", 2)),
                attn_scales=tuple(float(s) for s in config.get("attn_scales", ())), temporal_downsample=temporal,
                dropout=float(config.get("dropout", 0.0)), decoder_level_attention=False)
  compression = {"scale_factor_temporal": 2 ** sum(temporal), "scale_factor_spatial": 2 ** (len(dim_mult) - 1)}
  for name, value in compression.items():
    if config.get(name) is not None and config[name] != value:
      problems.append(f"{name}={config[name]} but the architecture compresses {value}x")
  if problems:
    raise safetensors_io.WeightsError("AutoencoderKLWan config that vidgen's VideoVAE cannot express: "
                                      + "; ".join(problems))
  z = kwargs["z_dim"]
  stats = []
  for name in ("latents_mean", "latents_std"):
    value = np.asarray(config.get(name, WAN21_LATENT_STATS[name]), np.float32)
    if value.shape != (z,):
      raise safetensors_io.WeightsError(f"{name} has {value.size} values, z_dim={z} needs {z}")
    stats.append(value)
  return kwargs, stats[0], stats[1]

