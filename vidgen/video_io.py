"""Video files in and out with PyAV: mp4 (H.264) writing, reading any container FFmpeg decodes.

Writing is bit-reproducible: a single encoder thread, fixed settings and no timestamps from the
clock, so the same frames always give the same bytes.
"""
from __future__ import annotations

import fractions
import os

import av
import numpy as np


def write_mp4(path: str, video: np.ndarray, fps: int = 8, crf: int = 12, scale: int = 1):
  """Writes uint8 [T, H, W, 3] as H.264 mp4; `scale` enlarges small frames (nearest) for viewing."""
  video = np.asarray(video)
  if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
    raise ValueError(f"write_mp4 needs uint8 [T, H, W, 3], got {video.dtype} {video.shape}")
  if scale > 1:
    video = video.repeat(scale, axis=1).repeat(scale, axis=2)
  t, h, w, _ = video.shape
  # yuv420p needs even sizes: pad by edge replication.
  ph, pw = h % 2, w % 2
  if ph or pw:
    video = np.pad(video, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
  tmp = path + ".partial"
  with av.open(tmp, mode="w", format="mp4") as container:
    stream = container.add_stream("libx264", rate=fps)
    stream.width, stream.height = video.shape[2], video.shape[1]
    stream.pix_fmt = "yuv420p"
    stream.time_base = fractions.Fraction(1, fps)
    stream.codec_context.thread_count = 1
    stream.options = {"crf": str(crf), "preset": "medium", "threads": "1"}
    for i, frame in enumerate(video):
      f = av.VideoFrame.from_ndarray(frame, format="rgb24")
      f.pts = i
      for packet in stream.encode(f):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)
  os.replace(tmp, path)  # never leave a half-written file under the final name


def read_video(path: str) -> tuple[np.ndarray, float]:
  """Returns (uint8 [T, H, W, 3], fps). Raises ValueError naming the file if it can't be decoded."""
  if not os.path.exists(path):
    raise ValueError(f"video file not found: {path}")
  try:
    with av.open(path) as container:
      stream = container.streams.video[0]
      fps = float(stream.average_rate or stream.guessed_rate or 0) or 0.0
      frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
  except (av.FFmpegError, IndexError) as e:
    raise ValueError(f"cannot decode video {path}: {e}") from e
  if not frames:
    raise ValueError(f"video {path} has no frames")
  return np.stack(frames), fps
