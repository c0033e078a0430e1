r"""Where a trained Shapes denoiser fails: single objects (which way direction goes wrong), two objects, paraphrases:

  python experiments/prompt_breakdown.py --workdir=W [--num=32] [--use_ema=false]

1. Single-object prompts of held-out and of training compositions (the evaluation's sets): the direction
   misses as (asked, detected) motions, and how many went the opposite way (the right axis, the wrong sign),
   stood still, or moved across; and how far the objects travel (the judge's fitted displacement) as a share of
   the data's speed * (num_frames - 1).
2. Two-object prompts (shapes.two_object_prompts) with both compositions held out, as evaluation asks, and with
   both from training: all-correct and per-attribute rates, how many objects fail on each attribute, and the
   detected motions (a pair that stands still shows up as 'static'). Held-out far below training means binding
   does not generalise; both low means two objects are not learned at all.
3. The paraphrase set (shapes.paraphrase_prompts, 2 * --num prompts) by template: all-correct and shape rate
   per held-out word order, and the (asked, detected) shapes of the failures.
The config is the run's own (its newest DiT checkpoint's, over its preset), as experiments/time_to_quality.py
reads it; --use_ema overrides sample.use_ema (a run trained with an EMA can be judged on its raw weights).
"""
from __future__ import annotations

import collections
import os
import sys

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import time_to_quality  # noqa: E402  (experiments/ is not a package)

_WORKDIR = flags.DEFINE_string("workdir", None, "A trained Shapes workdir.", required=True)
_NUM = flags.DEFINE_integer("num", 32, "Two-object prompts per set (the single-object and paraphrase sets have "
                            "twice as many).")
_USE_EMA = flags.DEFINE_bool("use_ema", None, "Sample the EMA weights (default: the run's sample.use_ema).")


def _miss_kind(asked: str, detected: str) -> str:
  """'opposite' (the right axis, the wrong sign), 'static', 'across' (the other axis) or 'none' (no object)."""
  from vidgen.data import shapes
  if detected not in shapes.MOTION_VECTORS:
    return "static" if detected == "static" else "none"
  (ax, ay), (dx, dy) = shapes.MOTION_VECTORS[asked], shapes.MOTION_VECTORS[detected]
  return "opposite" if (ax, ay) == (-dx, -dy) else "across"


def main(argv):
  del argv
  import numpy as np
  from vidgen import generate as generate_lib
  from vidgen.data import datasets
  from vidgen.data import shapes
  from vidgen.evaluate import shapes_judge
  workdir = _WORKDIR.value
  config = time_to_quality.saved_config(workdir, os.path.join(time_to_quality._ROOT, "configs/shapes.py"))
  spec = datasets.shapes_spec(config.data)
  generator = generate_lib.Generator(config, workdir, use_ema=_USE_EMA.value)

  def judged(prompts):
    report = shapes_judge.judge_batch(generator.generate(prompts, progress=False), prompts, spec)
    return report, report["per_prompt"]

  for name, comps in (("held-out", shapes.HELDOUT_COMPOSITIONS), ("training", shapes.TRAIN_COMPOSITIONS)):
    report, results = judged(shapes.eval_prompts(2 * _NUM.value, seed=config.seed, compositions=comps))
    asked = [(shapes.parse_prompt(r["prompt"])[0].motion, str(r["objects"][0]["detected_motion"])) for r in results
             if not r["objects"][0]["direction_ok"]]
    kinds = collections.Counter(_miss_kind(a, d) for a, d in asked)
    travel = np.mean([r["objects"][0]["displacement"] for r in results]) / spec.travel
    print(f"single object, {name} compositions: all-correct {report['all_correct_rate']:.1%}, direction "
          f"{report['direction_accuracy']:.1%} of {len(results)}; mean travel {travel:.2f} of the data's; direction "
          f"misses {dict(kinds)}, (asked, detected) {dict(collections.Counter(asked))}")

  for name, comps in (("held-out", shapes.HELDOUT_COMPOSITIONS), ("training", shapes.TRAIN_COMPOSITIONS)):
    report, results = judged(shapes.two_object_prompts(_NUM.value, seed=config.seed, compositions=comps))
    objects = [o for r in results for o in r["objects"]]
    failed = {k: sum(not o[f"{k}_ok"] for o in objects) for k in ("color", "shape", "direction")}
    motions = collections.Counter(str(o["detected_motion"]) for o in objects)
    print(f"two-object, {name} compositions: all-correct {report['all_correct_rate']:.1%} (color "
          f"{report['color_accuracy']:.1%}, shape {report['shape_accuracy']:.1%}, direction "
          f"{report['direction_accuracy']:.1%}); of {len(objects)} objects wrong in color {failed['color']}, shape "
          f"{failed['shape']}, direction {failed['direction']}; videos with an extra object "
          f"{sum(r['extra_object'] for r in results)}; detected motions {dict(motions)}")

  prompts = shapes.paraphrase_prompts(2 * _NUM.value, seed=config.seed)
  _, results = judged(prompts)
  templates = shapes.PARAPHRASE_TEMPLATES
  for t, template in enumerate(templates):
    rows = [(r, shapes.parse_prompt(r["prompt"], paraphrases=True)[0]) for r in results[t::len(templates)]]
    misses = collections.Counter((comp.shape, r["objects"][0]["detected_shape"]) for r, comp in rows
                                 if not r["objects"][0]["shape_ok"])
    print(f"paraphrase {template!r:40s} all-correct {np.mean([r['all_correct'] for r, _ in rows]):.1%}, shape "
          f"{np.mean([r['objects'][0]['shape_ok'] for r, _ in rows]):.1%} of {len(rows)}; (asked, detected) "
          f"shapes of the misses {dict(misses)}")


if __name__ == "__main__":
  app.run(main)
