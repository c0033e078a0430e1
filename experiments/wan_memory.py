r"""Per-device memory of Wan 2.1 14B text-to-video on an fsdp=8 mesh (8 faked CPU devices), from shapes only.

  python experiments/wan_memory.py [--frames=81] [--out=F]

Nothing is allocated at full size: parameters are `jax.eval_shape` trees (boxed with their logical axis names),
their shardings come from vidgen/parallel/rules.py DIT_RULES through `parallel.sharding.logical_shardings`, and
the sampling step is lowered and compiled, never run (XLA's memory_analysis()). Measured:

1. Parameters of the DiT (float32, and bfloat16 as vidgen.models.wan.param_dtype stores loaded weights: norms,
   modulation and the time embedding stay float32) and of the UMT5-XXL text encoder (the same two policies):
   total bytes, bytes per device (sum over leaves of the shard shape's size x itemsize) and the ratio of the
   latter to an even split, total / devices. The target is <= 1.05. Leaves that no mesh axis splits are
   listed (top 10 by bytes) with their logical axis names.
2. One sampling step: WanGenerator's guided velocity is one DiT call on a batch of 2 (conditional + negative
   prompt) with the text context [2, 512, 4096], here in bfloat16 compute on the bfloat16 parameters and with
   dit.attention='xla' (the default), under DIT_RULES as they are. Batch 2 does not divide data x fsdp = 8, so
   jit's input shardings are replicated; inside, the DiT's activation constraints (activation_batch -> data x
   fsdp) still split the batch, unevenly: XLA pads 2 to 8 rows, so each device holds one example's activations
   (devices 0 and 1 the real ones, the other six padding).
   memory_analysis(): arguments, outputs, temporaries, generated code; total = their sum - aliased bytes.
   The largest per-device buffers of the partitioned HLO are listed, beside what the XLA attention's
   [B, heads, L, L] float32 score tensor costs, so the reader sees where the temporaries come from. On CPU the
   temporaries also hold a float32 copy of the device's bfloat16 weight shards (XLA's CPU backend upcasts bf16
   dots and hoists the converts of all stacked layers out of the scan loop: ~6.7 GiB for 14B on fsdp=8), which
   an accelerator's compile does not make; `temp_beyond_two_score_buffers_bytes` is mostly that.

--frames picks the clip length (latent frames 1 + (frames - 1) / 4); several (--frames=17,33,81) measure how the
step scales; --preset=t2v_1_3b or --depth=N (DiT and text encoder) shrink the model. On a 2-core CPU the
81-frame run takes ~6 s and 0.5 GiB of RSS (~3 s a compile at any frame count: the 40 blocks are one scanned
body).
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import resource
import sys
import time

from absl import app
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_FRAMES = flags.DEFINE_list("frames", ["81"], "Clip lengths in frames (81: 480p Wan's 5 s; each 1 + 4k).")
_OUT = flags.DEFINE_string("out", None, "Also write the results as JSON here.")
_PRESET = flags.DEFINE_string("preset", "t2v_14b", "configs/wan.py preset.")
_DEPTH = flags.DEFINE_integer("depth", 0, "Override dit.depth and text.depth (0: the preset's).")
_FSDP = flags.DEFINE_integer("fsdp", 8, "Faked CPU devices = mesh fsdp size (data=tensor=context=1).")
_HEIGHT = flags.DEFINE_integer("height", 480, "Clip height in pixels.")
_WIDTH = flags.DEFINE_integer("width", 832, "Clip width in pixels.")
_STEP = flags.DEFINE_bool("step", True, "Also compile the sampling step (off: parameters only).")

TARGET = 1.05  # per-device parameter bytes <= (total / devices) x TARGET
_FIELDS = ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes", "generated_code_size_in_bytes",
           "alias_size_in_bytes")
_ITEMSIZE = {"f64": 8, "f32": 4, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "s8": 1, "u8": 1, "pred": 1, "s64": 8}


def load_config(preset: str, frames: int | None = None, height: int = 480, width: int = 832, depth: int = 0):
  """configs/wan.py's preset, loaded by path as the CLI loads it, at the given clip shape, bfloat16 compute."""
  spec = importlib.util.spec_from_file_location("wan_config", os.path.join(ROOT, "configs", "wan.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(preset)
  config.data.height, config.data.width = height, width
  if frames is not None:
    config.data.num_frames = frames
  config.dit.dtype = "bfloat16"  # 'auto' is float32 on CPU; an accelerator runs bfloat16
  if depth:
    config.dit.depth = config.text.depth = depth
  return config


def _path(p) -> tuple[str, ...]:
  return tuple(str(getattr(k, "key", k)) for k in p)


def with_policy(boxed, dtype):
  """The boxed abstract tree with each leaf's dtype as vidgen.models.wan.param_dtype stores it for `dtype`."""
  import flax.linen as nn
  import jax
  from vidgen.models import wan

  def leaf(p, x):
    box = x if isinstance(x, nn.Partitioned) else None
    value = x.value if box is not None else x
    new = jax.ShapeDtypeStruct(value.shape, wan.param_dtype(_path(p), dtype))
    return box.replace_boxed(new) if box is not None else new

  return jax.tree_util.tree_map_with_path(leaf, boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))


def param_bytes(boxed, mesh, rules) -> dict:
  """Total and per-device bytes of a boxed abstract tree under logical_shardings(rules); leaves no mesh axis
  splits (their whole bytes on every device), top 10 by bytes, with their logical axis names."""
  import flax.linen as nn
  import jax
  import numpy as np
  from vidgen.parallel import sharding as sharding_lib

  shardings = sharding_lib.logical_shardings(boxed, mesh, rules)
  is_box = lambda x: isinstance(x, nn.Partitioned)
  leaves = jax.tree_util.tree_leaves_with_path(boxed, is_leaf=is_box)
  shards = jax.tree_util.tree_leaves(shardings)
  total = per_device = 0
  unsplit, dtypes = [], {}
  for (p, x), s in zip(leaves, shards):
    value = x.value if is_box(x) else x
    item = np.dtype(value.dtype).itemsize
    whole = math.prod(value.shape) * item
    shard = math.prod(s.shard_shape(value.shape)) * item
    total += whole
    per_device += shard
    dtypes[str(np.dtype(value.dtype))] = dtypes.get(str(np.dtype(value.dtype)), 0) + whole
    if shard == whole and mesh.size > 1:
      unsplit.append({"leaf": "/".join(_path(p)), "shape": list(value.shape), "dtype": str(np.dtype(value.dtype)),
                      "bytes": whole, "logical_axes": list(x.names) if is_box(x) else None,
                      "spec": str(s.spec)})
  unsplit.sort(key=lambda r: -r["bytes"])
  even = total / mesh.size
  return {"params": sum(math.prod((x.value if is_box(x) else x).shape) for _, x in leaves), "leaves": len(leaves),
          "total_bytes": total, "per_device_bytes": per_device, "even_split_bytes": even,
          "ratio": per_device / even, "meets_target": per_device / even <= TARGET, "bytes_by_dtype": dtypes,
          "unsplit_leaves": len(unsplit), "unsplit_bytes": sum(r["bytes"] for r in unsplit),
          "unsplit_top10": unsplit[:10]}


def largest_buffers(hlo_text: str, top: int = 6) -> list[dict]:
  """The largest array shapes in a (partitioned, per-device) HLO module's text, by bytes, deduplicated."""
  seen = {}
  for dtype, dims in re.findall(r"\b(f64|f32|bf16|f16|s32|u32|s64|s8|u8|pred)\[([0-9,]*)\]", hlo_text):
    shape = tuple(int(d) for d in dims.split(",") if d)
    key = f"{dtype}[{','.join(map(str, shape))}]"
    if key not in seen:
      seen[key] = math.prod(shape) * _ITEMSIZE[dtype]
  return [{"shape": k, "bytes": v} for k, v in sorted(seen.items(), key=lambda kv: -kv[1])[:top]]


def step_memory(config, mesh, params_boxed, rules, batch: int = 2) -> dict:
  """Compile (never run) one guided DiT call of WanGenerator: batch `batch`, bfloat16 compute."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  from vidgen.models import build
  from vidgen.parallel import sharding as sharding_lib
  from vidgen.parallel import mesh as mesh_lib

  dit = build.dit(config)
  grid = build.latent_grid(config)
  tokens = build.dit_tokens(config, grid)
  param_shardings = nn.unbox(sharding_lib.logical_shardings(params_boxed, mesh, rules))
  params = nn.unbox(params_boxed)
  data = mesh_lib.data_parallel_size(mesh)
  inputs = mesh_lib.batch_sharding(mesh) if batch % data == 0 else mesh_lib.replicated(mesh)
  x = jax.ShapeDtypeStruct((batch, *grid, build.dit_in_dim(config)), jnp.float32)
  t = jax.ShapeDtypeStruct((batch,), jnp.float32)
  ctx = jax.ShapeDtypeStruct((batch, config.text.max_length, config.text.width), build.compute_dtype(config.dit.dtype))
  fn = lambda p, x, t, ctx: dit.apply({"params": p}, x, t, ctx)
  start = time.time()
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    lowered = jax.jit(fn, in_shardings=(param_shardings, inputs, inputs, inputs)).lower(params, x, t, ctx)
    lower_s = time.time() - start
    compiled = lowered.compile()
  compile_s = time.time() - start - lower_s
  mem = compiled.memory_analysis()
  out = {f: int(getattr(mem, f)) for f in _FIELDS}
  out["total"] = (out["argument_size_in_bytes"] + out["output_size_in_bytes"] + out["temp_size_in_bytes"]
                  + out["generated_code_size_in_bytes"] - out["alias_size_in_bytes"])
  heads, f32 = config.dit.num_heads, 4
  per_device = -(-batch // data)  # activation_batch splits the batch over data x fsdp, padded to a multiple
  scores = per_device * heads * tokens * tokens * f32
  out.update(
      frames=config.data.num_frames, latent_grid=list(grid), tokens=tokens, batch=batch,
      input_sharding=str(inputs.spec), attention=config.dit.attention, compute_dtype=str(jnp.dtype(dit.dtype)),
      self_attention_scores_bytes=batch * heads * tokens * tokens * f32,
      cross_attention_scores_bytes=batch * heads * tokens * config.text.max_length * f32,
      examples_per_device=per_device, self_attention_scores_per_device_bytes=scores,
      # The XLA attention keeps two score-sized float32 buffers live (logits and softmax weights); the rest:
      temp_beyond_two_score_buffers_bytes=out["temp_size_in_bytes"] - 2 * scores,
      largest_buffers=largest_buffers(compiled.as_text()), lower_s=round(lower_s, 1), compile_s=round(compile_s, 1),
      peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
  return out


def measure(preset: str = "t2v_14b", frames=(81,), fsdp: int = 8, height: int = 480, width: int = 832,
            depth: int = 0, step: bool = True) -> dict:
  """Every number of this experiment (needs `fsdp` devices: faked CPU ones in `main`)."""
  import jax
  import jax.numpy as jnp
  import ml_collections
  from vidgen.models import build
  from vidgen.models import wan
  from vidgen.parallel import mesh as mesh_lib
  from vidgen.parallel import rules as rules_lib

  if jax.device_count() < fsdp:
    raise SystemExit(f"wan_memory needs {fsdp} devices, found {jax.device_count()} (main fakes them on CPU)")
  mesh = mesh_lib.create_mesh(ml_collections.ConfigDict(dict(data=1, fsdp=fsdp, tensor=1, context=1)),
                              jax.devices()[:fsdp])
  rules = rules_lib.DIT_RULES
  config = load_config(preset, frames[0], height, width, depth)
  start = time.time()
  ctx = jnp.zeros((1, 1, config.text.width), jnp.float32)
  dit_boxed = wan.abstract(build.dit(config), *build.denoiser_init_inputs(config, (1, 2, 2))[:2], ctx)
  umt5_boxed = wan.abstract(build.umt5(config), jnp.zeros((1, 1), jnp.int32))
  result = {"preset": preset, "mesh": dict(mesh.shape), "devices": fsdp, "target_ratio": TARGET,
            "dit": config.dit.to_dict(), "text": config.text.to_dict()}
  result["dit"].pop("dtype", None)
  params = {}
  for name, boxed in (("dit", dit_boxed), ("umt5", umt5_boxed)):
    for label, dtype in (("float32", jnp.float32), ("bfloat16", jnp.bfloat16)):
      params[f"{name}_{label}"] = param_bytes(with_policy(boxed, dtype), mesh, rules)
  result["params"] = params
  result["params_s"] = round(time.time() - start, 1)
  if step:
    result["step"] = [step_memory(load_config(preset, f, height, width, depth), mesh,
                                  with_policy(dit_boxed, jnp.bfloat16), rules) for f in frames]
  return result


def _gib(b) -> str:
  return f"{b / 2**30:,.2f}"


def table(result: dict) -> str:
  """The numbers as markdown."""
  d = result["devices"]
  lines = [f"Parameters on fsdp={d} ({result['preset']}, {', '.join(f'{k}={v}' for k, v in result['mesh'].items())})",
           "", f"| tree | parameters | total GiB | per device GiB | total/{d} GiB | ratio | <= {TARGET} | "
           "unsplit leaves (MiB) |", "|---|---:|---:|---:|---:|---:|:-:|---:|"]
  for name, p in result["params"].items():
    lines.append(f"| {name} | {p['params'] / 1e9:.3f}B | {_gib(p['total_bytes'])} | {_gib(p['per_device_bytes'])} | "
                 f"{_gib(p['even_split_bytes'])} | {p['ratio']:.4f} | {'yes' if p['meets_target'] else 'NO'} | "
                 f"{p['unsplit_leaves']} ({p['unsplit_bytes'] / 2**20:.1f}) |")
  for name, p in result["params"].items():
    if not p["meets_target"]:
      lines += ["", f"{name}: unsplit leaves, top 10 by bytes", "", "| leaf | shape | dtype | MiB | logical axes |",
                "|---|---|---|---:|---|"]
      lines += [f"| {r['leaf']} | {r['shape']} | {r['dtype']} | {r['bytes'] / 2**20:.2f} | {r['logical_axes']} |"
                for r in p["unsplit_top10"]]
  for s in result.get("step", []):
    lines += ["", f"Sampling step per device: {s['frames']} frames {result.get('size', '')} -> latents "
              f"{tuple(s['latent_grid'])}, {s['tokens']} tokens, batch {s['batch']} (inputs {s['input_sharding']}), "
              f"{s['compute_dtype']} compute, attention={s['attention']}; compile {s['compile_s']} s", "",
              "| arguments | outputs | temporaries | generated code | total | [B,heads,L,L] f32 scores (whole) | "
              f"[{s['examples_per_device']},heads,L,L] (per device) | [B,heads,L,512] f32 (whole) |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|",
              f"| {_gib(s['argument_size_in_bytes'])} | {_gib(s['output_size_in_bytes'])} | "
              f"{_gib(s['temp_size_in_bytes'])} | {_gib(s['generated_code_size_in_bytes'])} | {_gib(s['total'])} | "
              f"{_gib(s['self_attention_scores_bytes'])} | {_gib(s['self_attention_scores_per_device_bytes'])} | "
              f"{_gib(s['cross_attention_scores_bytes'])} |", "",
              f"temporaries beyond two [{s['examples_per_device']},heads,L,L] f32 buffers: "
              f"{_gib(s['temp_beyond_two_score_buffers_bytes'])} GiB", "",
              "largest per-device buffers (GiB): " + ", ".join(f"{b['shape']} {_gib(b['bytes'])}"
                                                                for b in s["largest_buffers"])]
  return "\n".join(lines) + "\n(GiB = 2^30 bytes)"


def main(argv):
  del argv
  os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the faked devices are CPU ones
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             f" --xla_force_host_platform_device_count={_FSDP.value}")
  import jax
  start = time.time()
  result = measure(_PRESET.value, tuple(int(f) for f in _FRAMES.value), _FSDP.value, _HEIGHT.value, _WIDTH.value,
                   _DEPTH.value, _STEP.value)
  result["size"] = f"{_WIDTH.value}x{_HEIGHT.value}"
  result["platform"] = jax.devices()[0].platform
  result["wall_s"] = round(time.time() - start, 1)
  result["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  print(table(result))
  print(f"wall {result['wall_s']} s, peak RSS {_gib(result['peak_rss_bytes'])} GiB")
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      json.dump(result, f, indent=1)


if __name__ == "__main__":
  sys.path.insert(0, ROOT)
  app.run(main)
