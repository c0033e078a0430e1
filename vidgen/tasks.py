"""Generation tasks with one model: text-to-video, a single image, image-to-video, extending a video forward or
backward, interpolating between keyframes, connecting two videos, editing a video. A frame-conditioned DiT
(vidgen/diffusion/conditioning.py) reads known frames as an input; one without (Wan's T2V) is conditioned by
replacing the latent frames the known frames cover whole (Generator.sample_latents).

Given images and videos are resized to cover the generation size (config.data, or --size) and center-cropped,
the data pipeline's policy. A chunk is one clip of F = config.data.num_frames frames; known frames may sit at
any of them. Continuing a video conditions a chunk on `overlap` frames of its neighbour (default_overlap:
extend 1 + tc, frame 0 and one whole latent frame, 5 of 9; connect 1 + (F - 1) // 4 per end, 3 of 9), enough to
carry the motion's direction and speed across the seam.
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
from typing import Callable, Sequence

import numpy as np

from vidgen import generate as generate_lib
from vidgen import video_io
from vidgen.data import video_files
from vidgen.models import build


class TaskError(ValueError):
  """Bad task input (a missing file, a video too short, a strength out of range), in one line."""


def load_image(path: str, size: tuple[int, int]) -> np.ndarray:
  """uint8 [1, H, W, 3] of an image file, covering size (H, W) and center-cropped."""
  if not os.path.isfile(path):
    raise TaskError(f"image file not found: {path}")
  try:
    return video_files.decode_clip(path, 1, 0.0, size)
  except video_files.MediaError as e:
    raise TaskError(f"cannot read image {path}: {e.reason}") from None


def load_video(path: str, size: tuple[int, int]) -> np.ndarray:
  """uint8 [T, H, W, 3]: every frame of a video file, covering size (H, W) and center-cropped."""
  try:
    frames, _ = video_io.read_video(path)
  except ValueError as e:
    raise TaskError(str(e)) from None
  return np.stack([video_files.resize_center_crop(f, size) for f in frames])


def default_overlap(frames: int, tc: int, ends: int = 1) -> int:
  """Frames of a neighbour that condition a chunk of `frames` (VAE temporal compression tc).

  One end (extend): the first frame and one latent frame, 1 + tc, the shortest conditioning that is a whole
  causal latent prefix, so it is written back exactly; 3 of 9 frames (a partial latent frame) let shapes drift
  over 45 chunks where 5 of 9 kept them all (experiments/evaluate_tasks.py, see the README). Both ends
  (connect), or chunks too short for 1 + tc: 1 + (frames - 1) // 4.
  """
  if ends == 1 and 1 + tc < frames:
    return 1 + tc
  return 1 + (frames - 1) // 4


def check_overlap(overlap: int | None, frames: int, tc: int, ends: int = 1, whole_end: bool = False) -> int:
  """The overlap in frames (the default when None); `ends` chunk ends are conditioned and >= 1 frame is new.
  whole_end: the chunk's last frames are known to a DiT without frame conditioning, which is conditioned by
  replacing whole latent frames: they need at least the last latent frame's tc frames."""
  least = tc if whole_end else 1
  if overlap is None:
    overlap = max(default_overlap(frames, tc, ends), least)
  if overlap < least or ends * overlap >= frames:
    reason = (f"; at least {tc} (one whole latent frame at the chunk's end) for a DiT without frame conditioning"
              if whole_end else "")
    raise TaskError(f"--overlap={overlap} frames: allowed {least} to {(frames - 1) // ends} for chunks of {frames} "
                    f"frames{' with both ends conditioned' if ends > 1 else ''}{reason} (set --frames for longer "
                    "chunks)")
  return overlap


def known_frames(frames: int, times, keyframes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(uint8 [N, frames, H, W, 3], float32 mask [N, frames]) with keyframes [N, K, H, W, 3] at frame `times`."""
  n, _, h, w, c = np.shape(keyframes)
  video = np.zeros((n, frames, h, w, c), np.uint8)
  mask = np.zeros((n, frames), np.float32)
  video[:, list(times)], mask[:, list(times)] = keyframes, 1.0
  return video, mask


def _per_prompt(array: np.ndarray, n: int, ndim: int, what: str) -> np.ndarray:
  """[1 or n, ...]: `array` of ndim axes (one shared by every prompt) or with a leading axis of one per prompt."""
  array = np.asarray(array)
  if array.ndim == ndim:
    array = array[None]
  if array.ndim != ndim + 1 or len(array) not in (1, n):
    raise TaskError(f"{what} of shape {array.shape}: give one for each of the {n} prompts or one shared by all")
  return array


def _generate_known(generator, prompts: list[str], times, keyframes: np.ndarray, seed, **sampling) -> np.ndarray:
  """uint8 [N, F, H, W, 3]: a chunk per prompt, its frames at `times` known (keyframes [N or 1, K, H, W, 3])."""
  keyframes = np.broadcast_to(keyframes, (len(prompts), *np.shape(keyframes)[1:]))
  frames, mask = known_frames(generator.config.data.num_frames, times, keyframes)
  return generator.generate(prompts, seed, frames=frames, frame_mask=mask, **sampling)


def image_to_video(generator, prompts: list[str], images: np.ndarray, seed: int | None = None,
                   **sampling) -> np.ndarray:
  """uint8 [N, F, H, W, 3]: each video starts with its image (images [N or 1, H, W, 3]); the prompt guides
  the motion."""
  images = _per_prompt(images, len(prompts), 3, "images")
  return _generate_known(generator, prompts, [0], images[:, None], seed, **sampling)


def check_keyframe_times(times, frames: int, count: int | None = None) -> list[int]:
  """Keyframe times as ints: at least 2, distinct, each in [0, frames - 1], `count` of them when given."""
  try:
    times = [int(t) for t in times]
  except (TypeError, ValueError):
    raise TaskError(f"--at={','.join(map(str, times))}: keyframe times are frame indices (integers)") from None
  if len(times) < 2:
    raise TaskError(f"--at={','.join(map(str, times))}: interpolating needs at least 2 keyframe times")
  if count is not None and count != len(times):
    raise TaskError(f"{count} keyframe images for {len(times)} times (--at): give one time per --image")
  outside = [t for t in times if not 0 <= t < frames]
  if outside:
    raise TaskError(f"keyframe time {outside[0]} is outside the clip: allowed 0 to {frames - 1} "
                    f"(a clip has {frames} frames; set --frames for a longer one)")
  if len(set(times)) != len(times):
    raise TaskError(f"--at={','.join(map(str, times))}: keyframe times must differ")
  if len(times) == frames:
    raise TaskError(f"--at: {len(times)} keyframes leave nothing to fill in a clip of {frames} frames")
  return times


def interpolate(generator, prompts: list[str], keyframes: np.ndarray, times, seed: int | None = None,
                **sampling) -> np.ndarray:
  """uint8 [N, F, H, W, 3]: the frames between keyframes ([K, H, W, 3], or [N, K, H, W, 3] one set per
  prompt) placed at frame indices `times`."""
  keyframes = _per_prompt(keyframes, len(prompts), 4, "keyframes")
  frames = generator.config.data.num_frames
  times = check_keyframe_times(times, frames, keyframes.shape[1])
  if not generator.frame_conditioning:
    times, keyframes = hold_keyframes(times, keyframes, frames, generator.temporal_compression)
  return _generate_known(generator, prompts, times, keyframes, seed, **sampling)


def hold_keyframes(times, keyframes: np.ndarray, frames: int, tc: int) -> tuple[list[int], np.ndarray]:
  """(times, keyframes [N, K', H, W, 3]) with each keyframe held over the frames of its latent frame (frame 0
  alone, then groups of tc; within a group each frame takes the nearest keyframe, the earlier on a tie). A DiT
  without frame conditioning is conditioned by replacing whole latent frames, so a keyframe becomes a still of
  up to tc frames."""
  group = lambda t: 0 if t == 0 else (t - 1) // tc + 1
  members = lambda g: [0] if g == 0 else list(range(tc * (g - 1) + 1, min(tc * g, frames - 1) + 1))
  held_times, sources = [], []
  for g in sorted({group(t) for t in times}):
    inside = [i for i, t in enumerate(times) if group(t) == g]
    for f in members(g):
      held_times.append(f)
      sources.append(min(inside, key=lambda i: (abs(times[i] - f), times[i])))
  return held_times, keyframes[:, sources]


def _check_frames(what: str, video: np.ndarray, needed: int):
  if len(video) < needed:
    raise TaskError(f"{what} has {len(video)} frames; the conditioning needs at least {needed}")


def _check_times_direction(times: int, direction: str):
  if direction not in ("forward", "backward"):
    raise TaskError(f"--direction={direction!r}: allowed forward, backward")
  if times < 1:
    raise TaskError(f"--times={times}: must be >= 1")


def extend(generator, prompt: str, video: np.ndarray, out_path: str, times: int = 1, direction: str = "forward",
           overlap: int | None = None, seed: int | None = None, fps: int = 8, scale: int = 1,
           progress: bool = True, **sampling) -> dict:
  """Continues `video` [T0, H, W, 3] by `times` chunks, forward or backward, each conditioned on the last
  (first) `overlap` frames of the video so far, into one mp4 at out_path. Memory stays that of one chunk: forward
  chunks stream into the file; backward ones, generated last-first, wait on disk as .npy until written in order.

  Forward, an overlap of whole latent frames (1 + tc j) makes a chunk's new latent frames continue the last ones
  of the chunk before, so they are decoded with its causal decoder cache: the seams are decoded like any
  latent-frame boundary of one long video (the causal decoder cannot run backward)."""
  _check_times_direction(times, direction)
  frames, tc = generator.config.data.num_frames, generator.temporal_compression
  overlap = check_overlap(overlap, frames, tc, whole_end=direction == "backward" and not generator.frame_conditioning)
  seed = generator.config.sample.seed if seed is None else seed
  _check_frames("the video to extend", video, overlap)
  new = frames - overlap
  # An overlap of whole latent frames: the new latent frames continue the chunk before, decoded with its cache.
  known_latents = 1 + (overlap - 1) // tc if (overlap - 1) % tc == 0 else None
  with video_io.Mp4Writer(out_path, fps=fps, scale=scale) as writer:
    if direction == "forward":
      writer.write(video)
      tail, cache = video[-overlap:], None
      for i in range(times):
        frames_known, mask = known_frames(frames, range(overlap), tail[None])
        z = generator.sample_latents([prompt], seed + i, frames=frames_known, frame_mask=mask, progress=progress,
                                     **sampling)
        if cache is not None and known_latents:
          fresh, cache = generator.decode_continued(z[:, known_latents:], cache)
        else:
          fresh, cache = generator.decode_continued(z)
          fresh = fresh[:, overlap:]
        writer.write(fresh[0])
        tail = np.concatenate([tail, fresh[0]])[-overlap:]
    else:
      with tempfile.TemporaryDirectory() as parts:
        context = video[:overlap]
        for i in range(times):
          clip = _generate_known(generator, [prompt], range(new, frames), context[None], seed + i,
                                 progress=progress, **sampling)[0]
          np.save(os.path.join(parts, f"{i}.npy"), clip[:new])
          context = clip[:overlap]
        for i in reversed(range(times)):
          writer.write(np.load(os.path.join(parts, f"{i}.npy")))
      writer.write(video)
  return {"file": out_path, "frames": len(video) + times * new, "chunks": times, "frames_per_chunk": new,
          "given_frames": len(video), "overlap": overlap}


def connect(generator, prompt: str, first: np.ndarray, second: np.ndarray, overlap: int | None = None,
            seed: int | None = None, **sampling) -> tuple[np.ndarray, int]:
  """(uint8 [T1 + n + T2, H, W, 3], n): `first`, a generated transition of n = F - 2 overlap frames, then
  `second`. The transition's chunk starts with the end of `first` and ends with the start of `second`."""
  frames = generator.config.data.num_frames
  overlap = check_overlap(overlap, frames, generator.temporal_compression, ends=2,
                          whole_end=not generator.frame_conditioning)
  _check_frames("the first video", first, overlap)
  _check_frames("the second video", second, overlap)
  times = [*range(overlap), *range(frames - overlap, frames)]
  keyframes = np.concatenate([first[-overlap:], second[:overlap]])[None]
  clip = _generate_known(generator, [prompt], times, keyframes, seed, **sampling)[0]
  transition = clip[overlap: frames - overlap]
  return np.concatenate([first, transition, second]), len(transition)


def edit(generator, prompts: list[str], videos: np.ndarray, strength: float, seed: int | None = None,
         **sampling) -> np.ndarray:
  """uint8 [N, T, H, W, 3]: the video ([T, H, W, 3], or [N, T, H, W, 3] one per prompt) re-generated under
  each prompt from its latent noised to `strength` (in (0, 1]); the first 1 + tc k frames are used (the VAE's
  frame count)."""
  if not 0.0 < strength <= 1.0:
    raise TaskError(f"--strength={strength}: must be in (0, 1]")
  videos = _per_prompt(videos, len(prompts), 4, "videos")
  tc = generator.temporal_compression
  usable = 1 + tc * ((videos.shape[1] - 1) // tc)
  source = np.asarray(generator.encode(videos[:, :usable]))
  return generator.generate(prompts, seed, source=np.broadcast_to(source, (len(prompts), *source.shape[1:])),
                            strength=strength, **sampling)


# ---------------------------------------------------------------------------------------------------------------
# The registry: what each task takes and how it runs, for the CLI (vidgen/main.py), Colab and experiments/.
# ---------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Request:
  """A task by name and its inputs as a user gives them: file paths and option values."""
  name: str = "t2v"
  images: Sequence[str] = ()
  videos: Sequence[str] = ()
  at: Sequence = ()
  direction: str = "forward"
  times: int = 1
  strength: float | None = None
  overlap: int | None = None
  init_noise: str | None = None  # a .npy of noise in diffusers' latent layout [B, C, F, H, W]


@dataclasses.dataclass(frozen=True)
class Inputs:
  """A checked request with its files read at the generation size (uint8 arrays)."""
  request: Request
  prompts: list
  images: list
  videos: list
  at: list
  overlap: int | None
  noise: np.ndarray | None = None  # [B, T_lat, h, w, z], from request.init_noise


# The options beyond images and videos, how to tell that a request sets one, and what it is for.
OPTIONS = {
    "at": (lambda r: bool(r.at), "sets keyframe times of --task=interpolate"),
    "strength": (lambda r: r.strength is not None, "sets the noise level of --task=edit"),
    "times": (lambda r: r.times != 1, "sets the chunks --task=extend adds"),
    "direction": (lambda r: r.direction != "forward", "sets which way --task=extend goes"),
    "overlap": (lambda r: r.overlap is not None, "sets the conditioning frames of --task=extend and connect"),
    "init_noise": (lambda r: r.init_noise is not None, "sets the starting noise of --task=t2v and image"),
}


@dataclasses.dataclass(frozen=True)
class Task:
  name: str
  summary: str                     # one line: --help and the README's table
  images: int | None = 0           # --image files it takes (None: its `check` decides)
  videos: int | None = 0           # --video files it takes (None: its `check` decides)
  options: tuple[str, ...] = ()    # the OPTIONS it reads
  one_prompt: bool = False         # makes one video from one prompt
  frames: int | None = None        # frames per chunk when --frames is not given (None: config.data.num_frames)
  motion: bool = True              # needs chunks of more than one frame
  ends: int = 0                    # chunk ends conditioned on `overlap` frames of a neighbour (extend 1, connect 2)
  check: Callable | None = None    # (request, frames) -> None: checks of its own before any file is read
  # Batch tasks: (generator, inputs, seed, progress) -> (uint8 videos [N, T, H, W, 3], settings for the index).
  # Streaming tasks (one long video): (generator, inputs, seed, progress, path) -> (index entry, settings).
  make: Callable | None = None
  streams: bool = False


def _check_edit(request: Request, frames: int):
  if request.strength is None or not 0.0 < request.strength <= 1.0:
    raise TaskError(f"--strength={request.strength}: --task=edit needs a strength in (0, 1]")


def _check_extend(request: Request, frames: int):
  _check_times_direction(request.times, request.direction)


def _check_interpolate(request: Request, frames: int):
  images, videos = list(request.images), list(request.videos)
  if bool(images) == bool(videos) or len(videos) > 1:
    raise TaskError("--task=interpolate needs keyframes: --image files (one per --at time) or one --video "
                    "(its frames at the --at times)")
  check_keyframe_times(request.at, frames, len(images) if images else None)


def _make_t2v(generator, inputs: Inputs, seed, progress):
  extra = {"init_noise": inputs.request.init_noise} if inputs.noise is not None else {}
  return generator.generate(inputs.prompts, seed, noise=inputs.noise, progress=progress), extra


def _make_i2v(generator, inputs: Inputs, seed, progress):
  return image_to_video(generator, inputs.prompts, inputs.images[0], seed, progress=progress), {}


def _make_interpolate(generator, inputs: Inputs, seed, progress):
  videos = interpolate(generator, inputs.prompts, np.stack(inputs.images), inputs.at, seed, progress=progress)
  return videos, {"keyframe_times": inputs.at}


def _make_edit(generator, inputs: Inputs, seed, progress):
  strength = inputs.request.strength
  return edit(generator, inputs.prompts, inputs.videos[0], strength, seed, progress=progress), {"strength": strength}


def _make_extend(generator, inputs: Inputs, seed, progress, path):
  r = inputs.request
  entry = extend(generator, inputs.prompts[0], inputs.videos[0], path, r.times, r.direction, inputs.overlap, seed,
                 fps=generator.config.data.fps, scale=4, progress=progress)
  return entry, {"direction": r.direction, "times": r.times, "overlap": entry["overlap"]}


def _make_connect(generator, inputs: Inputs, seed, progress, path):
  video, n = connect(generator, inputs.prompts[0], *inputs.videos, overlap=inputs.overlap, seed=seed,
                     progress=progress)
  video_io.write_mp4(path, video, fps=generator.config.data.fps, scale=4)
  entry = {"file": path, "frames": len(video), "transition_frames": n, "transition_start": len(inputs.videos[0])}
  return entry, {"overlap": inputs.overlap}


TASKS = {t.name: t for t in (
    Task("t2v", "text to video", options=("init_noise",), motion=False, make=_make_t2v),
    Task("image", "text to one image (a 1-frame video, also written as a PNG)", options=("init_noise",), frames=1,
         motion=False, make=_make_t2v),
    Task("i2v", "image to video: --image is the first frame, the prompt guides the motion", images=1,
         make=_make_i2v),
    Task("extend", "continue --video by --times chunks, --direction forward or backward, into one mp4", videos=1,
         options=("times", "direction", "overlap"), one_prompt=True, ends=1,
         check=_check_extend, make=_make_extend, streams=True),
    Task("interpolate", "fill the frames between keyframes: --image files or one --video's frames, at --at times",
         images=None, videos=None, options=("at",), check=_check_interpolate,
         make=_make_interpolate),
    Task("connect", "a transition from the end of the first --video to the start of the second", videos=2,
         options=("overlap",), one_prompt=True, ends=2, make=_make_connect, streams=True),
    Task("edit", "re-generate --video under the prompt from its latent noised to --strength", videos=1,
         options=("strength",), check=_check_edit, make=_make_edit),
)}


def get(name: str) -> Task:
  if name not in TASKS:
    raise TaskError(f"--task={name!r}: allowed {', '.join(TASKS)}")
  return TASKS[name]


def load_inputs(config, prompts: Sequence[str], request: Request) -> Inputs:
  """Checks a request against its task and reads its files at the generation size (config.data), before any
  model loads, so bad input costs one line and writes nothing."""
  task, prompts = get(request.name), list(prompts)
  images, videos, frames = list(request.images), list(request.videos), config.data.num_frames
  if not prompts:
    raise TaskError(f"--task={task.name} needs --prompt (repeatable) or --prompts_file")
  if task.one_prompt and len(prompts) != 1:
    raise TaskError(f"--task={task.name} makes one video: give one --prompt, not {len(prompts)}")
  if task.images is not None and len(images) != task.images:
    raise TaskError(f"--task={task.name} " + (f"needs {task.images} --image" if task.images else "takes no --image")
                    + f", got {len(images)}")
  if task.videos is not None and len(videos) != task.videos:
    raise TaskError(f"--task={task.name} " + (f"needs {task.videos} --video" if task.videos else "takes no --video")
                    + f", got {len(videos)}")
  for option, (given, purpose) in OPTIONS.items():
    if option not in task.options and given(request):
      raise TaskError(f"--{option} {purpose}, not of --task={task.name}")
  if task.frames is not None and frames != task.frames:
    raise TaskError(f"--task={task.name} makes {task.frames} frame(s), not --frames={frames}")
  if task.motion and frames == 1:
    raise TaskError(f"--task={task.name} needs more than one frame per chunk")
  if task.check:
    task.check(request, frames)
  overlap = None
  if task.ends:
    whole_end = not config.dit.frame_conditioning and (task.ends == 2 or request.direction == "backward")
    overlap = check_overlap(request.overlap, frames, build.compression(config)[0], ends=task.ends,
                            whole_end=whole_end)
  size = (config.data.height, config.data.width)
  loaded = dict(images=[load_image(path, size)[0] for path in images],
                videos=[load_video(path, size) for path in videos])
  if task.ends:
    for path, video in zip(videos, loaded["videos"]):
      _check_frames(f"--video {path}", video, overlap)
  at = []
  if task.name == "interpolate":
    at = check_keyframe_times(request.at, frames)
    if videos:
      if max(at) >= len(loaded["videos"][0]):
        raise TaskError(f"keyframe time {max(at)} is outside --video {videos[0]} ({len(loaded['videos'][0])} frames)")
      loaded["images"] = [loaded["videos"][0][t] for t in at]
  noise = None if request.init_noise is None else load_noise(request.init_noise, config, len(prompts))
  return Inputs(request=request, prompts=prompts, at=at, overlap=overlap, noise=noise, **loaded)


def load_noise(path: str, config, count: int) -> np.ndarray:
  """float32 [count, T_lat, h, w, z] from a .npy in diffusers' latent layout [count, z, T_lat, h, w], checked
  against the generation shape (config.data, or --size and --frames)."""
  if not os.path.isfile(path):
    raise TaskError(f"--init_noise={path}: no such file")
  try:
    noise = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise TaskError(f"--init_noise={path}: not a .npy array ({type(e).__name__})") from None
  want = (count, config.vae.z_dim, *build.latent_grid(config))
  if noise.shape != want:
    raise TaskError(f"--init_noise={path} has shape {noise.shape}: {count} prompt(s) at this size need {want} "
                    "(diffusers' latent layout [B, C, F, H, W])")
  return np.ascontiguousarray(np.moveaxis(noise.astype(np.float32), 1, -1))


def run(generator, inputs: Inputs, out_dir: str, *, seed: int | None = None, progress: bool = True) -> dict:
  """Runs checked inputs (see load_inputs), adds its mp4s to OUT_DIR and their entries to OUT_DIR/index.json
  (never overwriting a file already there); returns the new entries."""
  task = get(inputs.request.name)
  generate_lib.read_index(out_dir)  # an index.json that is not vidgen's fails here, before any sampling
  seed = generator.config.sample.seed if seed is None else seed
  settings = dict(generator.settings(seed), task=task.name)
  if task.streams:
    os.makedirs(out_dir, exist_ok=True)
    name = generate_lib.new_names(out_dir, [f"{task.name}_{generate_lib.slug(inputs.prompts[0])}"])[0]
    entry, extra = task.make(generator, inputs, seed, progress, os.path.join(out_dir, name + ".mp4"))
    index = [dict(entry, file=name + ".mp4", prompt=inputs.prompts[0], seed=seed, settings=dict(settings, **extra))]
    generate_lib.append_index(out_dir, index)
  else:
    videos, extra = task.make(generator, inputs, seed, progress)
    index = generate_lib.write_videos(out_dir, videos, inputs.prompts, dict(settings, **extra),
                                      fps=generator.config.data.fps)  # image: also a PNG each
  return {"index": index, "out_dir": out_dir}
