"""The evaluation of a trained workdir on Shapes: VAE reconstruction, then judged text-to-video.

Writes WORKDIR/eval/{heldout,train}/ (mp4s, index.json, grid.png) and returns the report dict.
"""
from __future__ import annotations

import time

import numpy as np

from vidgen import generate as generate_lib
from vidgen.data import datasets
from vidgen.data import shapes
from vidgen.evaluate import reconstruction
from vidgen.evaluate import shapes_judge
from vidgen.models import load


def _judged(judge: dict) -> dict:
  keys = ("all_correct_rate", "color_accuracy", "shape_accuracy", "direction_accuracy", "mean_flicker",
          "mean_area_cv", "num_videos")
  return {k: judge[k] for k in keys if k in judge}


def evaluate(config, workdir: str, progress: bool = True) -> dict:
  spec = datasets.shapes_spec(config.data)
  report = {}
  vae_params, _ = load.vae_params(workdir)
  report["vae"] = reconstruction.evaluate_reconstruction(config, workdir, vae_params, progress=progress)

  # The judge on real held-out clips: the ceiling, and the flicker reference.
  source = datasets.source(config.data, workdir, "heldout")
  n = min(config.eval.num_prompts, len(source))
  real = [source[i] for i in range(n)]
  report["real_heldout"] = _judged(shapes_judge.judge_batch(
      np.stack([r["video"] for r in real]), [r["caption"] for r in real], spec))

  generator = generate_lib.Generator(config, workdir)
  for name, comps in (("heldout", shapes.HELDOUT_COMPOSITIONS), ("train", shapes.TRAIN_COMPOSITIONS)):
    prompts = shapes.eval_prompts(config.eval.num_prompts, seed=config.seed, compositions=comps)
    t0 = time.perf_counter()
    videos = generator.generate(prompts, progress=progress)
    seconds = time.perf_counter() - t0
    generate_lib.write_videos(f"{workdir}/eval/{name}", videos, prompts, generator.settings(),
                              fps=config.data.fps, fresh=True)
    report[f"generated_{name}"] = dict(_judged(shapes_judge.judge_batch(videos, prompts, spec)),
                                       seconds=seconds)
  real_flicker = report["real_heldout"]["mean_flicker"]
  report["flicker_ratio_generated_to_real"] = report["generated_heldout"]["mean_flicker"] / max(real_flicker, 1e-9)
  return report
