"""Small real media files for the media-folder tests, written with PyAV and PIL.

Content is deterministic: a red square moving left to right over a colour gradient, so every
frame differs and frame k can be recognised from the square's position (`square_x`).
"""
from __future__ import annotations

import json
import os

import av
import numpy as np
from PIL import Image

WIDE_CAPTION = "a red square moving right"


def square_x(k: int, num_frames: int, width: int, side: int) -> int:
  """Left edge of the square in frame k: from 0 to width - side over the video."""
  return round(k * (width - side) / max(1, num_frames - 1))


def frames(num_frames: int, height: int, width: int) -> np.ndarray:
  """uint8 [T, H, W, 3]: gradient background (red grows rightwards, blue downwards) with a red
  square moving right through the middle."""
  y, x = np.mgrid[0:height, 0:width]
  background = np.stack([x * 160 // max(1, width - 1), np.full_like(x, 96), y * 255 // max(1, height - 1)], -1)
  side = max(4, min(height, width) // 4)
  out = np.repeat(background[None].astype(np.uint8), num_frames, axis=0)
  top = height // 2 - side // 2
  for k in range(num_frames):
    left = square_x(k, num_frames, width, side)
    out[k, top:top + side, left:left + side] = (255, 0, 0)
  return out


def write_video(path: str, video: np.ndarray, fps: int, codec: str, container_format: str,
                pix_fmt: str = "yuv420p", options: dict | None = None, gop: int | None = None,
                rotation: int | None = None, container_options: dict | None = None):
  with av.open(path, mode="w", format=container_format, options=container_options or {}) as container:
    stream = container.add_stream(codec, rate=fps)
    stream.width, stream.height = video.shape[2], video.shape[1]
    stream.pix_fmt = pix_fmt
    stream.codec_context.thread_count = 1
    if gop:
      stream.codec_context.gop_size = gop
    if options:
      stream.options = options
    if rotation is not None:
      stream.set_display_rotation(rotation)
    for frame in video:
      for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


def write_h264(path: str, video: np.ndarray, fps: int, **kwargs):
  # Near-lossless so tests can compare decoded frames against the source; a keyframe every 6
  # frames so decode_clip's seek really lands mid-video.
  write_video(path, video, fps, "libx264", "mp4", gop=6,
              options={"crf": "1", "preset": "ultrafast", "threads": "1", "bf": "0"}, **kwargs)


def write_text(path: str, data: str | bytes):
  with open(path, "wb") as f:
    f.write(data.encode("utf-8") if isinstance(data, str) else data)


def patch_unknown_codec(src: str, dst: str):
  """A copy of an mpeg4 .mov that FFmpeg cannot decode: the sample entry's fourcc 'mp4v' becomes
  'xyz1' and its 'esds' box (from which the mov demuxer would still infer mpeg4) 'xsds'."""
  with open(src, "rb") as f:
    data = f.read()
  assert data.count(b"mp4v") == 1 and data.count(b"esds") == 1, "unexpected mov layout"
  write_text(dst, data.replace(b"mp4v", b"xyz1").replace(b"esds", b"xsds"))


def write_truncated_faststart(path: str):
  """An mp4 with its index up front (faststart), cut to half its bytes: it opens and its first
  frame decodes, but the second half of the frames is gone."""
  write_h264(path + ".full", frames(24, 36, 64), 24, container_options={"movflags": "+faststart"})
  with open(path + ".full", "rb") as f:
    data = f.read()
  os.remove(path + ".full")
  write_text(path, data[:len(data) // 2])


def write_media_folder(root: str) -> dict:
  """Writes the test folder; returns {"good": {relpath: expected (width, height, fps, num_frames,
  caption)}, "bad": {relpath: expected reason substring}, "manifest": path, "bad_lines":
  {"captions.jsonl:N": reason substring}}."""
  os.makedirs(os.path.join(root, "sub"), exist_ok=True)

  def join(rel):
    return os.path.join(root, *rel.split("/"))

  good, bad = {}, {}

  write_h264(join("wide.mp4"), frames(24, 36, 64), 24)
  write_text(join("wide.txt"), WIDE_CAPTION + "\n")
  good["wide.mp4"] = (64, 36, 24.0, 24, WIDE_CAPTION)

  write_video(join("tall.webm"), frames(30, 64, 36), 30, "libvpx-vp9", "webm",
              options={"deadline": "realtime", "cpu-used": "8", "threads": "1", "crf": "10", "b": "0"})
  write_text(join("tall.txt"), "a red square in a tall frame")
  good["tall.webm"] = (36, 64, 30.0, 30, "a red square in a tall frame")

  write_video(join("square.mov"), frames(12, 48, 48), 12, "mpeg4", "mov", options={"qscale": "2"})
  good["square.mov"] = (48, 48, 12.0, 12, "a square clip from the manifest")

  write_video(join("anim.gif"), frames(10, 40, 40), 10, "gif", "gif", pix_fmt="rgb8")
  good["anim.gif"] = (40, 40, 10.0, 10, "an animated gif")

  rgba = np.zeros((30, 50, 4), np.uint8)
  rgba[..., 0], rgba[..., 3] = 200, 255
  rgba[:, :10, 3] = 0  # a transparent left edge
  Image.fromarray(rgba, "RGBA").save(join("still.png"))
  write_text(join("still.txt"), "a red still")
  good["still.png"] = (50, 30, 0.0, 1, "a red still")

  Image.fromarray(frames(1, 50, 30)[0]).save(join("photo.jpg"), quality=90)
  write_text(join("photo.txt"), "a tall photo")
  good["photo.jpg"] = (30, 50, 0.0, 1, "a tall photo")

  write_h264(join("sub/nested.mp4"), frames(8, 36, 64), 8)
  write_text(join("sub/nested.txt"), "a nested clip")
  good["sub/nested.mp4"] = (64, 36, 8.0, 8, "a nested clip")

  # Stored 64x36 with a 90-degree display rotation, as phones do: it plays as 36x64.
  write_h264(join("rotated.mp4"), frames(8, 36, 64), 8, rotation=90)
  write_text(join("rotated.txt"), "a rotated phone clip")
  good["rotated.mp4"] = (36, 64, 8.0, 8, "a rotated phone clip")

  write_text(join("corrupt.mp4"), np.random.default_rng(0).bytes(4096))
  write_text(join("corrupt.txt"), "random bytes")
  bad["corrupt.mp4"] = "cannot open"
  write_text(join("empty.mp4"), b"")
  write_text(join("empty.txt"), "nothing")
  bad["empty.mp4"] = "empty file (0 bytes)"
  write_h264(join("nocaption.mp4"), frames(4, 36, 64), 8)
  bad["nocaption.mp4"] = "missing caption"
  write_h264(join("latin1.mp4"), frames(4, 36, 64), 8)
  write_text(join("latin1.txt"), b"caf\xe9 au lait")
  bad["latin1.mp4"] = "caption is not UTF-8"
  write_h264(join("blank.mp4"), frames(4, 36, 64), 8)
  write_text(join("blank.txt"), "  \n")
  bad["blank.mp4"] = "empty caption"
  patch_unknown_codec(join("square.mov"), join("unsupported.mov"))
  write_text(join("unsupported.txt"), "a clip no decoder reads")
  bad["unsupported.mov"] = "unsupported codec"
  # Cut in half without faststart: the index ('moov') is at the end, so the file does not open.
  with open(join("wide.mp4"), "rb") as f:
    data = f.read()
  write_text(join("truncated.mp4"), data[:len(data) // 2])
  write_text(join("truncated.txt"), "half a file")
  bad["truncated.mp4"] = "cannot open"

  # Ignored silently: not media.
  write_text(join("notes.json"), "{}")
  write_text(join("README.md"), "# my clips")

  manifest = join("captions.jsonl")
  write_text(manifest, "\n".join([
      json.dumps({"path": "square.mov", "caption": good["square.mov"][4]}),
      json.dumps({"file": os.path.abspath(join("anim.gif")), "text": good["anim.gif"][4]}),
      '{"path": "wide.mp4", "caption": "broken',  # not valid JSON
      json.dumps({"video": "wide.mp4"}),  # no caption
      json.dumps({"path": "missing.mp4", "caption": "gone"}),
  ]) + "\n")
  bad["missing.mp4"] = "not found"
  bad_lines = {"captions.jsonl:3": "not valid JSON", "captions.jsonl:4": "no caption"}
  return {"good": good, "bad": bad, "manifest": manifest, "bad_lines": bad_lines}
