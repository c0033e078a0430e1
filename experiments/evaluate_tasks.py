r"""The frame-conditioned generation tasks (vidgen/tasks.py) of a trained Shapes workdir, judged on held-out
clips by the analytic Shapes judge.

  python experiments/evaluate_tasks.py --config=configs/shapes.py:tiny --workdir=runs/tiny \
      [--num=32] [--times=30] [--overlap=K] [--out=tasks.json] [--seed=0] [--videos_dir=DIR]

The prompts are the captions of the first --num held-out clips (compositions never seen in training); video i
of a batch samples from the noise of seed + i, so t2v, i2v and edit videos of one clip share their noise.
  1. t2v: the captions generated from text alone; the judge's all-correct rate and accuracies (the baseline).
  2. i2v: each clip's frame 0 given, its caption guiding the motion (batched: the known frames of
     tasks.image_to_video, one per clip). PSNR of generated frame 0 against the given image and against its
     VAE round trip (the known latent is written back, so the round trip is what frame 0 can be); judged.
  2b. interpolate: keyframes of each clip at frames 0 and F - 1, and at 0, F // 2 and F - 1 (Shapes objects
     move at constant speed, so the clip's own frames are the truth between them): PSNR of the generated
     in-between frames against the truth (goal >= 25 dB), next to the VAE round trip of the truth (what a
     perfect DiT reaches) and a cross-fade of the keyframes (what no motion model reaches); judged.
  3. extend: min(--num, 8) clips continued forward by --times chunks (tasks.extend into an mp4, read back).
     Chunk i = 1..times is the F frames of the i-th generated clip, its `overlap` conditioning frames (the
     end of chunk i - 1, as written) included; the given clip (chunk 0, real) is not judged.
     Per chunk: the share of clips whose every object keeps its color and shape (must be >= 90% for every
     chunk), and the all-correct rate. Flicker (video_metrics.transition_flicker over the judge's background)
     at the seams between two generated chunks (the last written frame of one, the first new frame of the
     next; the mean, and the worst seam position's mean over clips) against the flicker inside generated
     chunks: every transition of the t2v clips (must be <= 1.5x). Also against the t2v clips' latent-frame
     boundaries (every seam crosses one) and against transitions between a chunk's new frames: with 5 of 9
     frames known these all lie inside one latent frame, a reference even the VAE round trip of the real
     clips exceeds at its latent-frame boundaries (shown beside it). The seam from the given real clip to
     chunk 1 is reported apart: the real clips carry sensor noise that generated frames lack.
     Memory: tasks.extend for 3 and for --times chunks, each in a child process (this script again with
     --memory_child); their peak RSS (ru_maxrss) must not grow with the chunks.
  4. connect: clip j, a transition, clip j + 1 (clip j + 1's caption as the prompt); flicker at the two seams
     against every other transition of the joined video.
  5. edit: strength 0.3 under the clip's own caption: per-frame centroid distance of each object (pixels of its
     color label in the judge's segmentation) between source and edit. Strength 1.0 under another held-out
     caption (the next clip's of a different composition): judged against that prompt, next to t2v on it.
Prints a markdown table (measure | value | target) and writes every number to --out.
"""
from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
from ml_collections import config_flags

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CONFIG = config_flags.DEFINE_config_file("config", os.path.join(_ROOT, "configs/shapes.py:tiny"),
                                          "Config file and preset (of the trained workdir).", lock_config=False)
_WORKDIR = flags.DEFINE_string("workdir", None, "A trained workdir (VAE and DiT checkpoints).", required=True)
_NUM = flags.DEFINE_integer("num", 32, "Held-out clips (prompts) per task; extend uses min(num, 8).")
_TIMES = flags.DEFINE_integer("times", 30, "Chunks each extended clip grows by.")
_OVERLAP = flags.DEFINE_integer("overlap", None, "Frames of conditioning per chunk end (extend, connect; "
                                "default tasks.default_overlap for each).")
_OUT = flags.DEFINE_string("out", None, "Also write every number as JSON here.")
_SEED = flags.DEFINE_integer("seed", None, "Sampling seed (default config.sample.seed).")
_VIDEOS_DIR = flags.DEFINE_string("videos_dir", None, "Keep the extended mp4s here (default: a temporary "
                                  "directory, deleted at the end).")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show progress bars.")
_MEMORY_CHILD = flags.DEFINE_integer("memory_child", 0, "Internal: extend held-out clip 0 by this many chunks, "
                                     "print the peak RSS as one JSON line and exit.")

EXTEND_CLIPS = 8
MEMORY_BASE_TIMES = 3
CHILD_TAG = "MEMORY_CHILD "


def _finite_or_str(x):
  """JSON-safe: non-finite floats become 'inf', '-inf' or 'nan' strings (strict JSON has no such numbers)."""
  if isinstance(x, dict):
    return {k: _finite_or_str(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_finite_or_str(v) for v in x]
  if isinstance(x, float) and not math.isfinite(x):
    return str(x)
  return x


def _nanmean(values) -> float:
  import numpy as np
  values = np.asarray(values, np.float64)
  values = values[np.isfinite(values)]
  return float(values.mean()) if values.size else float("nan")


def _flicker_by_transition_kind(videos, spec, tc: int) -> dict:
  """Mean background flicker of whole clips over every transition, over those crossing from latent frame j >= 1
  to j + 1 (frame tc j -> tc j + 1: what every extension seam crosses), and over those inside one latent frame."""
  import numpy as np
  from vidgen.evaluate import shapes_judge
  from vidgen.evaluate import video_metrics
  f = np.stack([video_metrics.transition_flicker(v, shapes_judge.segment(v, spec).object_mask) for v in videos])
  t = np.arange(f.shape[1])
  return dict(all=_nanmean(f), latent_boundary=_nanmean(f[:, (t % tc == 0) & (t > 0)]),
              inside_latent_frame=_nanmean(f[:, t % tc != 0]))


def _judged(judge: dict) -> dict:
  keys = ("all_correct_rate", "color_accuracy", "shape_accuracy", "direction_accuracy", "extra_object_rate",
          "mean_flicker", "num_videos")
  return {k: judge[k] for k in keys}


def _identity_ok(verdict: dict) -> bool:
  """Every requested object shows in its color and with its shape (motion aside)."""
  return all(o["color_ok"] and o["shape_ok"] for o in verdict["objects"])


def _centroids(labels, color: int):
  """[T, 2] (x, y) pixel-center centroid of the pixels labelled `color` per frame; nan where there are none."""
  import numpy as np
  t, h, w = labels.shape
  out = np.full((t, 2), np.nan)
  ys, xs = np.mgrid[0:h, 0:w] + 0.5
  for i in range(t):
    m = labels[i] == color
    if m.any():
      out[i] = xs[m].mean(), ys[m].mean()
  return out


def _cross_fade(videos, keys):
  """uint8 [n, F, H, W, 3]: each frame a linear blend of the keyframes around it (interpolation without motion)."""
  import numpy as np
  out = videos.astype(np.float64).copy()
  for a, b in zip(keys, keys[1:]):
    for t in range(a + 1, b):
      w = (t - a) / (b - a)
      out[:, t] = (1 - w) * videos[:, a] + w * videos[:, b]
  return np.round(out).astype(np.uint8)


def _extend_layout(given: int, times: int, head: int, new: int) -> dict:
  """Where the chunks of a forward extension sit in its video: `given` frames, then `new` per chunk.

  chunks: (start, stop) frames of chunk i = 1..times, its `head` conditioning frames (the written end of the
  chunk before) included; given_seam: the transition (index t: frame t -> t + 1) from the given clip to
  chunk 1; seams: those between two generated chunks (last written frame -> first new frame); within: those
  between two new frames of one chunk.
  """
  starts = [given + i * new for i in range(times)]  # first new frame of each chunk
  return dict(chunks=[(s - head, s + new) for s in starts], given_seam=starts[0] - 1,
              seams=[s - 1 for s in starts[1:]], within=[t for s in starts for t in range(s, s + new - 1)])


def _memory_child(config, workdir: str, times: int, seed: int) -> None:
  """Extends held-out clip 0 by `times` chunks in this process and prints its peak RSS as a JSON line."""
  from vidgen import generate as generate_lib
  from vidgen import tasks
  from vidgen.data import datasets
  clip = datasets.source(config.data, workdir, "heldout")[0]
  gen = generate_lib.Generator(config, workdir)
  with tempfile.TemporaryDirectory() as tmp:
    t0 = time.perf_counter()
    info = tasks.extend(gen, clip["caption"], clip["video"], os.path.join(tmp, "extend.mp4"), times=times,
                        overlap=_OVERLAP.value, seed=seed, progress=False)
    seconds = time.perf_counter() - t0
  peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
  print(CHILD_TAG + json.dumps({"times": times, "frames": info["frames"], "peak_rss_mib": peak_kib / 1024,
                                "seconds": seconds}), flush=True)


def _run_memory_child(times: int) -> dict:
  """This script again with --memory_child=times (the other flags as given); its JSON line, or the error."""
  cmd = [sys.executable, os.path.abspath(__file__), *sys.argv[1:], f"--memory_child={times}", "--noprogress"]
  proc = subprocess.run(cmd, capture_output=True, text=True, cwd=_ROOT)
  for line in proc.stdout.splitlines()[::-1]:
    if line.startswith(CHILD_TAG):
      return json.loads(line[len(CHILD_TAG):])
  tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
  return {"times": times, "error": f"exit {proc.returncode}: " + " | ".join(tail)}


def main(argv):
  del argv
  import numpy as np
  import tqdm
  from vidgen import generate as generate_lib
  from vidgen import tasks
  from vidgen import video_io
  from vidgen.data import datasets
  from vidgen.data import shapes
  from vidgen import logs
  from vidgen.evaluate import shapes_judge
  from vidgen.evaluate import video_metrics

  if not flags.FLAGS["verbosity"].present:
    logs.quiet_libraries()  # orbax logs every restore otherwise; -v 0 brings it back
  config, workdir = _CONFIG.value, _WORKDIR.value
  seed = config.sample.seed if _SEED.value is None else _SEED.value
  if _MEMORY_CHILD.value:
    return _memory_child(config, workdir, _MEMORY_CHILD.value, seed)
  progress = _PROGRESS.value
  spec = datasets.shapes_spec(config.data)
  source = datasets.source(config.data, workdir, "heldout")
  n = min(_NUM.value, len(source))
  clips = [source[i] for i in range(n)]
  videos = np.stack([c["video"] for c in clips])  # [n, T, H, W, 3] uint8
  captions = [c["caption"] for c in clips]
  gen = generate_lib.Generator(config, workdir)
  frames = config.data.num_frames
  overlap = tasks.check_overlap(_OVERLAP.value, frames, gen.temporal_compression)
  connect_overlap = tasks.check_overlap(_OVERLAP.value, frames, gen.temporal_compression, ends=2)
  times = _TIMES.value
  r = {"workdir": workdir, "preset": config.get("preset", ""), "num": n, "seed": seed,
       "settings": gen.settings(seed), "seconds": {},
       "chunks": {"frames": frames, "overlap": overlap, "connect_overlap": connect_overlap}}
  judge_videos = lambda vids, prompts: shapes_judge.judge_batch(vids, prompts, spec)
  r["real_heldout"] = _judged(judge_videos(videos, captions))

  # 1. t2v baseline.
  t0 = time.perf_counter()
  t2v = gen.generate(captions, seed, progress=progress)
  t2v_judge = judge_videos(t2v, captions)
  t2v_correct = [v["all_correct"] for v in t2v_judge["per_prompt"]]
  # Flicker inside whole generated chunks, the extension seams' reference; the VAE round trip of the real clips
  # shows what the latent-frame structure gives to real motion.
  tc = gen.temporal_compression
  truth_round_trip = gen.decode(gen.encode(videos))
  r["t2v"] = dict(_judged(t2v_judge), flicker=_flicker_by_transition_kind(t2v, spec, tc))
  r["real_heldout"]["round_trip_flicker"] = _flicker_by_transition_kind(truth_round_trip, spec, tc)
  r["seconds"]["t2v"] = time.perf_counter() - t0

  # 2. i2v: frame 0 of each clip, one image per prompt.
  t0 = time.perf_counter()
  images = videos[:, :1]  # [n, 1, H, W, 3]
  i2v = tasks.image_to_video(gen, captions, images[:, 0], seed, progress=progress)
  round_trip = gen.decode(gen.encode(images))[:, 0]  # [n, H, W, 3]
  psnr_image = [video_metrics.psnr(i2v[i, 0], images[i, 0]) for i in range(n)]
  psnr_round_trip = [video_metrics.psnr(i2v[i, 0], round_trip[i]) for i in range(n)]
  single = tasks.image_to_video(gen, [captions[0]], images[0], seed=seed, progress=False)[0]
  i2v_judge = judge_videos(i2v, captions)
  r["i2v"] = dict(_judged(i2v_judge),
                  psnr_frame0_vs_image=float(np.mean(psnr_image)), psnr_frame0_vs_image_min=float(min(psnr_image)),
                  psnr_frame0_vs_round_trip=float(np.mean(psnr_round_trip)),
                  psnr_frame0_vs_round_trip_min=float(min(psnr_round_trip)),
                  psnr_round_trip_vs_image=float(np.mean([video_metrics.psnr(round_trip[i], images[i, 0])
                                                          for i in range(n)])),
                  t2v_all_correct_rate_same_prompts=r["t2v"]["all_correct_rate"],
                  batched_vs_image_to_video_max_abs_diff=int(np.abs(single.astype(int) - i2v[0]).max()))
  r["seconds"]["i2v"] = time.perf_counter() - t0

  # 2b. interpolate: keyframes of each clip (one set per prompt), the clip's other frames the truth.
  t0 = time.perf_counter()
  r["interpolate"] = {}
  for keys in ([0, frames - 1], [0, frames // 2, frames - 1]):
    out = tasks.interpolate(gen, captions, videos[:, keys], keys, seed, progress=progress)
    between = [t for t in range(frames) if t not in keys]
    fade = _cross_fade(videos, keys)
    psnr = lambda a: float(np.mean([video_metrics.psnr(a[i, between], videos[i, between]) for i in range(n)]))
    r["interpolate"][",".join(map(str, keys))] = dict(
        _judged(judge_videos(out, captions)), psnr_between=psnr(out), psnr_between_round_trip=psnr(truth_round_trip),
        psnr_between_cross_fade=psnr(fade),
        psnr_between_min=float(min(video_metrics.psnr(out[i, between], videos[i, between]) for i in range(n))))
  r["seconds"]["interpolate"] = time.perf_counter() - t0

  # 3. extend forward: chunk i (1..times) = frames [T0 - overlap + (i - 1) new, + F) of the written video.
  t0 = time.perf_counter()
  n_ext = min(n, EXTEND_CLIPS)
  new = frames - overlap
  identity = np.zeros((n_ext, times), bool)
  correct = np.zeros((n_ext, times), bool)
  seam, within, given_seam, total_frames = [], [], [], []
  with tempfile.TemporaryDirectory() as tmp:
    out_dir = _VIDEOS_DIR.value or tmp
    os.makedirs(out_dir, exist_ok=True)
    for j in tqdm.trange(n_ext, desc=f"extend x{times}", disable=not progress):
      path = os.path.join(out_dir, f"extend_{j:02d}_{generate_lib.slug(captions[j])}.mp4")
      info = tasks.extend(gen, captions[j], videos[j], path, times=times, overlap=overlap, seed=seed + j * times,
                          progress=False, fps=config.data.fps)
      video, _ = video_io.read_video(path)
      if len(video) != info["frames"] or info["frames_per_chunk"] != new:
        raise RuntimeError(f"{path}: {len(video)} frames read back, extend reported {info}")
      total_frames.append(len(video))
      layout = _extend_layout(len(videos[j]), times, overlap, new)
      for i, (a, b) in enumerate(layout["chunks"]):
        verdict = shapes_judge.judge_video(video[a:b], captions[j], spec)
        identity[j, i], correct[j, i] = _identity_ok(verdict), verdict["all_correct"]
      flicker = video_metrics.transition_flicker(video, shapes_judge.segment(video, spec).object_mask)
      given_seam.append(flicker[layout["given_seam"]])
      seam.append(flicker[layout["seams"]])
      within.extend(flicker[layout["within"]])
  identity_rate, correct_rate = identity.mean(0), correct.mean(0)
  seam_mean, within_mean = _nanmean(seam), _nanmean(within)
  chunk, trip = r["t2v"]["flicker"], r["real_heldout"]["round_trip_flicker"]
  seam_by_position = np.nanmean(np.array(seam), 0) if times > 1 else np.full(1, np.nan)  # mean over clips
  seam_worst = float(np.nanmax(seam_by_position))
  frames_target = 30 * config.data.num_frames
  r["extend"] = dict(
      clips=n_ext, times=times, new_frames_per_chunk=new, chunk_frames=frames, overlap=overlap,
      given_clip="chunk 0, not judged",
      frames=int(min(total_frames)), frames_target=frames_target, frames_ok=bool(min(total_frames) >= frames_target),
      times_for_target=int(math.ceil(max(0, frames_target - config.data.num_frames) / new)),
      color_shape_rate_per_chunk=identity_rate.tolist(), color_shape_rate_min_chunk=float(identity_rate.min()),
      color_shape_rate=float(identity.mean()),
      all_correct_rate_per_chunk=correct_rate.tolist(), all_correct_rate=float(correct.mean()),
      all_correct_rate_min_chunk=float(correct_rate.min()),
      seam_flicker=seam_mean, seam_flicker_per_position=seam_by_position.tolist(),
      seam_flicker_worst_position=seam_worst, within_flicker=within_mean,
      seam_positions_within_1_5x_chunk=int(np.sum(seam_by_position <= 1.5 * chunk["all"])),
      seam_to_chunk_flicker=seam_mean / chunk["all"], worst_seam_to_chunk_flicker=seam_worst / chunk["all"],
      seam_to_latent_boundary_flicker=seam_mean / chunk["latent_boundary"],
      seam_to_within_flicker=seam_mean / within_mean,
      round_trip_latent_boundary_to_inside_flicker=trip["latent_boundary"] / trip["inside_latent_frame"],
      given_to_first_seam_flicker=_nanmean(given_seam), seams=int(np.size(seam)), within_transitions=len(within))
  r["seconds"]["extend"] = time.perf_counter() - t0

  # 4. connect: clip j, a transition, clip j + 1, under clip j + 1's caption.
  t0 = time.perf_counter()
  if n >= 2:
    seams, rest, transition_within, transition_frames = [], [], [], []
    for j in tqdm.trange(n, desc="connect", disable=not progress):
      a, b = j, (j + 1) % n
      video, m = tasks.connect(gen, captions[b], videos[a], videos[b], overlap=connect_overlap, seed=seed + j,
                               progress=False)
      flicker = video_metrics.transition_flicker(video, shapes_judge.segment(video, spec).object_mask)
      t1 = len(videos[a])
      at = [t1 - 1, t1 + m - 1]  # a's last frame -> the transition's first; the transition's last -> b's first
      seams.extend(flicker[at])
      rest.extend(flicker[t] for t in range(len(flicker)) if t not in at)
      transition_within.extend(flicker[t1: t1 + m - 1])
      transition_frames.append(m)
    seam_mean, rest_mean = _nanmean(seams), _nanmean(rest)
    r["connect"] = dict(pairs=n, transition_frames=int(transition_frames[0]), seam_flicker=seam_mean,
                        rest_flicker=rest_mean, seam_to_rest_flicker=seam_mean / rest_mean,
                        transition_within_flicker=_nanmean(transition_within))
  else:
    r["connect"] = {"skipped": "needs --num >= 2"}
  r["seconds"]["connect"] = time.perf_counter() - t0

  # 5. edit. Strength 0.3, own caption (one source video per prompt): does the layout stay?
  t0 = time.perf_counter()
  tc = gen.temporal_compression
  usable = 1 + tc * ((videos.shape[1] - 1) // tc)
  edited = tasks.edit(gen, captions, videos, 0.3, seed, progress=progress)
  single = tasks.edit(gen, [captions[0]], videos[0], 0.3, seed=seed, progress=False)[0]
  distances, tracked, present = [], 0, 0
  for i in range(n):
    labels_src = shapes_judge.segment(videos[i, :usable], spec).labels
    labels_edit = shapes_judge.segment(edited[i], spec).labels
    for comp in shapes.parse_prompt(captions[i]):
      color = shapes.COLORS.index(comp.color)
      c_src, c_edit = _centroids(labels_src, color), _centroids(labels_edit, color)
      found = np.isfinite(c_src[:, 0])
      both = found & np.isfinite(c_edit[:, 0])
      present, tracked = present + int(found.sum()), tracked + int(both.sum())
      distances.extend(np.linalg.norm(c_src[both] - c_edit[both], axis=-1).tolist())
  # Strength 1.0, another composition's caption: the source is fully replaced by noise (x = 0 source + noise).
  other = []
  for i in range(n):
    key = shapes.parse_prompt(captions[i])
    k = next((k for k in [(i + d) % n for d in range(1, n)] if shapes.parse_prompt(captions[k]) != key), None)
    other.append(k)
  pick = [i for i in range(n) if other[i] is not None]
  r["edit"] = dict(strength_0_3=dict(
      centroid_distance_mean_px=_nanmean(distances),
      centroid_distance_max_px=float(max(distances)) if distances else float("nan"),
      tracked_fraction=tracked / max(present, 1), object_frames=present,
      all_correct_rate_own_caption=judge_videos(edited, captions)["all_correct_rate"],
      batched_vs_edit_max_abs_diff=int(np.abs(single.astype(int) - edited[0]).max())))
  if pick:
    new_prompts = [captions[other[i]] for i in pick]
    edited1 = tasks.edit(gen, new_prompts, videos[np.asarray(pick)], 1.0, seed, progress=progress)
    same_noise_t2v = gen.generate(new_prompts[:1], seed, progress=False)[0]
    r["edit"]["strength_1_0"] = dict(
        _judged(judge_videos(edited1, new_prompts)),
        t2v_all_correct_rate_same_prompts=float(np.mean([t2v_correct[other[i]] for i in pick])),
        vs_t2v_same_noise_max_abs_diff=int(np.abs(same_noise_t2v.astype(int) - edited1[0]).max()))
  else:
    r["edit"]["strength_1_0"] = {"skipped": "needs two held-out captions of different compositions"}
  r["seconds"]["edit"] = time.perf_counter() - t0

  # 3b. extend memory, each in its own process.
  t0 = time.perf_counter()
  runs = [_run_memory_child(t) for t in sorted({MEMORY_BASE_TIMES, times})]
  mem = {"runs": runs}
  if all("peak_rss_mib" in x for x in runs):
    mem["peak_rss_growth_mib"] = runs[-1]["peak_rss_mib"] - runs[0]["peak_rss_mib"]
    mem["peak_rss_growth_fraction"] = mem["peak_rss_growth_mib"] / runs[0]["peak_rss_mib"]
  r["extend"]["memory"] = mem
  r["seconds"]["memory"] = time.perf_counter() - t0

  _print_table(r)
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      json.dump(_finite_or_str(r), f, indent=1)
    print(f"wrote {_OUT.value}")


def _print_table(r: dict) -> None:
  f2, f3 = (lambda x: f"{x:.2f}"), (lambda x: f"{x:.3f}")
  t2v, i2v, ext, con = r["t2v"], r["i2v"], r["extend"], r["connect"]
  e03, e10 = r["edit"]["strength_0_3"], r["edit"]["strength_1_0"]
  acc = lambda j: f"{j['color_accuracy']:.2f} / {j['shape_accuracy']:.2f} / {j['direction_accuracy']:.2f}"
  rows = [
      ("real held-out clips: all-correct", f2(r["real_heldout"]["all_correct_rate"]), ">= 0.99 (judge ceiling)"),
      (f"t2v all-correct ({r['num']} held-out captions)", f2(t2v["all_correct_rate"]), "reference"),
      ("t2v color / shape / direction accuracy", acc(t2v), "reference"),
      ("i2v frame-0 PSNR vs given image, dB (mean, min)",
       f"{i2v['psnr_frame0_vs_image']:.2f}, {i2v['psnr_frame0_vs_image_min']:.2f}",
       f"VAE round trip: {i2v['psnr_round_trip_vs_image']:.2f}"),
      ("i2v frame-0 PSNR vs VAE round trip, dB (mean, min)",
       f"{i2v['psnr_frame0_vs_round_trip']:.2f}, {i2v['psnr_frame0_vs_round_trip_min']:.2f}",
       "high (known latent written back)"),
      ("i2v all-correct (t2v, same prompts)", f"{i2v['all_correct_rate']:.2f} ({t2v['all_correct_rate']:.2f})",
       ">= t2v"),
      ("i2v color / shape / direction accuracy", acc(i2v), "reference"),
  ]
  for keys, x in r["interpolate"].items():
    rows += [
        (f"interpolate keyframes {keys}: in-between PSNR vs truth, dB (mean, min)",
         f"{x['psnr_between']:.2f}, {x['psnr_between_min']:.2f}",
         f">= 25 (VAE round trip {x['psnr_between_round_trip']:.2f}, cross-fade {x['psnr_between_cross_fade']:.2f})"),
        (f"interpolate keyframes {keys}: all-correct", f2(x["all_correct_rate"]), "reference"),
    ]
  rows += [
      (f"extend: frames ({ext['clips']} clips x {ext['times']} chunks)", str(ext["frames"]),
       f">= {ext['frames_target']} (30 x {ext['frames_target'] // 30}; {ext['times_for_target']} chunks)"),
      ("extend color+shape kept, min over chunks", f2(ext["color_shape_rate_min_chunk"]), ">= 0.90"),
      ("extend color+shape kept, all chunks", f2(ext["color_shape_rate"]), ">= 0.90"),
      ("extend all-correct, all chunks (min chunk)",
       f"{ext['all_correct_rate']:.2f} ({ext['all_correct_rate_min_chunk']:.2f})", "reference"),
      ("extend seam (worst seam position) / flicker inside generated chunks (every transition of the t2v clips)",
       f"{ext['seam_to_chunk_flicker']:.2f} ({ext['worst_seam_to_chunk_flicker']:.2f}; {f3(ext['seam_flicker'])} "
       f"({f3(ext['seam_flicker_worst_position'])}) / {f3(t2v['flicker']['all'])}); seam positions within 1.5x: "
       f"{ext['seam_positions_within_1_5x_chunk']} of {len(ext['seam_flicker_per_position'])}", "<= 1.5"),
      ("extend seam / latent-frame boundaries inside t2v clips (the transition a seam is)",
       f"{ext['seam_to_latent_boundary_flicker']:.2f} ({f3(ext['seam_flicker'])} / "
       f"{f3(t2v['flicker']['latent_boundary'])})", "info"),
      ("extend seam / transitions between a chunk's new frames (all inside one latent frame)",
       f"{ext['seam_to_within_flicker']:.2f} ({f3(ext['seam_flicker'])} / {f3(ext['within_flicker'])})",
       f"info (VAE round trip of the real clips, boundary / inside: "
       f"{ext['round_trip_latent_boundary_to_inside_flicker']:.2f})"),
      ("extend seam flicker, given clip -> chunk 1", f3(ext["given_to_first_seam_flicker"]), "info (real clip)"),
  ]
  mem = ext["memory"]
  for run in mem["runs"]:
    rows.append((f"extend x{run['times']}: peak RSS of its process, MiB",
                 f"{run['peak_rss_mib']:.0f}" if "peak_rss_mib" in run else run["error"], "no growth with chunks"))
  if "peak_rss_growth_mib" in mem:
    rows.append(("extend peak RSS growth, MiB (fraction)",
                 f"{mem['peak_rss_growth_mib']:+.0f} ({mem['peak_rss_growth_fraction']:+.1%})", "about 0"))
  if "seam_to_rest_flicker" in con:
    rows.append(("connect seam / rest flicker",
                 f"{con['seam_to_rest_flicker']:.2f} ({f3(con['seam_flicker'])} / {f3(con['rest_flicker'])})",
                 "<= 1.5"))
  rows += [
      ("edit 0.3: centroid distance, px (mean, max)",
       f"{e03['centroid_distance_mean_px']:.2f}, {e03['centroid_distance_max_px']:.2f}", "<= 2"),
      ("edit 0.3: object frames tracked in the edit", f2(e03["tracked_fraction"]), "1.00"),
  ]
  if "all_correct_rate" in e10:
    rows.append(("edit 1.0 all-correct vs new prompt (t2v, same prompts)",
                 f"{e10['all_correct_rate']:.2f} ({e10['t2v_all_correct_rate_same_prompts']:.2f})", "about t2v"))
  print("| measure | value | target |\n|---|---|---|")
  for row in rows:
    print("| " + " | ".join(row) + " |")
  print("extend color+shape per chunk: " + " ".join(f"{x:.2f}" for x in ext["color_shape_rate_per_chunk"]))
  print("extend all-correct per chunk: " + " ".join(f"{x:.2f}" for x in ext["all_correct_rate_per_chunk"]))
  print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in r["seconds"].items()))


if __name__ == "__main__":
  sys.path.insert(0, _ROOT)
  app.run(main)
