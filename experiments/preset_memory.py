r"""Per-device memory and FLOPs of a preset's VAE and DiT train steps at several batch sizes, compile only: the
largest batch that fits one accelerator.

  python experiments/preset_memory.py --config=configs/shapes.py:small \
      --config.vae.dtype=bfloat16 --config.dit.dtype=bfloat16 --vae_batches=4,8,16,32 --dit_batches=16,32,64,128
  python experiments/preset_memory.py --config=configs/shapes.py:small --config.vae.dtype=float32 \
      --config.train_vae.grad_accum_steps=1 --vae_batches=8 --dit_batches=   # float32 (the old preset's log)
  python experiments/preset_memory.py --config=configs/shapes.py:small --budget_gb=40 --devices=1 [--out=F]

--config takes any config file and preset with dotted overrides (--config.train_vae.grad_accum_steps=2). Each step is the one vidgen/train/loop.py
train() compiles: the TrainSpec of vae_trainer.vae_spec / dit_trainer.dit_spec (loss, optimizer, EMA, rules,
gradient accumulation of the config), loop.state_creator and loop.make_train_step, on a mesh of config.mesh
over --devices devices. Nothing is allocated: the state is jax.eval_shape'd, the batch ShapeDtypeStructs of
what the trainers feed (VAE: uint8 clips; DiT on Shapes: cached posterior mean and std, caption ids and, with
dit.frame_conditioning, the uint8 clips the frozen VAE encodes in the step; the frozen VAE's params are
abstract too), and the step is lowered and compiled, never run.

Printed per step and batch: memory_analysis() arguments (state and batch), outputs, aliased (the donated state),
temporaries, generated code and total = arguments + outputs + temporaries - aliased, in GiB per device; the
loop's own log line adds generated code and does not subtract aliased bytes (its "step memory per device");
FLOPs from XLA's cost analysis (x devices, as the loop logs: it counts a scanned loop body once, so the DiT's
scanned blocks are undercounted) beside the analytic matmul count where the trainer has one (the DiT); and
whether the total fits --budget_gb x (1 - --headroom) (GB read as GiB: an 80 GB H100 reports 81559 MiB). Under
each table, the largest batch that fits by a straight line through the two largest measured totals (every
term but the state grows linearly with the batch: an extrapolation, said so). Note that JAX on GPU preallocates
75% of the memory unless XLA_PYTHON_CLIENT_MEM_FRACTION says otherwise.

Compiled here on the host CPU these numbers are XLA:CPU's memory_analysis(), an estimate of the GPU's: another
backend fuses, schedules and rematerialises differently, keeps no cuDNN workspaces, and computes bfloat16
convolutions and dots in float32 (its temporaries may hold float32 copies that a GPU's do not). Once a compile
takes longer than --max_compile_s, the larger batches of that step are skipped (reported as skipped).
"""
from __future__ import annotations

import copy
import json
import math
import os
import resource
import sys
import time

from absl import app
from absl import flags
from ml_collections import config_flags

from vidgen import atomic_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def define_flags():
  """This script's flags, defined when it runs (not on import: the tests import it beside vidgen.main and
  time_to_quality, which define --config and --out too)."""
  config_flags.DEFINE_config_file("config", os.path.join(ROOT, "configs/shapes.py:small"),
                                  "Config file and preset; --config.FIELD=VALUE overrides.", lock_config=False)
  flags.DEFINE_list("vae_batches", ["4", "8", "16", "32"], "VAE train-step batch sizes (global).")
  flags.DEFINE_list("dit_batches", ["16", "32", "64", "128"], "DiT train-step batch sizes (global).")
  flags.DEFINE_float("budget_gb", 80.0, "Accelerator memory per device, GiB.")
  flags.DEFINE_float("headroom", 0.1, "Fraction of --budget_gb kept free.")
  flags.DEFINE_integer("devices", 1, "Devices of the mesh (config.mesh over them; > 1 fakes CPU ones).")
  flags.DEFINE_float("max_compile_s", 300.0, "Skip a step's larger batches after a compile this long (0: never).")
  flags.DEFINE_string("out", None, "Also write the results as JSON here.")
  flags.DEFINE_string("from_json", None, "Print the tables of a saved --out (fits and extrapolations redone for "
                      "--budget_gb and --headroom) instead of compiling.")


STEPS = ("vae", "dit")


def _abstract_vae_params(config):
  """The frozen VAE's params as the DiT trainer reads them from a checkpoint (unboxed), shapes only."""
  import flax.linen as nn
  import jax
  from vidgen.models import build
  vae, dummy = build.vae(config), build.vae_init_input(config)
  boxed = jax.eval_shape(lambda r: vae.init({"params": r, "sample": r}, dummy)["params"], jax.random.key(0))
  return jax.tree_util.tree_map(lambda x: x.value if isinstance(x, nn.Partitioned) else x, boxed,
                                is_leaf=lambda x: isinstance(x, nn.Partitioned))


def step_inputs(config, step: str, batch: int):
  """(TrainSpec, batch ShapeDtypeStructs) of `step` ('vae' or 'dit') at global batch `batch`, as the trainers
  build them for `config` (its train_*.batch_size set to `batch`)."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from vidgen.models import build
  from vidgen.train import dit_trainer
  from vidgen.train import vae_trainer

  config = copy.deepcopy(config)
  d = config.data
  video = jax.ShapeDtypeStruct((batch, d.num_frames, d.height, d.width, 3), jnp.uint8)
  if step == "vae":
    config.train_vae.batch_size = batch
    return vae_trainer.vae_spec(config, None), {"video": video}
  if step != "dit":
    raise ValueError(f"step={step!r}: allowed {STEPS}")
  config.train_dit.batch_size = batch
  z = config.vae.z_dim
  stats = {"mean": np.zeros(z, np.float32), "std": np.ones(z, np.float32)}
  spec = dit_trainer.dit_spec(config, None, _abstract_vae_params(config), stats)
  ids = jax.ShapeDtypeStruct((batch, config.text.max_length), jnp.int32)
  latent = jax.ShapeDtypeStruct((batch, *build.latent_grid(config), z), jnp.float32)
  if d.name == "shapes":  # train_dit: the latent cache (+ the clips with frame conditioning, _WithVideos)
    structs = {"mean": latent, "std": latent, "ids": ids}
    if config.dit.frame_conditioning:
      structs["video"] = video
  elif config.dit.frame_conditioning:  # media_pixel_iterator
    structs = {"video": video, "ids": ids}
  else:  # the bucketed latent cache, at the data's default shape
    structs = {"mean": latent, "std": latent, "ids": ids}
  return spec, structs


def step_memory(config, step: str, batch: int, devices=None, seed: int = 0) -> dict:
  """Compile (never run) loop.train()'s step of `step` at global batch `batch` on config.mesh over `devices`
  (default: the first device): fsdp_memory.compiled_bytes per device, FLOPs and compile time."""
  import flax.linen as nn
  import jax
  from vidgen.parallel import mesh as mesh_lib
  from vidgen.train import loop
  from vidgen.train import metrics as metrics_lib
  from experiments import fsdp_memory

  devices = jax.devices()[:1] if devices is None else devices
  mesh = mesh_lib.create_mesh(config.mesh, devices)
  spec, batch_structs = step_inputs(config, step, batch)
  init_rng, step_rng = loop.step_rngs(seed)
  start, cpu_start = time.perf_counter(), time.process_time()
  with jax.set_mesh(mesh), nn.logical_axis_rules(spec.rules):
    abstract, shardings = loop.abstract_state(loop.state_creator(spec), init_rng, mesh, spec.rules)
    lowered = loop.make_train_step(spec, mesh, shardings, step_rng).lower(abstract, batch_structs, spec.frozen)
    lower_s = time.perf_counter() - start
    compiled = lowered.compile()
  compile_s = time.perf_counter() - start - lower_s
  cpu_s = time.process_time() - cpu_start  # all threads: on a shared machine wall time overstates the cost
  out = fsdp_memory.compiled_bytes(compiled)
  analytic = spec.analytic_flops(batch_structs) if callable(spec.analytic_flops) else spec.analytic_flops
  out.update(
      step=step, batch=batch, devices=mesh.size, mesh=dict(mesh.shape),
      compute_dtype=config.vae.dtype if step == "vae" else config.dit.dtype,
      grad_accum_steps=spec.grad_accum_steps, optimizer=spec.optimizer, ema=spec.ema_decay > 0,
      inputs={k: [list(v.shape), str(v.dtype)] for k, v in batch_structs.items()},
      params=sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(abstract.params)),
      # What loop._log_memory prints as "step memory per device" (the job's log).
      logged_total=(out["argument_size_in_bytes"] + out["output_size_in_bytes"] + out["temp_size_in_bytes"]
                    + out["generated_code_size_in_bytes"]),
      xla_flops=metrics_lib.compiled_flops(compiled) * mesh.size, analytic_flops=analytic,
      lower_s=round(lower_s, 1), compile_s=round(compile_s, 1), lower_and_compile_cpu_s=round(cpu_s, 1),
      peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
  return out


def largest_fit(rows: list[dict], limit: float) -> dict:
  """The largest measured batch whose total fits `limit` bytes, and the largest batch a straight line in the batch
  says fits (an extrapolation: not compiled): through the totals of the two largest measured batches, or, with
  one measured, with the temporaries proportional to the batch and the rest fixed (an upper bound on the slope,
  as the gradients and optimizer temporaries among them do not grow)."""
  rows = sorted((r for r in rows if "total" in r), key=lambda r: r["batch"])
  fits = [r["batch"] for r in rows if r["total"] <= limit]
  out = {"measured": fits[-1] if fits else None, "linear": None, "bytes_per_example": None, "line": None}
  if len(rows) >= 2:
    a, b = rows[-2], rows[-1]
    slope, base, line = (b["total"] - a["total"]) / (b["batch"] - a["batch"]), a, "two largest measured totals"
  elif rows:
    base = rows[0]
    slope, line = base["temp_size_in_bytes"] / base["batch"], "temporaries proportional to the batch (one point)"
  else:
    return out
  if slope > 0:
    out.update(bytes_per_example=slope, line=line, linear=int(base["batch"] + (limit - base["total"]) // slope))
  return out


def measure(config, vae_batches=(), dit_batches=(), budget_gb: float = 80.0, headroom: float = 0.1,
            devices=None, max_compile_s: float = 0.0, log=print) -> dict:
  """Every row of this experiment: each step at each batch (ascending), until a compile exceeds max_compile_s."""
  steps = {}
  for step, batches in (("vae", vae_batches), ("dit", dit_batches)):
    rows, too_slow = [], False
    for b in sorted(int(x) for x in batches):
      if too_slow:
        rows.append({"step": step, "batch": b, "skipped": f"a smaller batch compiled in over {max_compile_s} s"})
        log(f"{step} batch {b}: skipped")
        continue
      row = step_memory(config, step, b, devices)
      rows.append(row)
      log(f"{step} batch {b}: total {_gib(row['total'])} GiB, compile {row['compile_s']} s (lower {row['lower_s']} "
          f"s; CPU time of both {row['lower_and_compile_cpu_s']} s)")
      too_slow = bool(max_compile_s) and row["compile_s"] > max_compile_s
    if rows:
      steps[step] = {"rows": rows}
  return refit({"steps": steps}, budget_gb, headroom)


def refit(result: dict, budget_gb: float, headroom: float) -> dict:
  """`result` with each row's fit and each step's largest fit for this budget (also for a saved result)."""
  limit = budget_gb * 2**30 * (1.0 - headroom)
  result = dict(result, budget_bytes=budget_gb * 2**30, limit_bytes=limit, headroom=headroom)
  for s in result["steps"].values():
    for r in s["rows"]:
      if "total" in r:
        r["fits"] = r["total"] <= limit
    s["largest_fit"] = largest_fit(s["rows"], limit)
  return result


def _gib(b) -> str:
  return f"{b / 2**30:,.2f}"


def table(result: dict) -> str:
  """The numbers as markdown."""
  lines = []
  for step, s in result["steps"].items():
    first = next((r for r in s["rows"] if "total" in r), None)
    if first is None:
      continue
    lines += ["", f"{step} train step per device ({first['compute_dtype']} compute, {first['params'] / 1e6:.1f}M "
              f"parameters, {first['optimizer']}{' + EMA' if first['ema'] else ''}, grad_accum "
              f"{first['grad_accum_steps']}, mesh {first['mesh']}); inputs at batch {first['batch']}: "
              + ", ".join(f"{k} {tuple(v[0])} {v[1]}" for k, v in first["inputs"].items()), "",
              "| batch | arguments | outputs | aliased | temporaries | code | total | as the loop logs | "
              "XLA FLOPs | analytic FLOPs | compile s (CPU s) | fits |", "|---:|" + "---:|" * 10 + ":-:|"]
    for r in s["rows"]:
      if "total" not in r:
        lines.append(f"| {r['batch']} | skipped: {r['skipped']} |" + " |" * 10)
        continue
      analytic = f"{r['analytic_flops']:.3g}" if r["analytic_flops"] else "-"
      lines.append(f"| {r['batch']} | {_gib(r['argument_size_in_bytes'])} | {_gib(r['output_size_in_bytes'])} | "
                   f"{_gib(r['alias_size_in_bytes'])} | {_gib(r['temp_size_in_bytes'])} | "
                   f"{_gib(r['generated_code_size_in_bytes'])} | {_gib(r['total'])} | {_gib(r['logged_total'])} | "
                   f"{r['xla_flops']:.3g} | {analytic} | {r['compile_s']} ({r.get('lower_and_compile_cpu_s', '?')}) | "
                   f"{'yes' if r['fits'] else 'NO'} |")
    fit = s["largest_fit"]
    line = (f"largest measured batch within {_gib(result['limit_bytes'])} GiB "
            f"({_gib(result['budget_bytes'])} GiB less {result['headroom']:.0%}): {fit['measured']}")
    if fit["linear"] is not None:
      line += (f"; a straight line, {fit['line']} ({_gib(fit['bytes_per_example'])} GiB per example), fits up to "
               f"{fit['linear']} (extrapolated, not compiled)")
    lines += ["", line]
  platform = result.get("platform", "?")
  lines += ["", f"(GiB = 2^30 bytes; compiled on {platform}"
            + (": XLA:CPU's memory_analysis() is an estimate of a GPU's, not a GPU measurement)" if platform == "cpu"
               else ")")]
  return "\n".join(lines)


def main(argv):
  del argv
  f = flags.FLAGS
  if f.devices > 1:
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={f.devices}"
  if f.from_json:
    with open(f.from_json) as fh:
      print(table(refit(json.load(fh), f.budget_gb, f.headroom)))
    return
  import jax
  config = f.config
  start = time.time()
  result = measure(config, f.vae_batches, f.dit_batches, f.budget_gb, f.headroom, jax.devices()[:f.devices],
                   f.max_compile_s)
  result.update(platform=jax.devices()[0].platform, preset=config.get("preset"), wall_s=round(time.time() - start, 1),
                vae=config.vae.to_dict(), dit=config.dit.to_dict(), data=config.data.to_dict())
  print(table(result))
  print(f"wall {result['wall_s']} s, peak RSS {_gib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)} GiB")
  if f.out:
    atomic_files.write_json(f.out, result, indent=1, default=str)


if __name__ == "__main__":
  sys.path.insert(0, ROOT)
  define_flags()
  app.run(main)
