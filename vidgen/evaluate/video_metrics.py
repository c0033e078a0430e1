"""Pixel-level video metrics in numpy: reconstruction fidelity (PSNR) and temporal consistency.

Temporal consistency matters separately from fidelity: a generator can get every frame plausible and still
shimmer (background flicker) or let objects breathe (area instability), which per-frame scores miss.
"""

from __future__ import annotations

import numpy as np


def psnr(a, b, max_val: float = 255.0) -> float:
  """PSNR in dB; arrays of rank >= 5 are batches of videos [..., T, H, W, C] (mean of per-video PSNR).

  Rank <= 4 is one video (or image). Identical videos give +inf.
  """
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.shape != b.shape:
    raise ValueError(f"psnr needs equal shapes, got {a.shape} and {b.shape}")
  per_video_axes = tuple(range(a.ndim - 4, a.ndim)) if a.ndim >= 5 else None
  mse = np.mean((a - b) ** 2, axis=per_video_axes)
  with np.errstate(divide="ignore"):
    values = 10.0 * np.log10(max_val**2 / mse)
  return float(np.mean(values))


def background_flicker(video, object_mask=None) -> float:
  """Mean |frame[t+1] - frame[t]| (gray levels, averaged over RGB) over pixels that are background in both.

  video: [T, H, W, C] in 0..255; object_mask: bool [T, H, W], True where an object is (None: all background).
  Returns nan when no pixel is background in two consecutive frames.
  """
  video = np.asarray(video, np.float32)
  if video.ndim != 4 or video.shape[0] < 2:
    raise ValueError(f"background_flicker needs a video [T>=2, H, W, C], got shape {video.shape}")
  diff = np.abs(np.diff(video, axis=0)).mean(axis=-1)  # [T-1, H, W]
  if object_mask is None:
    return float(diff.mean())
  object_mask = np.asarray(object_mask, bool)
  if object_mask.shape != video.shape[:3]:
    raise ValueError(f"object_mask shape {object_mask.shape} != video's [T, H, W] {video.shape[:3]}")
  background = ~object_mask[:-1] & ~object_mask[1:]
  if not background.any():
    return float("nan")
  return float(diff[background].mean())


def transition_flicker(video, object_mask=None) -> np.ndarray:
  """background_flicker per transition: float64 [T-1], entry t the mean |frame[t+1] - frame[t]| (gray levels,
  averaged over RGB) over the pixels that are background in both frames t and t+1.

  video: [T, H, W, C] in 0..255; object_mask: bool [T, H, W], True where an object is (None: all background).
  An entry is nan when no pixel is background in both of its frames. Locates flicker in time (seams between
  generated chunks against transitions within one); background_flicker pools all transitions' pixels instead.
  """
  video = np.asarray(video, np.float32)
  if video.ndim != 4 or video.shape[0] < 2:
    raise ValueError(f"transition_flicker needs a video [T>=2, H, W, C], got shape {video.shape}")
  diff = np.abs(np.diff(video, axis=0)).mean(axis=-1)  # [T-1, H, W]
  if object_mask is None:
    return diff.mean(axis=(1, 2)).astype(np.float64)
  object_mask = np.asarray(object_mask, bool)
  if object_mask.shape != video.shape[:3]:
    raise ValueError(f"object_mask shape {object_mask.shape} != video's [T, H, W] {video.shape[:3]}")
  background = ~object_mask[:-1] & ~object_mask[1:]  # [T-1, H, W]
  count = background.sum(axis=(1, 2))
  total = np.where(background, diff, 0.0).sum(axis=(1, 2), dtype=np.float64)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def area_stability(areas) -> float:
  """Coefficient of variation (std / mean) of an object's area across frames: 0 for a rigid object.

  Returns nan when the mean area is 0 (the object never appears).
  """
  areas = np.asarray(areas, np.float64)
  mean = areas.mean() if areas.size else 0.0
  if mean <= 0:
    return float("nan")
  return float(areas.std() / mean)
