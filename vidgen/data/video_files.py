"""Users' own media folders: captions (manifest or sidecar .txt), probing, and clip decoding.

Everything that can go wrong with a user's file is found by `scan_folder` up front (it decodes the
first frame of every file), so a bad file is reported once with a short reason instead of failing
a training run hours in. `decode_clip` then reads fixed-length clips at a chosen frame rate.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import threading
from typing import Iterable, Iterator

import av
from av.video.reformatter import VideoReformatter
import numpy as np
from PIL import Image
from PIL import ImageOps

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mov", ".gif", ".mkv", ".avi")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS + IMAGE_EXTENSIONS
MANIFEST_EXTENSIONS = (".jsonl", ".csv")
PATH_KEYS = ("path", "file", "video", "image")
CAPTION_KEYS = ("caption", "text", "prompt")

# Two frames whose distances to a target differ by less than this are a tie, which goes to the
# earlier frame (the one on screen at that time: upsampling 12 -> 24 fps gives 0,0,1,1,...).
# Containers round timestamps (webm to 1 ms), and a tie must not flip on that rounding.
_TIE_SECONDS = 1.5e-3


class MediaError(ValueError):
  """A file that cannot be used; str(e) is the reason, short and specific (prefixed by the path
  when one is given, as decode_clip does; `reason` is always the bare reason)."""

  def __init__(self, reason: str, path: str | None = None):
    super().__init__(f"{path}: {reason}" if path else reason)
    self.reason = reason
    self.path = path


@dataclasses.dataclass(frozen=True)
class MediaInfo:
  path: str  # relative to the folder root, '/' separators
  caption: str
  width: int
  height: int
  fps: float  # 0.0 for images
  num_frames: int  # 1 for images

  @property
  def is_image(self) -> bool:
    return _is_image(self.path)

  @property
  def duration(self) -> float:
    """Seconds (num_frames / fps: each frame lasts 1/fps); 0.0 for images."""
    return self.num_frames / self.fps if self.fps > 0 else 0.0


def _is_image(path: str) -> bool:
  return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def _is_media(path: str) -> bool:
  return os.path.splitext(path)[1].lower() in MEDIA_EXTENSIONS


def _ffmpeg_message(e: Exception) -> str:
  # PyAV's str() is "[Errno N] message: 'filename'"; the message alone is what a user can act on.
  return getattr(e, "strerror", None) or str(e) or type(e).__name__


# ---------------------------------------------------------------------------------------------
# Captions


def _relative_to_root(root: str, path: str) -> str | None:
  """'/'-separated path relative to root, or None when it points outside root."""
  full = path if os.path.isabs(path) else os.path.join(root, path)
  rel = os.path.relpath(os.path.normpath(full), os.path.normpath(root))
  if rel == os.curdir or rel == os.pardir or rel.startswith(os.pardir + os.sep):
    return None
  return rel.replace(os.sep, "/")


def _pick(entry: dict, keys: tuple[str, ...]):
  lowered = {str(k).strip().lower(): v for k, v in entry.items()}
  for k in keys:
    if k in lowered and lowered[k] is not None:
      return lowered[k]
  return None


def _manifest_rows(path: str, ext: str) -> Iterator[tuple[int, dict | str]]:
  """(line number, entry dict or the reason the line is unusable)."""
  with open(path, "rb") as f:
    raw = f.read()
  if ext == ".jsonl":
    for lineno, line in enumerate(raw.splitlines(), start=1):
      try:
        text = line.decode("utf-8-sig" if lineno == 1 else "utf-8").strip()
      except UnicodeDecodeError:
        yield lineno, "line is not UTF-8"
        continue
      if not text:
        continue  # blank lines are fine
      try:
        entry = json.loads(text)
      except json.JSONDecodeError as e:
        yield lineno, f"not valid JSON: {e.msg} (column {e.colno})"
        continue
      yield lineno, entry if isinstance(entry, dict) else f"not a JSON object ({type(entry).__name__})"
    return
  try:
    text = raw.decode("utf-8-sig")
  except UnicodeDecodeError as e:
    raise ValueError(f"manifest {path} is not UTF-8 (byte {e.start}); save it as UTF-8") from e
  reader = csv.DictReader(io.StringIO(text, newline=""))
  header = [str(h).strip().lower() for h in (reader.fieldnames or [])]
  if not any(k in header for k in PATH_KEYS) or not any(k in header for k in CAPTION_KEYS):
    raise ValueError(f"manifest {path}: header {header} needs a path column (one of {PATH_KEYS}) "
                     f"and a caption column (one of {CAPTION_KEYS})")
  for row in reader:
    if None in row:  # more cells than header columns
      yield reader.line_num, f"{len(row) - 1 + len(row[None])} cells, header has {len(header)}"
      continue
    yield reader.line_num, row


def read_captions(root: str, manifest: str | None = None) -> tuple[dict[str, str], dict[str, str]]:
  """(captions by '/'-separated path relative to root, skipped manifest lines {"<manifest>:<lineno>": reason}).

  manifest: .jsonl (one object per line) or .csv (header row); the path key/column is one of
  PATH_KEYS, the caption one of CAPTION_KEYS. A manifest path that does not exist as given is also
  looked up under root. Paths inside it are relative to root (absolute ones inside root work too).
  Unusable lines are skipped and reported; the first entry for a path wins. Without a manifest the
  dict is empty: sidecar .txt captions are read per file by scan_folder.
  """
  if manifest is None:
    return {}, {}
  if not os.path.isfile(manifest) and not os.path.isabs(manifest) and os.path.isfile(os.path.join(root, manifest)):
    manifest = os.path.join(root, manifest)
  if not os.path.isfile(manifest):
    raise ValueError(f"caption manifest not found: {manifest}")
  ext = os.path.splitext(manifest)[1].lower()
  if ext not in MANIFEST_EXTENSIONS:
    raise ValueError(f"caption manifest {manifest}: extension {ext!r} not allowed; allowed {MANIFEST_EXTENSIONS}")
  name = _relative_to_root(root, manifest) if os.path.isdir(root) else None
  name = name or manifest
  captions, skipped, first_line = {}, {}, {}
  for lineno, entry in _manifest_rows(manifest, ext):
    key = f"{name}:{lineno}"
    if isinstance(entry, str):
      skipped[key] = entry
      continue
    path, caption = _pick(entry, PATH_KEYS), _pick(entry, CAPTION_KEYS)
    if not isinstance(path, str) or not path.strip():
      skipped[key] = f"no path (a string under one of {PATH_KEYS})"
      continue
    if not isinstance(caption, str):
      skipped[key] = f"no caption (a string under one of {CAPTION_KEYS})"
      continue
    rel = _relative_to_root(root, path.strip())
    if rel is None:
      skipped[key] = f"path {path!r} is outside {root}"
    elif rel in captions:
      skipped[key] = f"{rel} already captioned on line {first_line[rel]}"
    else:
      # An empty caption is kept, so scan_folder reports 'empty caption' for the file itself.
      captions[rel], first_line[rel] = caption.strip(), lineno
  if not captions:
    raise ValueError(f"caption manifest {manifest} has no usable entries (each needs a path key among "
                     f"{PATH_KEYS} and a caption key among {CAPTION_KEYS})"
                     + (f"; first problem: line {next(iter(skipped))}: {next(iter(skipped.values()))}"
                        if skipped else ""))
  return captions, skipped


def _sidecar_caption(full_path: str) -> str:
  """The caption in 'clip.txt' next to 'clip.mp4'; MediaError if missing, not UTF-8 or empty."""
  sidecar = os.path.splitext(full_path)[0] + ".txt"
  if not os.path.isfile(sidecar):
    raise MediaError("missing caption")
  with open(sidecar, "rb") as f:
    raw = f.read()
  try:
    return raw.decode("utf-8-sig").strip()
  except UnicodeDecodeError:
    raise MediaError("caption is not UTF-8") from None


# ---------------------------------------------------------------------------------------------
# Probing


def _open_image(path: str) -> Image.Image:
  """The image as displayed (EXIF orientation applied: phone photos are stored sideways), in RGB.
  Transparency is flattened onto white (_to_rgb)."""
  try:
    with Image.open(path) as im:
      im.load()
      return _to_rgb(ImageOps.exif_transpose(im))
  except Image.UnidentifiedImageError:
    raise MediaError("cannot open: not an image format PIL reads") from None
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise MediaError(f"corrupt: {e}") from None


def _to_rgb(im: Image.Image) -> Image.Image:
  """RGB; transparency flattened onto white: transparent pixels hold arbitrary colours, and
  cut-outs and clip-art are drawn for a white page."""
  if im.mode == "I" or im.mode.startswith("I;16"):
    # 16-bit greyscale (PNG): PIL's convert would clip everything above 255 to white.
    im = Image.fromarray((np.asarray(im, dtype=np.int64).clip(0, 65535) >> 8).astype(np.uint8))
  if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
    im = im.convert("RGBA")
    background = Image.new("RGBA", im.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, im).convert("RGB")
  return im if im.mode == "RGB" else im.convert("RGB")


def _open_video(path: str):
  """(container, video stream, source fps); the caller closes the container."""
  try:
    container = av.open(path)
  except av.FFmpegError as e:
    raise MediaError(f"cannot open: {_ffmpeg_message(e)}") from None
  try:
    if not container.streams.video:
      raise MediaError("no video stream")
    stream = container.streams.video[0]
    if stream.codec_context is None:
      # FFmpeg has no decoder for it (an unknown fourcc, or a codec left out of this build).
      raise MediaError("unsupported codec (no decoder for it in the bundled FFmpeg)")
    # One decoder thread: the loader decodes a clip per thread already, and FFmpeg's default (one
    # thread per core for every open file) costs 20% of clips/s on 2 cores.
    stream.codec_context.thread_count = 1
    fps = float(stream.average_rate or stream.guessed_rate or 0)
    if fps <= 0:
      raise MediaError("unknown frame rate")
    return container, stream, fps
  except BaseException:
    container.close()
    raise


# One reformatter per loader thread: it keeps FFmpeg's scaler context between frames, where
# frame.to_image() builds a new one per frame (0.13 ms against 1.4 ms for a 128x72 frame).
_reformatters = threading.local()


def _reformat(frame: av.VideoFrame, **kwargs) -> np.ndarray:
  if not hasattr(_reformatters, "rgb"):
    _reformatters.rgb = VideoReformatter()
  return _reformatters.rgb.reformat(frame, format="rgb24", **kwargs).to_ndarray()


def _quarter_turns(frame: av.VideoFrame) -> int:
  """Counter-clockwise quarter turns of the container's display matrix (phone videos)."""
  try:
    return round((frame.rotation or 0) / 90) % 4
  except (AttributeError, ValueError):
    return 0


def _frame_image(frame: av.VideoFrame) -> Image.Image:
  """RGB image as displayed: the rotation applied. FFmpeg's rgb24 conversion drops alpha (gif, some webm)."""
  return Image.fromarray(np.ascontiguousarray(np.rot90(_reformat(frame), _quarter_turns(frame))))


def _frame_array(frame: av.VideoFrame, size: tuple[int, int]) -> np.ndarray:
  """uint8 [H, W, 3], (H, W) = size: the frame as displayed, scaled by FFmpeg to cover size and
  center-cropped, with the filters of resize_center_crop (area average down, bicubic up). Scaling
  in FFmpeg, straight from YUV, costs a third of converting, then resizing in PIL, and holds no GIL;
  the crop is whole pixels, so it may sit up to half a pixel off the exact center that images get."""
  height, width = size
  turns = _quarter_turns(frame)
  src_w, src_h = (frame.height, frame.width) if turns % 2 else (frame.width, frame.height)
  scale = max(height / src_h, width / src_w)
  out_w, out_h = max(width, round(src_w * scale)), max(height, round(src_h * scale))
  if (out_w, out_h) == (src_w, src_h):
    array = _reformat(frame)
  else:
    frame_w, frame_h = (out_h, out_w) if turns % 2 else (out_w, out_h)
    array = _reformat(frame, width=frame_w, height=frame_h, interpolation="AREA" if scale < 1 else "BICUBIC")
  array = np.rot90(array, turns)
  top, left = (out_h - height) // 2, (out_w - width) // 2
  return np.ascontiguousarray(array[top:top + height, left:left + width])


def probe(path: str) -> tuple[int, int, float, int]:
  """(width, height, fps, num_frames) of a video or image, as displayed (rotation applied).

  Decodes the first frame, so unsupported codecs and corrupt data fail here, not in training.
  num_frames is the container's count, or counted from demuxed packets when it has none (webm):
  no full decode. Raises MediaError with a short reason.
  """
  try:
    size = os.path.getsize(path)
  except OSError as e:
    raise MediaError(f"cannot open: {e.strerror or e}") from None
  if size == 0:
    raise MediaError("empty file (0 bytes)")
  if _is_image(path):
    im = _open_image(path)
    return im.width, im.height, 0.0, 1
  container, stream, fps = _open_video(path)
  with container:
    count_packets = not stream.frames or stream.frames <= 0
    first, packets = None, 0
    try:
      for packet in container.demux(stream):
        if packet.size:
          packets += 1
        if first is None:
          frames = packet.decode()  # the final empty packet flushes the decoder
          first = frames[0] if frames else None
        if first is not None and not count_packets:
          break
    except av.DecoderNotFoundError:
      raise MediaError(f"unsupported codec {stream.codec_context.name}") from None
    except av.FFmpegError as e:
      raise MediaError(f"corrupt: {_ffmpeg_message(e)}") from None
    if first is None:
      raise MediaError("no decodable frames")
    im = _frame_image(first)
    num_frames = packets if count_packets else stream.frames
  return im.width, im.height, fps, int(num_frames)


def scan_folder(root: str, manifest: str | None = None,
                progress: bool = True) -> tuple[list[MediaInfo], dict[str, str]]:
  """Every video/image under root (recursive, sorted by relative path), probed, with its caption.

  The caption is the manifest's entry, else the sidecar text file with the same stem ('clip.mp4' ->
  'clip.txt', UTF-8). Returns (usable media, skipped {relative path: reason}); skipped also holds
  unusable manifest lines ("<manifest>:<lineno>") and manifest entries with no media file.
  Other files (sidecars, the manifest, ...) and hidden ones ('.DS_Store', macOS '._clip.mp4'
  copies) are ignored.
  """
  from tqdm import tqdm  # only here: the rest of the module does not need it

  if not os.path.exists(root):
    raise ValueError(f"media folder not found: {root}")
  if not os.path.isdir(root):
    raise ValueError(f"media folder {root} is not a folder")
  root = os.path.abspath(root)  # relative paths in the index are relative to it, however it was given
  captions, skipped = read_captions(root, manifest)
  files = []
  for folder, dirs, names in os.walk(root):
    dirs[:] = [d for d in dirs if not d.startswith(".")]
    for name in names:
      if not name.startswith(".") and _is_media(name):
        files.append(_relative_to_root(root, os.path.join(folder, name)))
  files.sort()
  if not files:
    raise ValueError(f"no media files under {root}; allowed extensions: {', '.join(MEDIA_EXTENSIONS)}")
  found = set(files)
  for rel in captions:
    if rel not in found:
      skipped[rel] = ("in the manifest but not found under the folder" if _is_media(rel) else
                      f"in the manifest but not a media file (allowed: {', '.join(MEDIA_EXTENSIONS)})")
  media = []
  for rel in tqdm(files, desc=f"probing {root}", unit="file", disable=not progress):
    full = os.path.join(root, *rel.split("/"))
    try:
      caption = captions[rel] if rel in captions else _sidecar_caption(full)
      if not caption:
        raise MediaError("empty caption")
      width, height, fps, num_frames = probe(full)
    except MediaError as e:
      skipped[rel] = e.reason
      continue
    media.append(MediaInfo(rel, caption, width, height, fps, num_frames))
  return media, skipped


# ---------------------------------------------------------------------------------------------
# Clips


def resize_center_crop(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """uint8 [h, w, 3] -> [H, W, 3] = size: scaled to just cover (H, W), then center-cropped."""
  frame = np.asarray(frame)
  if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
    raise ValueError(f"resize_center_crop needs uint8 [h, w, 3], got {frame.dtype} {frame.shape}")
  return np.asarray(_resize_center_crop_image(Image.fromarray(frame), size))


def _resize_center_crop_image(im: Image.Image, size: tuple[int, int]) -> Image.Image:
  height, width = size
  if height <= 0 or width <= 0:
    raise ValueError(f"size must be positive (H, W), got {size}")
  if im.size == (width, height):
    return im
  scale = max(height / im.height, width / im.width)  # the smaller scale that covers (H, W)
  crop_w, crop_h = width / scale, height / scale  # the kept source region, in source pixels
  left, top = (im.width - crop_w) / 2, (im.height - crop_h) / 2
  # Upscaling: bicubic. Downscaling: BOX, an exact area average (like cv2.INTER_AREA): no aliasing,
  # no ringing around the hard edges common in video (letterbox bars, burned-in text), and the
  # cheapest filter for the large reductions typical here (1080p to a few hundred pixels).
  resample = Image.Resampling.BICUBIC if scale > 1 else Image.Resampling.BOX
  # Resizing only the kept region (sub-pixel box) gives exactly (H, W) with no rounding drift.
  return im.resize((width, height), resample, box=(left, top, left + crop_w, top + crop_h))


def clip_times(num_frames: int, fps: float, duration: float, start: float = 0.0) -> np.ndarray:
  """Target times (seconds from the video's start) of a clip of num_frames at fps, starting at
  `start` (in [0, 1]) of the free slack max(0, duration - num_frames / fps)."""
  if not 0.0 <= start <= 1.0:
    raise ValueError(f"start must be a fraction in [0, 1], got {start}")
  slack = max(0.0, duration - num_frames / fps)
  return start * slack + np.arange(num_frames) / fps


def _check_long_enough(num_frames: int, fps: float, src_fps: float, src_num_frames: int):
  duration, needed = src_num_frames / src_fps, num_frames / fps
  if duration < needed - 0.5 / fps:  # half a target frame of tolerance
    raise MediaError(f"too short: needs {num_frames} frames at {fps:g} fps ({needed:.3f} s), "
                     f"has {duration:.3f} s")


def _identity(payload):
  return payload


def _select_nearest(frames: Iterable[tuple[float, object]], targets: np.ndarray, frame_seconds: float,
                    convert=_identity) -> list:
  """For each target time, convert(payload) of the frame whose time is nearest (ties, within
  _TIE_SECONDS, go to the earlier frame). Stops reading `frames` once every target is settled, so
  only the clip is decoded. The last frame lasts frame_seconds; a target beyond that is too short.
  A frame picked for several targets in a row (a lower source rate) is converted once."""
  chosen, prev, last = [], None, (None, None)

  def pick(payload):
    nonlocal last
    if last[0] is not payload:
      last = (payload, convert(payload))
    chosen.append(last[1])

  for t, payload in frames:
    while len(chosen) < len(targets) and t >= targets[len(chosen)] - _TIE_SECONDS / 2:
      target = targets[len(chosen)]
      pick(prev[1] if prev is not None and target - prev[0] <= t - target + _TIE_SECONDS else payload)
    if len(chosen) == len(targets):
      return chosen
    prev = (t, payload)
  while prev is not None and len(chosen) < len(targets) and targets[len(chosen)] < prev[0] + frame_seconds:
    pick(prev[1])
  if len(chosen) < len(targets):
    # The header promised enough frames (checked before decoding): the data ends early.
    end = f"frames end at {prev[0] + frame_seconds:.3f} s" if prev is not None else "no frames"
    raise MediaError(f"truncated: {end}, the clip needs {targets[len(chosen)]:.3f} s")
  return chosen


def _select_consecutive(frames: Iterable[tuple[float, object]], first_time: float, num_frames: int,
                        convert=_identity) -> list:
  """convert(payload) of num_frames frames in decode order, from the first at or after first_time."""
  chosen = []
  for t, payload in frames:
    if chosen or t >= first_time - _TIE_SECONDS:
      chosen.append(convert(payload))
      if len(chosen) == num_frames:
        return chosen
  raise MediaError(f"truncated: {len(chosen)} frames decoded from {first_time:.3f} s, {num_frames} needed")


def source_frame_indices(num_frames: int, fps: float, src_fps: float, src_num_frames: int,
                         start: float = 0.0) -> np.ndarray:
  """Indices of the source frames (constant frame rate src_fps) that decode_clip picks: for target
  frame k the one nearest to start_time + k / fps. fps <= 0 keeps the source rate (consecutive
  frames). Raises MediaError('too short: ...') like decode_clip."""
  if fps <= 0:
    if src_num_frames < num_frames:
      raise MediaError(f"too short: needs {num_frames} frames, has {src_num_frames}")
    first = int(round(start * (src_num_frames - num_frames)))
    return np.arange(first, first + num_frames)
  _check_long_enough(num_frames, fps, src_fps, src_num_frames)
  targets = clip_times(num_frames, fps, src_num_frames / src_fps, start)
  times = ((i / src_fps, i) for i in range(src_num_frames))
  return np.array(_select_nearest(times, targets, 1.0 / src_fps), dtype=np.int64)


class _SeekFailed(Exception):
  """The seek failed, found nothing, landed after the clip's start (a bad index) or gave frames
  without timestamps: decode from the start instead."""


def _decoded_frames(container, stream, src_fps: float, seek_to: float) -> Iterator[tuple[float, av.VideoFrame]]:
  """(seconds from the stream's start, frame), decoding from the keyframe at or before seek_to."""
  origin = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
  seeked = seek_to > 0
  if seeked:
    try:
      container.seek(int((seek_to + origin) / stream.time_base), stream=stream, backward=True, any_frame=False)
    except av.FFmpegError:
      raise _SeekFailed() from None  # some demuxers cannot seek: decode from the start
  for i, frame in enumerate(container.decode(stream)):
    if frame.time is None:
      if seeked:  # the position after a seek is unknown without timestamps
        raise _SeekFailed()
      yield i / src_fps, frame
    else:
      yield frame.time - origin, frame


def decode_clip(path: str, num_frames: int, fps: float, size: tuple[int, int], start: float = 0.0) -> np.ndarray:
  """uint8 [num_frames, H, W, 3], (H, W) = size: num_frames at `fps` (frame k is the source frame
  nearest to start_time + k / fps; fps <= 0 keeps source frames as they are), starting at `start`
  in [0, 1] of the free slack (pass a seeded random number for a random clip). Decodes only from
  the keyframe before the clip to its last frame. Resized to cover (H, W) and center-cropped.
  An image gives 1 frame. Raises MediaError naming the file."""
  if num_frames < 1:
    raise ValueError(f"num_frames must be >= 1, got {num_frames}")
  if not 0.0 <= start <= 1.0:
    raise ValueError(f"start must be a fraction in [0, 1], got {start}")
  try:
    if _is_image(path):
      if num_frames != 1:
        raise MediaError(f"an image gives 1 frame, {num_frames} asked")
      if not os.path.isfile(path):
        raise MediaError("cannot open: file not found")
      return np.asarray(_resize_center_crop_image(_open_image(path), size))[None]
    images = _decode_video_clip(path, num_frames, fps, size, start)
  except MediaError as e:
    raise MediaError(e.reason, path) from None
  return np.stack(images)


def _open_counted(path: str):
  """(container, stream, source fps, frame count): the container's count, else demuxed packets
  (reopened after counting: seeking back to 0 is not reliable in every demuxer)."""
  container, stream, src_fps = _open_video(path)
  if stream.frames and stream.frames > 0:
    return container, stream, src_fps, stream.frames
  with container:
    try:
      count = sum(1 for p in container.demux(stream) if p.size)
    except av.FFmpegError as e:
      raise MediaError(f"corrupt: {_ffmpeg_message(e)}") from None
  container, stream, src_fps = _open_video(path)
  return container, stream, src_fps, count


def _decode_video_clip(path, num_frames, fps, size, start) -> list[np.ndarray]:
  if not os.path.isfile(path):
    raise MediaError("cannot open: file not found")

  def convert(frame):
    return _frame_array(frame, size)

  for seek in (True, False):
    container, stream, src_fps, src_num_frames = _open_counted(path)
    with container:
      if fps > 0:
        _check_long_enough(num_frames, fps, src_fps, src_num_frames)
        targets = clip_times(num_frames, fps, src_num_frames / src_fps, start)
      else:
        if src_num_frames < num_frames:
          raise MediaError(f"too short: needs {num_frames} frames, has {src_num_frames}")
        targets = np.array([round(start * (src_num_frames - num_frames)) / src_fps])
      try:
        frames = _decoded_frames(container, stream, src_fps, targets[0] if seek else 0.0)
        if seek:
          frames = _check_seek(frames, targets[0])
        if fps > 0:
          return _select_nearest(frames, targets, 1.0 / src_fps, convert)
        return _select_consecutive(frames, targets[0], num_frames, convert)
      except _SeekFailed:
        continue  # decode from the very start instead
      except av.FFmpegError as e:
        raise MediaError(f"corrupt: {_ffmpeg_message(e)}") from None
  raise AssertionError("unreachable: decoding without a seek does not retry")


def _check_seek(frames: Iterator, first_target: float) -> Iterator:
  """Passes frames through; raises _SeekFailed if there are none or the first one is already past
  the clip's start."""
  any_frame = False
  for t, frame in frames:
    if not any_frame and t > first_target + _TIE_SECONDS:
      raise _SeekFailed()
    any_frame = True
    yield t, frame
  if not any_frame:
    raise _SeekFailed()
