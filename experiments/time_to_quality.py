r"""Time to quality: held-out all-correct of every kept DiT checkpoint of trained Shapes workdirs, against wall
seconds and against training FLOPs, one line per run (e.g. the old and the new recipe of the speedrun).

Train each run keeping its DiT checkpoints (orbax keeps only the newest config.checkpoint_keep steps):

  python -m vidgen.main --config=configs/shapes.py:tiny --workdir=runs/old \
      --config.train_dit.ckpt_every=100 --config.checkpoint_keep=100
  python experiments/time_to_quality.py --run=old:runs/old --run=new:runs/new \
      [--out=experiments/time_to_quality.png] [--steps=100,200,...] [--target=0.9]
  python experiments/time_to_quality.py --load=old:old_points.json --run=new:runs/new  # old judged before

Writes --out (two panels: all-correct against wall minutes and against training FLOPs, the target dashed), the
points beside it as JSON (same name, .json), and prints a markdown table for experiments/README.md.

The config of a run is the one its newest DiT checkpoint saved (the training config, command-line overrides
included), laid over the preset it names in --config_file, so fields newer than the run take today's defaults.
Each step's EMA DiT (as evaluation samples it) generates the held-out prompt set exactly as
vidgen/evaluate/evaluate.py does (prompt_sets(config)['heldout'], the same Generator, sampler and seed), and
the Shapes judge scores it; the last step's rate is checked against report.json's generated_heldout.

Wall seconds at DiT step s: the whole VAE stage, data + train_vae of report.json's "seconds" (which --mode=all
writes), plus the DiT stage's seconds up to s. The DiT's metrics.jsonl rows give each log interval's mean step
time (step_time_s: wall between two logged steps over the steps between, compile of a new batch shape excluded,
checkpoint saves included), summed and linearly interpolated between logged steps. What the rows miss (VAE
loading, the latent cache build, state init and the first compile, all before step 1, and the final
checkpoint's wait) is report.json's train_dit seconds minus the rows' sum; it is added at step 0 as an offset
rather than scaled over the steps, since it is paid before the first step (the last step still lands on
train_dit's seconds). Without report.json's seconds (a stage run by --mode=train_vae / train_dit, or a resumed
run, whose report times only its last invocation) the stage's seconds are the rows' sum alone, and the JSON
says so (wall_source).
Training FLOPs at s: the VAE stage's total (its rows' flops_per_step times their interval, summed) plus the
DiT's up to s, the same way. The counts are the loop's: the DiT's analytic matmul FLOPs (text encoder, DiT and
the frozen VAE encodes of a step), the VAE's XLA cost analysis; the one-off encodes (latent statistics, latent
cache) and sampling are not training steps and not counted.
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys
import time

from absl import app
from absl import flags

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_RUN = flags.DEFINE_multi_string("run", [], "LABEL:WORKDIR of a trained Shapes run (repeatable; one line each).")
_CONFIG_FILE = flags.DEFINE_string("config_file", os.path.join(_ROOT, "configs/shapes.py"),
                                   "The config file whose preset (the one a run's saved config names) supplies "
                                   "fields the saved config lacks.")
_OUT = flags.DEFINE_string("out", os.path.join(_ROOT, "experiments/time_to_quality.png"),
                           "The PNG; the points go beside it as .json.")
_LOAD = flags.DEFINE_multi_string("load", [], "LABEL:JSON: a run judged before, from the points JSON this script "
                                   "wrote (the run labelled LABEL there, or its only run, relabelled LABEL); "
                                   "repeatable, drawn before the --run ones.")
_STEPS = flags.DEFINE_list("steps", [], "Judge only these DiT steps (default: every kept checkpoint).")
_TARGET = flags.DEFINE_float("target", 0.9, "The held-out all-correct goal, drawn dashed.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show sampling progress bars.")

JUDGED = ("all_correct_rate", "color_accuracy", "shape_accuracy", "direction_accuracy", "extra_object_rate",
          "num_videos")


def _warn(message: str) -> None:
  # Not absl's logging: with the libraries quiet (vidgen.logs) it passes only records from vidgen/.
  print(f"warning: {message}", file=sys.stderr, flush=True)


# --- the logs: wall seconds and FLOPs at a step -------------------------------------------------------------

def read_metrics(path: str) -> list[dict]:
  """The rows of a metrics.jsonl, one per logged step (the last written wins: a resumed run logs the steps
  after its checkpoint again), by step."""
  rows = {}
  with open(path) as f:
    for line in f:
      if line.strip():
        row = json.loads(line)
        rows[int(row["step"])] = row
  return [rows[s] for s in sorted(rows)]


def cumulative(rows: list[dict], key: str):
  """(steps, totals): `key` (a per-step mean over each log interval) summed over the steps from 0, at 0 and at
  every logged step. Row i covers the steps (step_{i-1}, step_i]."""
  steps, totals, total, prev = [0], [0.0], 0.0, 0
  for row in rows:
    total += float(row[key]) * (int(row["step"]) - prev)
    prev = int(row["step"])
    steps.append(prev)
    totals.append(total)
  return steps, totals


def at_steps(rows: list[dict], key: str, steps) -> list[float]:
  """The cumulative `key` at each of `steps`, linear between logged steps (checkpoint steps need not be logged
  ones)."""
  import numpy as np
  knots, totals = cumulative(rows, key)
  if max(steps, default=0) > knots[-1]:
    raise ValueError(f"step {max(steps)} is past the last logged step {knots[-1]}")
  return [float(x) for x in np.interp(np.asarray(steps, np.float64), knots, totals)]


def stage_seconds(rows: list[dict], reported: float | None) -> tuple[float, float, str]:
  """(seconds of the whole stage, its seconds outside the logged steps, where they come from)."""
  logged = cumulative(rows, "step_time_s")[1][-1]
  if reported is None:
    return logged, 0.0, "metrics"
  if reported < logged:  # a resumed stage: report.json timed its last invocation only
    _warn(f"report.json times a stage at {reported:.1f}s, less than its logged steps' {logged:.1f}s (a resumed "
          "run?): using the logged steps")
    return logged, 0.0, "metrics"
  return reported, reported - logged, "report"


def cost_curve(vae_rows: list[dict], dit_rows: list[dict], seconds: dict, steps) -> dict:
  """Wall seconds and training FLOPs at each DiT step of `steps` (see the module docstring). `seconds`: report.json's
  per-stage seconds ({} if none)."""
  has_vae = "train_vae" in seconds
  vae_s, _, vae_source = stage_seconds(vae_rows, seconds.get("train_vae"))
  vae_s += seconds.get("data", 0.0) if has_vae else 0.0  # 'data' only where the VAE time is the report's too
  dit_s, dit_overhead, dit_source = stage_seconds(dit_rows, seconds.get("train_dit"))
  vae_flops = cumulative(vae_rows, "flops_per_step")[1][-1]
  dit_wall = at_steps(dit_rows, "step_time_s", steps)
  dit_flops = at_steps(dit_rows, "flops_per_step", steps)
  return dict(
      steps=list(steps), wall_s=[vae_s + dit_overhead + t for t in dit_wall],
      flops=[vae_flops + f for f in dit_flops], vae_wall_s=vae_s, vae_flops=vae_flops,
      dit_wall_s=dit_s, dit_overhead_s=dit_overhead, wall_source=dict(vae=vae_source, dit=dit_source))


# --- a run's config and its checkpoints ------------------------------------------------------------------------

def overlay(base, saved: dict, prefix: str = "") -> list[str]:
  """Sets base's fields to the saved (JSON) values, lists back to tuples where base has tuples; returns the
  fields base has and saved lacks (they keep base's values), and warns about saved fields base no longer has."""
  import ml_collections
  missing = [prefix + k for k in base.keys() if k not in saved]
  for key, value in saved.items():
    if key not in base:
      _warn(f"the saved config's field {prefix}{key} is not in today's config: ignored")
    elif isinstance(base[key], ml_collections.ConfigDict):
      missing += overlay(base[key], value, f"{prefix}{key}.")
    else:
      base[key] = tuple(value) if isinstance(base[key], tuple) else value
  return missing


def saved_config(workdir: str, config_file: str):
  """The config the newest DiT checkpoint of `workdir` saved, over its preset of `config_file`."""
  import orbax.checkpoint as ocp
  from vidgen.models import load
  from vidgen.weights import checkpoint as ckpt_lib
  step = load.checkpoint_steps(workdir, "dit")[-1]
  with ckpt_lib.Checkpointer(load.checkpoint_dir(workdir, "dit"), read_only=True) as checkpointer:
    saved = checkpointer.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]
  spec = importlib.util.spec_from_file_location("time_to_quality_config", config_file)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(saved.get("preset", "tiny"))
  missing = overlay(config, saved)
  if missing:
    _warn(f"{workdir}: its saved config lacks {', '.join(missing)}: today's defaults")
  return config


def judge_steps(label: str, workdir: str, wanted, progress: bool) -> dict:
  """The held-out judge of each (wanted) DiT checkpoint step of one run, and the run's costs at those steps."""
  from vidgen import config_validation
  from vidgen import generate as generate_lib
  from vidgen.data import datasets
  from vidgen.evaluate import evaluate as evaluate_lib
  from vidgen.evaluate import shapes_judge
  from vidgen.models import load
  config = saved_config(workdir, _CONFIG_FILE.value)
  config_validation.validate(config)
  steps = load.checkpoint_steps(workdir, "dit")
  if wanted:
    absent = sorted(set(wanted) - set(steps))
    if absent:
      raise app.UsageError(f"run {label}: no DiT checkpoint at steps {absent} in {workdir} (kept: {steps})")
    steps = sorted(wanted)
  prompts = evaluate_lib.prompt_sets(config)["heldout"]
  spec = datasets.shapes_spec(config.data)
  generator = generate_lib.Generator(config, workdir)
  use_ema = config.sample.use_ema and config.train_dit.ema_decay > 0  # as Generator picks them
  judged = []
  for step in steps:
    generator.params = load.denoiser_params(workdir, use_ema, step=step)  # same shapes: no recompile
    t0 = time.perf_counter()
    videos = generator.generate(prompts, progress=progress)
    summary = shapes_judge.summary(shapes_judge.judge_batch(videos, prompts, spec))
    judged.append(dict({k: summary[k] for k in JUDGED if k in summary}, step=step,
                       sample_seconds=time.perf_counter() - t0))
    print(f"{label} step {step}: held-out all-correct {summary['all_correct_rate']:.1%}", flush=True)

  report_path = os.path.join(workdir, "report.json")
  report = json.load(open(report_path)) if os.path.exists(report_path) else {}
  costs = cost_curve(read_metrics(os.path.join(workdir, "vae", "metrics.jsonl")),
                     read_metrics(os.path.join(workdir, "dit", "metrics.jsonl")), report.get("seconds", {}), steps)
  points = [dict(j, wall_s=w, flops=f) for j, w, f in zip(judged, costs.pop("wall_s"), costs.pop("flops"))]
  # The newest step is the one evaluation judged: the same prompts, noise and sampler must give its rates.
  reported = report.get("generated_heldout", {})
  rates = ("all_correct_rate", "color_accuracy", "shape_accuracy", "direction_accuracy")
  if steps[-1] == load.checkpoint_steps(workdir, "dit")[-1] and all(k in reported for k in rates):
    differ = [k for k in rates if abs(reported[k] - points[-1][k]) > 1e-9]
    if differ:
      _warn(f"run {label}: step {steps[-1]} judges {', '.join(f'{k} {points[-1][k]:.4f}' for k in differ)} here, "
            f"report.json {', '.join(f'{reported[k]:.4f}' for k in differ)} (evaluated by other code or settings?)")
  return dict(label=label, workdir=os.path.abspath(workdir), preset=config.preset,
              num_prompts=len(prompts), sample=config.sample.to_dict(),
              report_all_correct=reported.get("all_correct_rate"),
              points=points, **{k: v for k, v in costs.items() if k != "steps"})


# --- output ----------------------------------------------------------------------------------------------------

def first_at_target(points: list[dict], target: float):
  return next((p for p in points if p["all_correct_rate"] >= target), None)


def plot(runs: list[dict], target: float, path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")  # files only, no display
  import matplotlib.pyplot as plt
  fig, (by_wall, by_flops) = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
  for run in runs:
    pts = run["points"]
    y = [100 * p["all_correct_rate"] for p in pts]
    by_wall.plot([p["wall_s"] / 60 for p in pts], y, marker="o", label=run["label"])
    by_flops.plot([p["flops"] for p in pts], y, marker="o", label=run["label"])
  for ax, xlabel in ((by_wall, "wall minutes (data + VAE + DiT training)"), (by_flops, "training FLOPs")):
    ax.axhline(100 * target, color="gray", linestyle="--", linewidth=1, label=f"target {target:.0%}")
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3)
  by_flops.set_xscale("log")
  by_wall.set_ylabel("held-out all-correct (%)")
  by_wall.set_ylim(0, 100)
  by_wall.legend(loc="upper left")
  n = sorted({run["num_prompts"] for run in runs})
  fig.suptitle(f"Shapes time to quality: the judge on {'/'.join(map(str, n))} held-out prompts per DiT checkpoint")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def print_table(runs: list[dict], target: float) -> None:
  print("| run | DiT step | wall s | training FLOPs | held-out all-correct | color / shape / direction |")
  print("|---|---|---|---|---|---|")
  for run in runs:
    for p in run["points"]:
      print(f"| {run['label']} | {p['step']} | {p['wall_s']:.0f} | {p['flops']:.3g} | {p['all_correct_rate']:.1%} | "
            f"{p['color_accuracy']:.1%} / {p['shape_accuracy']:.1%} / {p['direction_accuracy']:.1%} |")
  for run in runs:
    hit = first_at_target(run["points"], target)
    when = (f"step {hit['step']}, {hit['wall_s']:.0f} s, {hit['flops']:.3g} FLOPs" if hit
            else f"not reached (best {max(p['all_correct_rate'] for p in run['points']):.1%})")
    print(f"{run['label']}: {target:.0%} held-out all-correct: {when}; wall from {run['wall_source']}, "
          f"DiT seconds outside logged steps {run['dit_overhead_s']:.1f}")


def parse_run(value: str, flag: str = "run", example: str = "new:runs/new") -> tuple[str, str]:
  label, sep, path = value.partition(":")
  if not sep or not label or not path:
    raise app.UsageError(f"--{flag}={value!r}: expected LABEL:{'WORKDIR' if flag == 'run' else 'JSON'}, "
                         f"e.g. --{flag}={example}")
  return label, path


def load_run(label: str, path: str) -> dict:
  """The run labelled `label` of a points JSON written before (or its only run, relabelled)."""
  try:
    with open(path) as f:
      runs = json.load(f)["runs"]
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise app.UsageError(f"--load={label}:{path}: not a points JSON this script wrote ({e!r})") from None
  named = [run for run in runs if run["label"] == label]
  if not named and len(runs) != 1:
    raise app.UsageError(f"--load={label}:{path}: no run labelled {label!r} there, and it holds "
                         f"{len(runs)} runs ({', '.join(run['label'] for run in runs)}): name one of them")
  return dict((named or runs)[0], label=label)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not _RUN.value and not _LOAD.value:
    raise app.UsageError("give at least one --run=LABEL:WORKDIR or --load=LABEL:JSON")
  if not flags.FLAGS["verbosity"].present:
    from vidgen import logs
    logs.quiet_libraries()  # as vidgen's command line: orbax logs every restore
  wanted = [int(s) for s in _STEPS.value]
  runs = [load_run(*parse_run(value, "load", "old:runs/old/ttq.json")) for value in _LOAD.value]
  runs += [judge_steps(label, workdir, wanted, _PROGRESS.value) for label, workdir in map(parse_run, _RUN.value)]
  sources = {json.dumps(run["wall_source"], sort_keys=True) for run in runs}
  if len(sources) > 1:
    _warn("the runs' wall seconds come from different logs (wall_source: report.json's stage seconds or the "
          "metrics rows' step times alone, which leave out compiles and caches): the wall panel compares unlike "
          "things")
  os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
  plot(runs, _TARGET.value, _OUT.value)
  points_path = os.path.splitext(_OUT.value)[0] + ".json"
  with open(points_path, "w") as f:
    json.dump(dict(target=_TARGET.value, runs=runs), f, indent=1)
  print_table(runs, _TARGET.value)
  print(f"wrote {_OUT.value} and {points_path}")


if __name__ == "__main__":
  sys.path.insert(0, _ROOT)
  app.run(main)
