"""Wan 2.1 from a downloaded checkpoint folder: where each part lives, the shapes its config files give, and the
parameters of the DiT, the VAE and the UMT5 text encoder (config.model='wan2.1', configs/wan.py).

Two layouts are what users download: diffusers' (model_index.json, transformer/, vae/, text_encoder/,
tokenizer/) and Wan's own (config.json and diffusion_pytorch_model*.safetensors for the DiT,
Wan2.1_VAE.safetensors, models_t5_umt5-xxl-enc-bf16.safetensors, the google/umt5-xxl/ tokenizer folder; the .pth
files Wan ships convert once with vidgen.weights.convert_pth). Everything is checked before anything compiles:
a folder with no recognisable checkpoint, a named preset the folder disagrees with, a missing shard, a pickle.
"""
from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from vidgen.models import build
from vidgen.models import dit as dit_lib
from vidgen.models import umt5 as umt5_lib
from vidgen.models import umt5_tokenizer
from vidgen.parallel import rules
from vidgen.parallel import sharding as sharding_lib
from vidgen.weights import safetensors_io
from vidgen.weights import umt5_weights
from vidgen.weights import wan_dit
from vidgen.weights import wan_vae

WeightsError = safetensors_io.WeightsError

# The original layout's file names (Wan 2.1's Hugging Face repositories).
_WAN_VAE = "Wan2.1_VAE"
_WAN_T5 = "models_t5_umt5-xxl-enc-bf16"
_WAN_TOKENIZER = os.path.join("google", "umt5-xxl")
_WAN_DIT = "diffusion_pytorch_model"


@dataclasses.dataclass(frozen=True)
class Folder:
  """The parts of a Wan 2.1 text-to-video checkpoint folder."""
  path: str
  layout: str              # 'diffusers' or 'wan'
  dit: str                 # diffusers transformer/ folder, or Wan's DiT .safetensors (or index) beside config.json
  vae: str                 # diffusers vae/ folder, or Wan2.1_VAE.safetensors
  text_encoder: str        # diffusers text_encoder/ folder, or models_t5_umt5-xxl-enc-bf16.safetensors
  tokenizer: str           # a folder with tokenizer.json and/or spiece.model


def _converted(folder: str, stem: str) -> str:
  """FOLDER/STEM.safetensors, or one line naming the converter when only Wan's .pth is there."""
  path = os.path.join(folder, stem + ".safetensors")
  if os.path.exists(path):
    return path
  if os.path.exists(os.path.join(folder, stem + ".pth")):
    safetensors_io.refuse_pickle(os.path.join(folder, stem + ".pth"))
  raise WeightsError(f"{folder}: no {stem}.safetensors (Wan's layout: convert {stem}.pth once with "
                     f"{safetensors_io.CONVERTER})")


def locate(path: str) -> Folder:
  """The parts of the checkpoint folder `path` (config.weights), in either layout."""
  if not path:
    raise WeightsError("config.weights is empty: give the Wan 2.1 checkpoint folder, e.g. --config.weights=DIR")
  if not os.path.isdir(path):
    raise WeightsError(f"config.weights={path!r}: no such folder")
  if os.path.exists(os.path.join(path, "model_index.json")):
    parts = {name: os.path.join(path, name) for name in ("transformer", "vae", "text_encoder", "tokenizer")}
    missing = [name for name, p in parts.items() if not os.path.isdir(p)]
    if missing:
      raise WeightsError(f"{path}: a diffusers pipeline folder without {', '.join(missing)}/")
    return Folder(path, "diffusers", parts["transformer"], parts["vae"], parts["text_encoder"], parts["tokenizer"])
  if os.path.exists(os.path.join(path, "config.json")):
    tokenizer = os.path.join(path, _WAN_TOKENIZER)
    if not os.path.isdir(tokenizer):
      raise WeightsError(f"{path}: Wan's layout needs the tokenizer folder {_WAN_TOKENIZER}/")
    dit = next((os.path.join(path, _WAN_DIT + suffix) for suffix in (".safetensors.index.json", ".safetensors")
                if os.path.exists(os.path.join(path, _WAN_DIT + suffix))), None)
    if dit is None:
      raise WeightsError(f"{path}: Wan's layout needs {_WAN_DIT}.safetensors (or its sharded index) beside "
                         "config.json")
    return Folder(path, "wan", dit, _converted(path, _WAN_VAE), _converted(path, _WAN_T5), tokenizer)
  raise WeightsError(f"{path}: no recognisable Wan 2.1 checkpoint (a diffusers folder has model_index.json, "
                     "Wan's own has config.json beside diffusion_pytorch_model*.safetensors)")


def _read_json(path: str) -> dict:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise WeightsError(f"{path}: cannot read it as JSON ({type(e).__name__})") from None


def shapes(folder: Folder) -> dict:
  """What the folder's config files say, as vidgen config fields by group ({'dit': ..., 'vae': ..., 'text': ...})
  and the VAE's latent statistics. Wan's own layout has a config for the DiT only: its VAE and text encoder are
  the published ones (the preset's fields), and its latent statistics Wan 2.1's."""
  dit_config = folder.dit if os.path.isdir(folder.dit) else os.path.join(os.path.dirname(folder.dit), "config.json")
  dit = wan_dit.dit_kwargs_from_config(dit_config)
  groups = {"dit": {k: dit[k] for k in ("patch_size", "dim", "ffn_dim", "freq_dim", "num_heads", "depth", "qk_norm",
                                        "cross_attn_norm")}}
  stats = wan_vae.WAN21_LATENT_STATS["latents_mean"], wan_vae.WAN21_LATENT_STATS["latents_std"]
  if folder.layout == "diffusers":
    vae, mean, std = wan_vae.vae_config_from_diffusers(folder.vae)
    text = umt5_lib.config_from_transformers(_read_json(os.path.join(folder.text_encoder, "config.json")))
    groups["vae"] = {k: vae[k] for k in ("dim", "z_dim", "dim_mult", "num_res_blocks", "attn_scales",
                                         "temporal_downsample", "decoder_level_attention")}
    groups["text"] = dict(vocab_size=text["vocab_size"], width=text["d_model"], depth=text["num_layers"],
                          num_heads=text["num_heads"], d_kv=text["d_kv"], d_ff=text["d_ff"],
                          num_buckets=text["relative_attention_num_buckets"],
                          max_distance=text["relative_attention_max_distance"])
    stats = mean, std
    if dit["in_dim"] != vae["z_dim"] or dit["out_dim"] != vae["z_dim"]:
      raise WeightsError(f"{folder.path}: the DiT reads {dit['in_dim']} and writes {dit['out_dim']} channels, the "
                         f"VAE has {vae['z_dim']} (an image-to-video or another family's checkpoint?)")
  return dict(groups=groups, latent_mean=np.asarray(stats[0], np.float32), latent_std=np.asarray(stats[1], np.float32))


def resolve(config):
  """(config, folder, found): a copy of a wan2.1 config with the folder's shapes. Preset 't2v' takes them all; a
  named preset (t2v_1_3b, t2v_14b) must agree, else one line names the first field that differs. Latent
  statistics given in config.vae.latent_mean / latent_std win over the folder's."""
  folder = locate(config.weights)
  found = shapes(folder)
  out = config.copy_and_resolve_references()
  named = config.get("preset", "t2v") != "t2v"
  plain = lambda v: tuple(v) if isinstance(v, (list, tuple)) else v
  for group, fields in found["groups"].items():
    for field, value in fields.items():
      if named and plain(out[group][field]) != plain(value):
        raise WeightsError(f"{folder.path} has {group}.{field}={plain(value)!r}, the preset {config.preset!r} "
                           f"{plain(out[group][field])!r}: --config=configs/wan.py:t2v takes every shape from the "
                           "folder")
      out[group][field] = plain(value)
  for name in ("latent_mean", "latent_std"):
    if len(out.vae[name]):
      found[name] = np.asarray(out.vae[name], np.float32)
    if found[name].shape != (out.vae.z_dim,):
      raise WeightsError(f"config.vae.{name} has {found[name].size} values: z_dim={out.vae.z_dim} needs as many")
  return out, folder, found


def dit_from_pretrained(path: str, shardings=None, dtype_of=None, **dit_overrides):
  """(DiT module, params) from a DiT checkpoint with its config.json, either layout: the module is
  DiT(**the config's shapes, reference_precision=True, **dit_overrides), e.g. scan_blocks=True. reference_precision
  computes the time sinusoid and RoPE as Wan's own code does (float64): Wan's WanModel then agrees to ~5e-7 in
  float32, diffusers' (a float32 sinusoid) to ~1e-5."""
  model = dit_lib.DiT(**{**wan_dit.dit_kwargs_from_config(path), "reference_precision": True, **dit_overrides})
  return model, wan_dit.load_dit(path, model, shardings=shardings, dtype_of=dtype_of)


def param_dtype(path: tuple[str, ...], dtype) -> jnp.dtype:
  """What a loaded tensor is stored as on the devices: the compute dtype, but norms, modulation and the time
  embedding stay float32, as the reference keeps them (diffusers' _keep_in_fp32_modules)."""
  if dtype == jnp.float32:
    return jnp.float32
  keep = any(word in name for name in path for word in ("norm", "modulation", "time_embedding"))
  return jnp.float32 if keep else dtype


@dataclasses.dataclass
class Weights:
  """The loaded parameters of a Wan 2.1 checkpoint, and what else generation needs from the folder."""
  dit: dict
  vae: dict
  text_encoder: dict
  tokenizer: umt5_tokenizer.UMT5Tokenizer
  latent_mean: np.ndarray
  latent_std: np.ndarray


def abstract(module, *inputs):
  """The module's boxed parameter tree as ShapeDtypeStructs (nothing allocated)."""
  rngs = {"params": jax.random.key(0), "sample": jax.random.key(1)}
  return jax.eval_shape(lambda: module.init(rngs, *inputs))["params"]


def load(config, folder: Folder, found: dict, mesh=None) -> Weights:
  """Every parameter of a resolved config's checkpoint, each tensor streamed onto its sharding of `mesh` by the
  logical axis rules (DiT and text encoder by the DiT's, the VAE by its own), or onto one device without one."""
  dtype = build.compute_dtype(config.dit.dtype)
  policy = lambda path: param_dtype(path, dtype)
  dit_model, vae_model, text_model = build.dit(config), build.vae(config), build.umt5(config)
  sc = build.compression(config)[1]  # parameter shapes do not depend on the clip: one small frame
  trees = {"dit": abstract(dit_model, *build.denoiser_init_inputs(config)[:2],
                           jnp.zeros((1, 1, config.text.width), jnp.float32)),
           "vae": abstract(vae_model, jnp.zeros((1, 1, sc, sc, 3), jnp.float32)),
           "text_encoder": abstract(text_model, jnp.zeros((1, 1), jnp.int32))}
  shardings = {}
  if mesh is not None:
    for name, tree in trees.items():
      shardings[name] = sharding_lib.logical_shardings(tree, mesh, rules.VAE_RULES if name == "vae" else
                                                       rules.DIT_RULES)
  dit_params = wan_dit.load_dit(folder.dit, trees["dit"], shardings=shardings.get("dit"), dtype_of=policy)
  vae_params = wan_vae.load_vae(folder.vae, trees["vae"], shardings=shardings.get("vae"))  # float32, as Wan runs it
  text_params = umt5_weights.load_umt5(folder.text_encoder, trees["text_encoder"],
                                       shardings=shardings.get("text_encoder"), dtype_of=policy)
  tokenizer = umt5_tokenizer.UMT5Tokenizer.from_folder(folder.tokenizer, max_length=config.text.max_length)
  return Weights(dit_params, vae_params, text_params, tokenizer, found["latent_mean"], found["latent_std"])
