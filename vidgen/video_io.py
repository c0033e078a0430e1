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
  with Mp4Writer(path, fps=fps, crf=crf, scale=scale) as writer:
    writer.write(video)


class Mp4Writer:
  """Streams uint8 frames into an H.264 mp4, chunk by chunk, so a long video never sits in memory. The file
  appears under `path` only when the writer closes without an error (until then it is `path.partial`)."""

  def __init__(self, path: str, fps: int = 8, crf: int = 12, scale: int = 1):
    self.path, self.fps, self.crf, self.scale = path, fps, crf, scale
    self.frames = 0
    self._container = self._stream = None

  def __enter__(self):
    return self

  def write(self, video: np.ndarray) -> None:
    video = np.asarray(video)
    if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
      raise ValueError(f"write_mp4 needs uint8 [T, H, W, 3], got {video.dtype} {video.shape}")
    if self.scale > 1:
      video = video.repeat(self.scale, axis=1).repeat(self.scale, axis=2)
    # yuv420p needs even sizes: pad by edge replication.
    ph, pw = video.shape[1] % 2, video.shape[2] % 2
    if ph or pw:
      video = np.pad(video, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
    if self._container is None:
      self._open(width=video.shape[2], height=video.shape[1])
    elif (video.shape[2], video.shape[1]) != (self._stream.width, self._stream.height):
      raise ValueError(f"frames of {video.shape[2]}x{video.shape[1]} after {self._stream.width}x"
                       f"{self._stream.height} ones: one mp4 holds one size")
    for frame in video:
      f = av.VideoFrame.from_ndarray(frame, format="rgb24")
      f.pts = self.frames
      self.frames += 1
      for packet in self._stream.encode(f):
        self._container.mux(packet)

  def _open(self, width: int, height: int):
    self._container = av.open(self.path + ".partial", mode="w", format="mp4")
    stream = self._container.add_stream("libx264", rate=self.fps)
    stream.width, stream.height = width, height
    stream.pix_fmt = "yuv420p"
    stream.time_base = fractions.Fraction(1, self.fps)
    stream.codec_context.thread_count = 1
    stream.options = {"crf": str(self.crf), "preset": "medium", "threads": "1"}
    self._stream = stream

  def __exit__(self, exc_type, exc, tb):
    if self._container is None:
      if exc_type is None:
        raise ValueError(f"no frames written to {self.path}")
      return
    try:
      if exc_type is None:
        for packet in self._stream.encode():
          self._container.mux(packet)
    finally:
      self._container.close()
    if exc_type is None:
      os.replace(self.path + ".partial", self.path)  # never leave a half-written file under the final name
    else:
      os.remove(self.path + ".partial")


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
