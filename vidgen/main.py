"""vidgen's command line: train the VAE, train the DiT, generate, evaluate, or run the whole job.

  python -m vidgen.main --config=configs/shapes.py:tiny --workdir=runs/tiny            # everything
  python -m vidgen.main --config=configs/shapes.py:tiny --workdir=runs/tiny --mode=generate \
      --prompt "a red circle moving left" --out_dir=out
Override any config field: --config.dit.depth=4. Everything here is importable from Python/Colab.
"""
from __future__ import annotations

import json
import os
import re
import sys
import time

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from vidgen import atomic_files
from vidgen import config_validation
from vidgen import generate as generate_lib
from vidgen import logs
from vidgen import tasks
from vidgen.data import datasets
from vidgen.data import media
from vidgen.evaluate import evaluate as evaluate_lib
from vidgen.evaluate import reconstruction
from vidgen.models import load
from vidgen.models import wan
from vidgen.parallel import distributed
from vidgen.parallel import mesh as mesh_lib
from vidgen.train import dit_trainer
from vidgen.train import vae_trainer
from vidgen.weights import safetensors_io

MODES = ("all", "data", "train_vae", "train_dit", "generate", "evaluate", "evaluate_vae")

_CONFIG = config_flags.DEFINE_config_file("config", "configs/shapes.py:tiny", "Config file and preset.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for data, checkpoints, metrics, samples.")
_MODE = flags.DEFINE_enum("mode", "all", MODES, "What to run.")
_PROMPT = flags.DEFINE_multi_string("prompt", [], "A prompt to generate (repeatable).")
_PROMPTS_FILE = flags.DEFINE_string("prompts_file", None, "A text file with one prompt per line.")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where --mode=generate writes mp4s (default WORKDIR/samples).")
_SEED = flags.DEFINE_integer("seed", None, "Sampling seed (default config.sample.seed).")
_SIZE = flags.DEFINE_string("size", None, "--mode=generate: WxH in pixels (default data.width x data.height).")
_FRAMES = flags.DEFINE_integer("frames", None, "--mode=generate: frames per video (default data.num_frames).")
_TASK = flags.DEFINE_enum("task", "t2v", list(tasks.TASKS), "--mode=generate: what to make (vidgen/tasks.py): "
                          + "; ".join(f"{t.name}: {t.summary}" for t in tasks.TASKS.values()) + ".")
_IMAGE = flags.DEFINE_multi_string("image", [], "--task=i2v: the first frame; --task=interpolate: the keyframes, "
                                   "one per --at time (png/jpg, any size: covered and center-cropped).")
_VIDEO = flags.DEFINE_multi_string("video", [], "--task=extend/edit: the video; --task=connect: two of them; "
                                   "--task=interpolate: its frames at the --at times are the keyframes.")
_AT = flags.DEFINE_list("at", [], "--task=interpolate: keyframe times, frame indices within the clip (e.g. 0,8).")
_DIRECTION = flags.DEFINE_enum("direction", "forward", ["forward", "backward"], "--task=extend: which way.")
_TIMES = flags.DEFINE_integer("times", 1, "--task=extend: chunks to add.")
_STRENGTH = flags.DEFINE_float("strength", None, "--task=edit: noise level in (0, 1] to re-generate from "
                               "(low keeps layout and motion, 1 follows the prompt only).")
_OVERLAP = flags.DEFINE_integer("overlap", None, "--task=extend/connect: frames of a neighbour that condition a "
                                "chunk's end (default: extend 1 + the VAE's temporal compression, connect "
                                "1 + (frames - 1) // 4).")
_INIT_NOISE = flags.DEFINE_string("init_noise", None, "--task=t2v/image: start sampling from this noise (.npy in "
                                   "diffusers' latent layout [B, C, F, H, W]) to reproduce another implementation's run.")
_NO_PROGRESS = flags.DEFINE_bool("no_progress", False, "Hide progress bars.")
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed", "off", ("off", "auto", "flags"),
    "Multi-host: 'auto' lets a TPU pod / SLURM cluster configure jax.distributed; 'flags' uses "
    "--coordinator_address, --num_processes, --process_id (or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, "
    "JAX_PROCESS_ID). Every process runs the same command.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (--distributed=flags).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (--distributed=flags).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (--distributed=flags).")


def run(config, workdir: str, mode: str, prompts=(), out_dir=None, seed=None, progress=True, size=None,
        frames=None, task: tasks.Request | dict | None = None) -> dict:
  """Runs one mode; returns what it produced (the report for 'all', 'evaluate' and 'evaluate_vae', the new
  index entries for 'generate'). `size` ('WxH') and `frames` set the shape that --mode=generate samples (default:
  the training shape); `task` (a tasks.Request, or a dict of its fields) what it makes (default t2v)."""
  config_validation.validate(config)
  request = task if isinstance(task, tasks.Request) else tasks.Request(**(task or {}))
  if mode == "generate" and frames is None:
    frames = tasks.get(request.name).frames  # the image task makes 1-frame videos
  if size or frames is not None:
    if mode != "generate":
      raise config_validation.ConfigError(f"--size and --frames apply to --mode=generate, not --mode={mode}")
    config = config_validation.with_output_shape(config, size, frames)
  if config.model == "wan2.1":
    config = wan.resolve(config)[0]  # the folder's shapes, checked before anything loads
    config_validation.validate(config)
  if config.model != "vidgen" and mode != "generate":
    raise config_validation.ConfigError(f"config.model={config.model!r} (public weights) runs --mode=generate; "
                                        f"--mode={mode} trains or judges vidgen's own models")
  os.makedirs(workdir, exist_ok=True)
  timings = {}
  result = {}

  def timed(name, fn):
    t0 = time.perf_counter()
    out = fn()
    timings[name] = round(time.perf_counter() - t0, 1)
    logging.info("%s took %.1fs", name, timings[name])
    return out

  if config.data.name != "shapes" and mode == "evaluate":
    raise config_validation.ConfigError(
        f"--mode=evaluate runs the Shapes judge: it needs config.data.name='shapes', not {config.data.name!r} "
        "(--mode=evaluate_vae measures the VAE on any data)")
  mesh = None
  if mode in ("all", "train_vae", "train_dit"):
    try:
      mesh = mesh_lib.create_mesh(config.mesh)
    except ValueError as e:
      raise config_validation.ConfigError(str(e)) from e
    config_validation.validate_for_mesh(config, mesh_lib.data_parallel_size(mesh), mesh.shape["context"],
                                        mesh.shape["tensor"])
  if mode in ("all", "data"):
    built = timed("data", lambda: distributed.primary_first(
        "data", lambda: datasets.build(config.data, workdir, progress=progress)))
    if isinstance(built, media.MediaSet) and progress:  # the dataset report (also DATA_DIR/report.json)
      print(media.format_report(built.report()))
  if mode in ("all", "train_vae"):
    timed("train_vae", lambda: vae_trainer.train_vae(config, workdir, mesh, progress=progress))
  if mode in ("all", "train_dit"):
    timed("train_dit", lambda: dit_trainer.train_dit(config, workdir, mesh, progress=progress))
  if mode == "evaluate" or (mode == "all" and config.data.name == "shapes"):
    result = timed("evaluate", lambda: evaluate_lib.evaluate(config, workdir, progress=progress))
    result["seconds"] = timings
    result["training"] = _training_summaries(workdir)
    atomic_files.write_json(os.path.join(workdir, "report.json"), result, indent=1)
  if mode == "evaluate_vae":  # the VAE alone (held-out reconstruction), e.g. to compare VAE configs
    vae_params, _ = load.vae_params(workdir)
    result = {"vae": reconstruction.evaluate_reconstruction(config, workdir, vae_params, progress=progress)}
    atomic_files.write_json(os.path.join(workdir, "vae", "report.json"), result, indent=1)
  if mode == "generate":
    inputs = tasks.load_inputs(config, prompts, request)
    generator = (generate_lib.WanGenerator(config) if config.model == "wan2.1"
                 else generate_lib.Generator(config, workdir))
    result = tasks.run(generator, inputs, out_dir or os.path.join(workdir, "samples"), seed=seed, progress=progress)
  return result


def _training_summaries(workdir: str) -> dict:
  """Per trained stage: steps, training FLOPs and the matmul peak its run measured (WORKDIR/{vae,dit}/training.json)."""
  out = {}
  for stage in ("vae", "dit"):
    path = os.path.join(workdir, stage, "training.json")
    if os.path.exists(path):
      with open(path) as f:
        out[f"train_{stage}"] = json.load(f)
  return out


def format_report(report: dict) -> str:
  vae, gh, gt, real = (report.get(k, {}) for k in ("vae", "generated_heldout", "generated_train", "real_heldout"))
  vj, g2, gp = vae.get("judged", {}), report.get("generated_two_object", {}), report.get("generated_paraphrase", {})
  nan = float("nan")
  lines = [
      "vidgen report",
      f"  VAE reconstruction PSNR (held-out clips): {vae.get('psnr_db', float('nan')):.2f} dB",
      f"  judge, VAE reconstructions:      all-correct {vj.get('all_correct_rate', nan):.1%}  (color "
      f"{vj.get('color_accuracy', nan):.1%}, shape {vj.get('shape_accuracy', nan):.1%}, direction "
      f"{vj.get('direction_accuracy', nan):.1%}; {vj.get('num_videos', 0)} held-out clips)",
      f"  judge, real held-out clips:      all-correct {real.get('all_correct_rate', float('nan')):.1%}",
      f"  judge, generated held-out:       all-correct {gh.get('all_correct_rate', float('nan')):.1%}  "
      f"(color {gh.get('color_accuracy', float('nan')):.1%}, shape {gh.get('shape_accuracy', float('nan')):.1%}, "
      f"direction {gh.get('direction_accuracy', float('nan')):.1%}; {gh.get('num_videos', 0)} prompts)",
      f"  judge, generated train-comps:    all-correct {gt.get('all_correct_rate', float('nan')):.1%}",
      f"  judge, generated two-object:     all-correct {g2.get('all_correct_rate', nan):.1%}  "
      f"({g2.get('num_videos', 0)} held-out pairs); paraphrased held-out {gp.get('all_correct_rate', nan):.1%}  "
      f"({gp.get('num_videos', 0)} prompts, gap {report.get('paraphrase_gap', nan) * 100:+.1f} points)",
      f"  background flicker (gray levels): real {real.get('mean_flicker', float('nan')):.2f}, "
      f"generated {gh.get('mean_flicker', float('nan')):.2f} "
      f"(ratio {report.get('flicker_ratio_generated_to_real', float('nan')):.2f})",
      f"  seconds: {report.get('seconds', {})}",
  ]
  for stage, summary in report.get("training", {}).items():
    peak = summary.get("matmul_peak_tflops")
    lines.append(f"  {stage}: {summary['steps']} steps, {summary['flops']:.3g} training FLOPs"
                 + (f" (matmul peak measured {peak:.3g} TFLOP/s)" if peak else ""))
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if _WORKDIR.value is None:
    raise app.UsageError("--workdir is required")
  prompts = list(_PROMPT.value)
  if _PROMPTS_FILE.value:
    if not os.path.exists(_PROMPTS_FILE.value):
      raise app.UsageError(f"--prompts_file {_PROMPTS_FILE.value!r} does not exist")
    with open(_PROMPTS_FILE.value, encoding="utf-8") as f:
      prompts += [line.rstrip("\n") for line in f if line.strip()]
  if not flags.FLAGS["verbosity"].present:
    logs.quiet_libraries()  # vidgen's lines and progress bars only; -v 0 brings the libraries' logs back
  try:
    distributed.initialize(distributed.settings_from(_DISTRIBUTED.value, _COORDINATOR.value, _NUM_PROCESSES.value,
                                                     _PROCESS_ID.value))
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  hosts = f" over {jax.process_count()} processes" if jax.process_count() > 1 else ""
  print(f"JAX {jax.__version__} on {jax.device_count()} {jax.devices()[0].platform} device(s){hosts}")
  try:
    result = run(_CONFIG.value, _WORKDIR.value, _MODE.value, prompts, _OUT_DIR.value, _SEED.value,
                 progress=not _NO_PROGRESS.value and distributed.is_primary(), size=_SIZE.value,
                 frames=_FRAMES.value,
                 task=tasks.Request(name=_TASK.value, images=list(_IMAGE.value), videos=list(_VIDEO.value),
                                    at=list(_AT.value), direction=_DIRECTION.value, times=_TIMES.value,
                                    strength=_STRENGTH.value, overlap=_OVERLAP.value, init_noise=_INIT_NOISE.value))
  except (config_validation.ConfigError, load.MissingCheckpointError, tasks.TaskError,
          generate_lib.OutputDirError, safetensors_io.WeightsError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  if _MODE.value in ("all", "evaluate") and result:  # media runs of 'all' have no Shapes report
    print(format_report(result))
    print(f"report written to {os.path.join(_WORKDIR.value, 'report.json')}")
  elif _MODE.value == "evaluate_vae":
    judged = result["vae"].get("judged")
    print(f"VAE reconstruction PSNR (held-out clips): {result['vae']['psnr_db']:.2f} dB"
          + (f", judged all-correct {judged['all_correct_rate']:.1%}" if judged else "")
          + f" (report in {os.path.join(_WORKDIR.value, 'vae', 'report.json')})")
  elif _MODE.value == "generate":
    n = len(result["index"])
    print(f"wrote {n} video{'s' if n != 1 else ''} to {result['out_dir']} (entries added to its index.json)")
    for entry in result["index"]:
      if "chunks" in entry or "transition_frames" in entry:
        print(f"  {entry['file']}: {entry['frames']} frames")


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with every bad flag (a config preset that does not exist too) as one line: `error: ...`
  and exit status 2, like every other bad config, instead of a traceback through ml_collections."""
  try:
    rest = flags.FLAGS(argv)
  except flags.Error as e:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    if "Error whilst parsing config file" in str(e):  # the config module raised: its own message is the last line
      message = f"--config: {re.sub(r'^[A-Za-z.]*(Error|Exception): ', '', lines[-1])}"
    else:
      message = lines[0] if lines else type(e).__name__
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)
  try:
    _CONFIG.value.get("seed")  # ml_collections defers a missing or unreadable file until first use
  except OSError:
    path = flags.FLAGS["config"].config_filename
    print(f"error: --config={path}: " + ("no such file" if not os.path.exists(path) else "cannot be loaded")
          + " (e.g. --config=configs/shapes.py:tiny)", file=sys.stderr)
    sys.exit(2)
  return rest


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
