r"""Input pipeline speed against what the tiny DiT step consumes, and DiT training from the latent cache
against training from pixels.

  python experiments/benchmark_input.py --dir=/tmp/vidgen_input_bench [--videos=96] [--out=input.json]

All in one process on this machine:
  1. writes --videos H.264 mp4s of Shapes clips (16:9, 9:16 and 1:1, 2 s at 24 fps) with caption files;
  2. pipeline: examples/s of `datasets.train_iterator` over that folder (PyAV decode, 24 -> 8 fps, random
     clip start, resize + center crop into the buckets 32x56x9, 56x32x9, 40x40x9), batch 32;
  3. tiny DiT step: examples/s of the Shapes tiny preset's DiT train step (batch 32) on the latents of
     those same buckets (3x4x7, 3x7x4, 3x5x5), one step per bucket in turn, as the schedule draws them;
  4. latent cache: examples/s of reading cached latents by bucket (what DiT training reads), and the
     seconds per example of VAE-encoding clips (what training from pixels adds to every step).
Steps 2 and 3 alternate for --rounds rounds and the median ratio is reported: a shared machine's speed
drifts by a third within minutes, and a ratio from one round pair compares like with like.
Training from pixels costs pipeline + encode + step per example; from the cache, cache read + step.
"""
from __future__ import annotations

import json
import os
import sys
import time

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchmark_dit  # noqa: E402  (its tiny DiT step; its --out flag serves this script too)

_DIR = flags.DEFINE_string("dir", "/tmp/vidgen_input_bench", "Where the videos, the cache and the workdir go.")
_VIDEOS = flags.DEFINE_integer("videos", 96, "Videos to write (a third per aspect ratio).")
_BATCHES = flags.DEFINE_integer("batches", 20, "Timed pipeline batches per round (after 2 warm-up batches).")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Rounds of pipeline then DiT timing; medians are reported.")

BUCKETS = ("32x56x9", "56x32x9", "40x40x9")
SHAPES = ((72, 128), (128, 72), (96, 96))  # (height, width) of the written videos


def write_folder(root: str, count: int) -> None:
  from vidgen import video_io
  from vidgen.data import shapes
  os.makedirs(root, exist_ok=True)
  for i in range(count):
    h, w = SHAPES[i % len(SHAPES)]
    path = os.path.join(root, f"clip_{i:04d}.mp4")
    if os.path.exists(path):
      continue
    side = min(h, w)
    spec = shapes.ShapesSpec(height=h, width=w, num_frames=49, speed=0.5, min_size=side / 6, max_size=side / 5)
    ex = shapes.make_example(spec, "train", i)
    video_io.write_mp4(path, ex["video"], fps=24, crf=18)
    with open(os.path.join(root, f"clip_{i:04d}.txt"), "w") as f:
      f.write(ex["caption"])


def rate(iterator, batches: int, batch_size: int) -> float:
  """Examples per second over `batches` batches, after two warm-up batches."""
  for _ in range(2):
    next(iterator)
  t0 = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  return batches * batch_size / (time.perf_counter() - t0)


def main(argv):
  del argv
  import jax
  import jax.numpy as jnp
  import numpy as np
  from configs import shapes as shapes_config
  from vidgen.data import buckets as buckets_lib
  from vidgen.data import datasets
  from vidgen.data import latent_cache
  from vidgen.data import pipeline
  from vidgen.models import build
  from vidgen.models import vae_codec

  root, batch = os.path.join(_DIR.value, "videos"), 32
  t0 = time.perf_counter()
  write_folder(root, _VIDEOS.value)
  print(f"{_VIDEOS.value} videos in {root} ({time.perf_counter() - t0:.1f}s)")
  config = shapes_config.get_config("tiny")
  config.data.name, config.data.path, config.data.buckets = "folder", root, BUCKETS
  config.data.fps = 8
  workdir = os.path.join(_DIR.value, "work")

  # The tiny VAE at random weights: encode time does not depend on what the weights are.
  vae = build.vae(config)
  vae_params = vae.init({"params": jax.random.key(0), "sample": jax.random.key(1)},
                        jnp.zeros((1, 9, 40, 40, 3)))["params"]
  encode_jit = vae_codec.encode_fn(config)
  encode = lambda videos: encode_jit(vae_params, videos)

  model, shapes, _, _ = benchmark_dit.build("tiny", "float32", "xla", "none", scan_blocks=True)
  rng = jax.random.key(0)
  ctx = jax.random.normal(rng, shapes["context"])
  latents = []  # one batch of each bucket's latent shape, from the VAE itself
  for b in buckets_lib.parse(BUCKETS):
    mean, _ = jax.eval_shape(encode, jax.ShapeDtypeStruct((batch, b.frames, b.height, b.width, 3), jnp.uint8))
    latents.append(jax.random.normal(rng, mean.shape))
  params = jax.jit(model.init)(rng, latents[0], jnp.zeros((batch,)), ctx)
  tx, step = benchmark_dit.train_step_fn(model)
  step_jit = jax.jit(step)  # no donation: every round starts from the same state
  state = [params, tx.init(params)]

  def dit_rate() -> float:
    step_s = 0.0
    for x in latents:  # each bucket's step compiles once, in the first round's warm-up
      step_s += benchmark_dit._time(step_jit, (*state, x, ctx, rng), 5) / len(latents)
    return batch / step_s

  iterator = datasets.train_iterator(config.data, workdir, batch, seed=0)
  pipeline_rates, dit_rates = [], []
  for _ in range(_ROUNDS.value):
    pipeline_rates.append(rate(iterator, _BATCHES.value, batch))
    dit_rates.append(dit_rate())
  ratios = [p / d for p, d in zip(pipeline_rates, dit_rates)]
  pipeline_rate, dit_rate_median = float(np.median(pipeline_rates)), float(np.median(dit_rates))

  data = datasets.media_set(config.data, workdir, progress=False)
  cache = latent_cache.build(os.path.join(workdir, "cache"), data, encode, build.tokenizer(config),
                             progress=False)
  jax.block_until_ready(encode(np.zeros((batch, 9, 40, 40, 3), np.uint8)))
  t0 = time.perf_counter()
  for _ in range(5):
    jax.block_until_ready(encode(np.zeros((batch, 9, 40, 40, 3), np.uint8)))
  encode_s_per_example = (time.perf_counter() - t0) / (5 * batch)
  schedule = buckets_lib.Schedule(cache.members, [1.0] * len(BUCKETS), batch, 0)
  cache_rate = rate(pipeline.bucketed_iterator(schedule, lambda b, ex, s, r: cache[ex]), _BATCHES.value, batch)

  from_pixels = 1.0 / (1.0 / pipeline_rate + encode_s_per_example + 1.0 / dit_rate_median)
  from_cache = 1.0 / (1.0 / cache_rate + 1.0 / dit_rate_median)
  results = {
      "device": jax.devices()[0].device_kind, "cpu_count": os.cpu_count(), "videos": _VIDEOS.value,
      "report": data.report()["buckets"], "pipeline_examples_per_s": pipeline_rate,
      "dit_step_examples_per_s": dit_rate_median, "pipeline_to_dit_ratio": float(np.median(ratios)),
      "rounds": {"pipeline_examples_per_s": pipeline_rates, "dit_step_examples_per_s": dit_rates,
                 "ratio": ratios},
      "cache_read_examples_per_s": cache_rate, "vae_encode_s_per_example": encode_s_per_example,
      "train_from_pixels_examples_per_s": from_pixels, "train_from_cache_examples_per_s": from_cache,
      "cache_speedup": from_cache / from_pixels,
  }
  print("| measure | examples/s |\n|---|---|")
  for k in ("pipeline_examples_per_s", "dit_step_examples_per_s", "cache_read_examples_per_s",
            "train_from_pixels_examples_per_s", "train_from_cache_examples_per_s"):
    print(f"| {k[:-len('_examples_per_s')]} | {results[k]:.1f} |")
  print("pipeline / tiny DiT step by round: " + ", ".join(f"{r:.2f}x" for r in ratios))
  print(f"pipeline / tiny DiT step (median): {results['pipeline_to_dit_ratio']:.1f}x; VAE encode "
        f"{encode_s_per_example * 1e3:.2f} ms/example; training from the cache is {results['cache_speedup']:.2f}x "
        "faster than from pixels")
  if benchmark_dit._OUT.value:
    with open(benchmark_dit._OUT.value, "w") as f:
      json.dump(results, f, indent=1)


if __name__ == "__main__":
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  app.run(main)
