r"""Does a trained Shapes denoiser follow each word of its prompt? One line per word kind, for one workdir:

  python experiments/text_sensitivity.py --workdir=W [--num=8]

1. Prompts that differ in one word (motion left / right, color red / blue, shape circle / square): the relative
   difference ||a - b|| / ||a|| of the text encoder's output at the word's position, and of the (EMA) DiT's
   velocity for one fixed noisy latent at t = 0.9, 0.6 and 0.3. A word the model ignores moves neither.
2. "a red circle moving D" for each direction D, --num videos from the same seeds for every D, as evaluation
   samples them: the judge's detected motion of each. Motion that follows the noise and not the word comes out
   the same for every D.
The config is the run's own (its newest DiT checkpoint's, over its preset), as experiments/time_to_quality.py
reads it.
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
_NUM = flags.DEFINE_integer("num", 8, "Videos per direction.")

PAIRS = {  # word kind -> (prompt a, prompt b, the word's position: 1 + its word index, after the summary token)
    "motion left/right": ("a red circle moving left", "a red circle moving right", 5),
    "color red/blue": ("a red circle moving left", "a blue circle moving left", 2),
    "shape circle/square": ("a red circle moving left", "a red square moving left", 3),
}


def main(argv):
  del argv
  import jax
  import jax.numpy as jnp
  import numpy as np
  from vidgen import generate as generate_lib
  from vidgen.data import datasets
  from vidgen.data import shapes
  from vidgen.evaluate import shapes_judge
  from vidgen.models import build
  workdir = _WORKDIR.value
  config = time_to_quality.saved_config(workdir, os.path.join(time_to_quality._ROOT, "configs/shapes.py"))
  generator = generate_lib.Generator(config, workdir)
  model, params = build.denoiser(config), generator.params
  relative = lambda a, b: float(np.linalg.norm(a - b) / np.linalg.norm(a))
  x = jax.random.normal(jax.random.key(0), (1, *build.latent_grid(config), build.dit_in_dim(config)))
  for kind, (a, b, position) in PAIRS.items():
    ids = jnp.asarray(build.tokenizer(config).encode_batch([a, b])[0])
    context, _, _ = model.apply({"params": params}, ids, method=model.encode_text)
    context = np.asarray(context)
    velocity = []
    for t in (0.9, 0.6, 0.3):
      v = [np.asarray(model.apply({"params": params}, x, jnp.array([t]), ids[i:i + 1])) for i in range(2)]
      velocity.append(f"{relative(*v):.3f}")
    print(f"{kind:20s} text output at the word {relative(context[0, position], context[1, position]):.3f}; "
          f"velocity at t=0.9/0.6/0.3 {' / '.join(velocity)}", flush=True)
  spec = datasets.shapes_spec(config.data)
  for motion in shapes.MOTIONS:
    prompts = [f"a red circle moving {motion}"] * _NUM.value
    videos = generator.generate(prompts, progress=False)
    detected = collections.Counter(shapes_judge.judge_video(v, p, spec)["objects"][0]["detected_motion"]
                                   for v, p in zip(videos, prompts))
    print(f"'moving {motion}': detected {dict(sorted(detected.items(), key=str))}", flush=True)


if __name__ == "__main__":
  app.run(main)
