"""Analytic judge: does a generated Shapes video show what its prompt asks for?

No learned model: the prompt is parsed with the caption grammar (or one of the held-out paraphrase word orders,
shapes.PARAPHRASE_TEMPLATES), pixels are segmented by palette color, and
each requested object is checked for color (present in most frames), shape (soft IoU against ideal, optionally
blurred, templates fitted by area and centroid, majority over frames) and direction (linear fit of its centroid)
and unrequested blobs are flagged. Segmentation models each pixel as a mix of the background and one palette
color, so anti-aliased edges, VAE blur and slightly off colors still segment cleanly, while far-off colors count
as unknown objects. Real renders score 100% (tests require >= 99%).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
from scipy import ndimage

from vidgen.data import shapes
from vidgen.evaluate import video_metrics

BACKGROUND = -1
UNKNOWN = len(shapes.COLORS)  # far from the background yet explained by no palette color
COLOR_TOLERANCE = 60.0  # max RGB distance from the background-to-color mixing line
UNKNOWN_DISTANCE = 80.0  # unexplained pixels this far from the background belong to an unknown-color object
MIN_COVERAGE = 0.5  # mixing weight from which a pixel belongs to the object
MIN_AREA_FRACTION = 0.2  # a blob counts from 0.2 * min_size**2 pixels (a min-size triangle has 0.5)
PRESENT_FRACTION = 0.75  # a color is present when its object shows in this share of frames
EXTRA_FRACTION = 0.5  # an unrequested blob is an extra object when it shows in this share of frames
MIN_TRAVEL_FRACTION = 0.4  # the fitted displacement must reach this share of speed * (T - 1)
TEMPLATE_BLURS = (0.0, 0.5, 1.0, 1.5)  # gaussian sigmas (pixels) tried on the shape templates
_SPATIAL_3X3 = np.ones((1, 3, 3), bool)  # 8-connected within a frame, never across frames


class Segmentation(NamedTuple):
  labels: np.ndarray  # int [T, H, W]: palette index, BACKGROUND or UNKNOWN
  best: np.ndarray  # int [T, H, W]: palette color nearest to each pixel's mixing line
  alpha: np.ndarray  # float32 [T, H, W, K]: mixing weight of each palette color, clipped to [0, 1]
  object_mask: np.ndarray  # bool [T, H, W]: anything that is not clean background, dilated by a pixel


def segment(video: np.ndarray, spec: shapes.ShapesSpec) -> Segmentation:
  """Labels every pixel by its nearest background-to-palette mixing line (distance-thresholded)."""
  background = np.asarray(spec.background, np.float32)
  offsets = np.asarray(video, np.float32) - background  # [T, H, W, 3]
  directions = np.asarray([shapes.PALETTE[c] for c in shapes.COLORS], np.float32) - background  # [K, 3]
  alpha = np.clip(offsets @ directions.T / (directions * directions).sum(-1), 0.0, 1.0)  # [T, H, W, K]
  residual = np.linalg.norm(offsets[..., None, :] - alpha[..., None] * directions, axis=-1)
  best = residual.argmin(-1)
  best_alpha = np.take_along_axis(alpha, best[..., None], -1)[..., 0]
  best_residual = np.take_along_axis(residual, best[..., None], -1)[..., 0]
  explained = best_residual <= COLOR_TOLERANCE
  unknown = ~explained & (np.linalg.norm(offsets, axis=-1) > UNKNOWN_DISTANCE)
  labels = np.where(explained & (best_alpha >= MIN_COVERAGE), best, BACKGROUND)
  labels[unknown] = UNKNOWN
  touched = (explained & (best_alpha >= 0.2)) | unknown
  object_mask = ndimage.binary_dilation(touched, structure=_SPATIAL_3X3)
  return Segmentation(labels, best, alpha, object_mask)


def _blobs(mask: np.ndarray, min_area: float) -> list[np.ndarray]:
  """8-connected components of a 2D mask with at least min_area pixels, largest first."""
  components, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
  if not count:
    return []
  areas = np.bincount(components.ravel())[1:]
  order = [i for i in np.argsort(-areas, kind="stable") if areas[i] >= min_area]
  return [components == i + 1 for i in order]


def _shape_scores(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Soft IoU of coverage maps [N, H, W] with each ideal shape, fitted by area and centroid.

  Templates are also blurred by a few widths and the best kept, so a blurred square (VAE decode) still reads as
  a square rather than a circle: the judge asks which shape was meant, PSNR measures sharpness.
  Returns (scores [len(SHAPES), N], best blur sigma in pixels [len(SHAPES), N]).
  """
  num, height, width = maps.shape
  area = np.maximum(maps.sum((1, 2)), 1e-6)
  ys, xs = (np.arange(height) + 0.5)[:, None], (np.arange(width) + 0.5)[None, :]
  mx, my = (maps * xs).sum((1, 2)) / area, (maps * ys).sum((1, 2)) / area
  fits = {
      "circle": (mx, my, 2 * np.sqrt(area / np.pi)),
      "square": (mx, my, np.sqrt(area)),
      # A triangle's centroid sits size/6 below its bounding-box center.
      "triangle": (mx, my - np.sqrt(2 * area) / 6, np.sqrt(2 * area)),
  }
  scores = np.zeros((len(shapes.SHAPES), num))
  blur = np.zeros((len(shapes.SHAPES), num))
  for i, shape in enumerate(shapes.SHAPES):
    sharp = shapes.shape_coverage(shape, *fits[shape], height, width)
    for sigma in TEMPLATE_BLURS:
      template = ndimage.gaussian_filter(sharp, (0, sigma, sigma)) if sigma else sharp
      iou = np.minimum(maps, template).sum((1, 2)) / np.maximum(maps, template).sum((1, 2))
      better = iou > scores[i]
      scores[i], blur[i] = np.where(better, iou, scores[i]), np.where(better, sigma, blur[i])
  return scores, blur


def _judge_object(seg: Segmentation, comp: shapes.Composition, rank: int, spec: shapes.ShapesSpec) -> dict:
  """Color, shape and direction verdicts for the rank-th requested object of its color."""
  num_frames = seg.labels.shape[0]
  color = shapes.COLORS.index(comp.color)
  min_area = MIN_AREA_FRACTION * spec.min_size**2
  frames, maps = [], []
  for t in range(num_frames):
    blobs = _blobs(seg.labels[t] == color, min_area)
    if len(blobs) > rank:
      # Two pixels of margin catch blurred edges; pixels nearer another color stay out.
      region = ndimage.binary_dilation(blobs[rank], np.ones((3, 3), bool), iterations=2) & (seg.best[t] == color)
      frames.append(t)
      maps.append(np.where(region, seg.alpha[t, ..., color], 0.0))
  areas = np.zeros(num_frames)
  result = dict(color=comp.color, shape=comp.shape, motion=comp.motion, frames_present=len(frames),
                detected_shape=None, detected_motion=None, displacement=0.0, blur_px=float("nan"))
  color_ok = len(frames) >= PRESENT_FRACTION * num_frames
  shape_ok = direction_ok = False
  if frames:
    maps = np.stack(maps)
    areas[frames] = maps.sum((1, 2))
    scores, blur = _shape_scores(maps)
    per_frame = scores.argmax(0)
    detected = np.bincount(per_frame, minlength=len(shapes.SHAPES)).argmax()
    result["detected_shape"] = shapes.SHAPES[detected]
    result["blur_px"] = float(blur[detected].mean())
    shape_ok = result["detected_shape"] == comp.shape
  if len(frames) >= 2:
    ys, xs = (np.arange(maps.shape[1]) + 0.5)[:, None], (np.arange(maps.shape[2]) + 0.5)[None, :]
    mx, my = (maps * xs).sum((1, 2)) / areas[frames], (maps * ys).sum((1, 2)) / areas[frames]
    vx, vy = np.polyfit(frames, mx, 1)[0], np.polyfit(frames, my, 1)[0]
    velocity = vx if abs(vx) >= abs(vy) else vy
    result["displacement"] = float(abs(velocity) * (num_frames - 1))
    if result["displacement"] >= MIN_TRAVEL_FRACTION * spec.speed * (num_frames - 1):
      axis = ("left", "right") if abs(vx) >= abs(vy) else ("up", "down")
      result["detected_motion"] = axis[int(velocity > 0)]
    else:
      result["detected_motion"] = "static"
    direction_ok = result["detected_motion"] == comp.motion
  result.update(color_ok=bool(color_ok), shape_ok=bool(shape_ok), direction_ok=bool(direction_ok),
                correct=bool(color_ok and shape_ok and direction_ok),
                area_cv=video_metrics.area_stability(areas))
  return result


def _extra_objects(seg: Segmentation, comps: Sequence[shapes.Composition], spec: shapes.ShapesSpec) -> list[str]:
  """Colors (or 'unknown') with more significant blobs than requested in at least EXTRA_FRACTION of frames."""
  min_area = MIN_AREA_FRACTION * spec.min_size**2
  extras = []
  num_frames = seg.labels.shape[0]
  for label, name in enumerate(shapes.COLORS + ("unknown",)):
    requested = sum(c.color == name for c in comps)
    frames = sum(len(_blobs(seg.labels[t] == label, min_area)) > requested for t in range(num_frames))
    if frames >= EXTRA_FRACTION * num_frames:
      extras.append(name)
  return extras


def judge_video(video: np.ndarray, prompt: str, spec: shapes.ShapesSpec = shapes.ShapesSpec()) -> dict:
  """Verdicts for one video [T, H, W, 3] (uint8 or floats in 0..255) against its prompt (a caption, or a
  single object in a held-out paraphrase word order).

  Returns dict(prompt, objects=[per requested object: color_ok, shape_ok, direction_ok, correct,
  detected_shape, detected_motion ('static' if it moves < MIN_TRAVEL_FRACTION of the spec's travel),
  displacement, frames_present, area_cv, blur_px (edge softness)], extra_colors, extra_object, all_correct,
  flicker (background gray levels per frame), area_cv (mean over objects)).
  """
  video = np.asarray(video)
  if video.ndim != 4 or video.shape[-1] != 3 or video.shape[0] < 2:
    raise ValueError(f"judge_video needs a video [T>=2, H, W, 3], got shape {video.shape}")
  comps = shapes.parse_prompt(prompt, paraphrases=True)
  seg = segment(video, spec)
  objects = [_judge_object(seg, comp, sum(c.color == comp.color for c in comps[:i]), spec)
             for i, comp in enumerate(comps)]
  extras = _extra_objects(seg, comps, spec)
  cvs = [o["area_cv"] for o in objects if np.isfinite(o["area_cv"])]
  return dict(
      prompt=prompt, objects=objects, extra_colors=extras, extra_object=bool(extras),
      all_correct=bool(all(o["correct"] for o in objects) and not extras),
      flicker=video_metrics.background_flicker(video, seg.object_mask),
      area_cv=float(np.mean(cvs)) if cvs else float("nan"))


SUMMARY_KEYS = ("all_correct_rate", "color_accuracy", "shape_accuracy", "direction_accuracy", "mean_flicker",
                "mean_area_cv", "num_videos")


def summary(report: dict) -> dict:
  """The aggregate rates of a judge_batch report (no per-prompt results), as evaluation reports keep them."""
  return {k: report[k] for k in SUMMARY_KEYS if k in report}


def _nanmean(values) -> float:
  values = np.asarray(values, np.float64)
  values = values[np.isfinite(values)]
  return float(values.mean()) if values.size else float("nan")


def judge_batch(videos, prompts: Sequence[str], spec: shapes.ShapesSpec = shapes.ShapesSpec()) -> dict:
  """Judges each (video, prompt) pair and aggregates rates over objects and videos.

  Returns dict(num_videos, color_accuracy, shape_accuracy, direction_accuracy (over requested objects),
  all_correct_rate, extra_object_rate, mean_flicker, mean_area_cv, by_composition (all-correct rate per
  canonical prompt), per_prompt (each judge_video result, in order)).
  """
  if len(videos) != len(prompts):
    raise ValueError(f"judge_batch got {len(videos)} videos but {len(prompts)} prompts")
  results = [judge_video(v, p, spec) for v, p in zip(videos, prompts)]
  objects = [o for r in results for o in r["objects"]]
  rate = lambda key, items: float(np.mean([x[key] for x in items])) if items else float("nan")
  by_composition: dict[str, list[bool]] = {}
  for r in results:
    key = shapes.make_caption(shapes.parse_prompt(r["prompt"], paraphrases=True))
    by_composition.setdefault(key, []).append(r["all_correct"])
  return dict(
      num_videos=len(results),
      color_accuracy=rate("color_ok", objects), shape_accuracy=rate("shape_ok", objects),
      direction_accuracy=rate("direction_ok", objects), all_correct_rate=rate("all_correct", results),
      extra_object_rate=rate("extra_object", results),
      mean_flicker=_nanmean([r["flicker"] for r in results]),
      mean_area_cv=_nanmean([o["area_cv"] for o in objects]),
      by_composition={k: float(np.mean(v)) for k, v in by_composition.items()},
      per_prompt=results)
