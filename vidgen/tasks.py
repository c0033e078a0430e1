"""Generation tasks with one frame-conditioned model (vidgen/diffusion/conditioning.py): text-to-video, a single
image, image-to-video, extending a video forward or backward, interpolating between keyframes, connecting two
videos, editing a video.

Given images and videos are resized to cover the generation size (config.data, or --size) and center-cropped,
the data pipeline's policy. A chunk is one clip of F = config.data.num_frames frames; known frames may sit at
any of them. Continuing a video conditions a chunk on `overlap` frames of its neighbour (default_overlap:
extend 1 + tc, frame 0 and one whole latent frame, 5 of 9; connect 1 + (F - 1) // 4 per end, 3 of 9), enough to
carry the motion's direction and speed across the seam.
"""
from __future__ import annotations

import json
import os
import tempfile

import numpy as np

from vidgen import config_validation
from vidgen import video_io
from vidgen.data import video_files

TASKS = ("t2v", "image", "i2v", "extend", "interpolate", "connect", "edit")


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


def check_overlap(overlap: int | None, frames: int, tc: int, ends: int = 1) -> int:
  """The overlap in frames (the default when None); `ends` chunk ends are conditioned and >= 1 frame is new."""
  overlap = default_overlap(frames, tc, ends) if overlap is None else overlap
  if overlap < 1 or ends * overlap >= frames:
    raise TaskError(f"--overlap={overlap} frames: allowed 1 to {(frames - 1) // ends} for chunks of {frames} "
                    f"frames{' with both ends conditioned' if ends > 1 else ''} (set --frames for longer chunks)")
  return overlap


def known_frames(frames: int, placed: dict[int, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
  """(uint8 [1, frames, H, W, 3], float32 mask [1, frames]) with placed[t] [H, W, 3] at frame t."""
  shape = next(iter(placed.values())).shape
  video = np.zeros((1, frames, *shape), np.uint8)
  mask = np.zeros((1, frames), np.float32)
  for t, frame in placed.items():
    video[0, t], mask[0, t] = frame, 1.0
  return video, mask


def _known(generator, n: int, placed: dict[int, np.ndarray]) -> dict:
  """Keyword arguments of generator.generate / sample_latents: n chunks with the frames `placed` known."""
  video, mask = known_frames(generator.config.data.num_frames, placed)
  return dict(frames=np.repeat(video, n, 0), frame_mask=np.repeat(mask, n, 0))


def _generate_known(generator, prompts: list[str], placed: dict[int, np.ndarray], seed, **sampling) -> np.ndarray:
  """uint8 [N, F, H, W, 3]: a chunk per prompt with the frames `placed` known."""
  return generator.generate(prompts, seed, **_known(generator, len(prompts), placed), **sampling)


def image_to_video(generator, prompts: list[str], image: np.ndarray, seed: int | None = None,
                   **sampling) -> np.ndarray:
  """uint8 [N, F, H, W, 3]: `image` [1, H, W, 3] is every video's first frame, the prompt guides the motion."""
  return _generate_known(generator, prompts, {0: image[0]}, seed, **sampling)


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
  """uint8 [N, F, H, W, 3]: the frames between keyframes [K, H, W, 3] placed at frame indices `times`."""
  times = check_keyframe_times(times, generator.config.data.num_frames, len(keyframes))
  return _generate_known(generator, prompts, dict(zip(times, keyframes)), seed, **sampling)


def _check_frames(what: str, video: np.ndarray, needed: int):
  if len(video) < needed:
    raise TaskError(f"{what} has {len(video)} frames; the conditioning needs at least {needed}")


def extend(generator, prompt: str, video: np.ndarray, out_path: str, times: int = 1, direction: str = "forward",
           overlap: int | None = None, seed: int | None = None, fps: int = 8, scale: int = 1,
           progress: bool = True, **sampling) -> dict:
  """Continues `video` [T0, H, W, 3] by `times` chunks, forward or backward, each conditioned on the last
  (first) `overlap` frames of the video so far, into one mp4 at out_path. Memory stays that of one chunk: forward
  chunks stream into the file; backward ones, generated last-first, wait on disk as .npy until written in order.

  Forward, an overlap of whole latent frames (1 + tc j) makes a chunk's new latent frames continue the last ones
  of the chunk before, so they are decoded with its causal decoder cache: the seams are decoded like any
  latent-frame boundary of one long video (the causal decoder cannot run backward)."""
  if direction not in ("forward", "backward"):
    raise TaskError(f"--direction={direction!r}: allowed forward, backward")
  if times < 1:
    raise TaskError(f"--times={times}: must be >= 1")
  frames, tc = generator.config.data.num_frames, generator.temporal_compression
  overlap = check_overlap(overlap, frames, tc)
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
        z = generator.sample_latents([prompt], seed + i, **_known(generator, 1, dict(enumerate(tail))),
                                     progress=progress, **sampling)
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
          clip = _generate_known(generator, [prompt], {new + j: frame for j, frame in enumerate(context)},
                                 seed + i, progress=progress, **sampling)[0]
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
  overlap = check_overlap(overlap, frames, generator.temporal_compression, ends=2)
  _check_frames("the first video", first, overlap)
  _check_frames("the second video", second, overlap)
  placed = dict(enumerate(first[-overlap:]))
  placed.update({frames - overlap + j: frame for j, frame in enumerate(second[:overlap])})
  clip = _generate_known(generator, [prompt], placed, seed, **sampling)[0]
  transition = clip[overlap: frames - overlap]
  return np.concatenate([first, transition, second]), len(transition)


def edit(generator, prompts: list[str], video: np.ndarray, strength: float, seed: int | None = None,
         **sampling) -> np.ndarray:
  """uint8 [N, T, H, W, 3]: `video` re-generated under each prompt from its latent noised to `strength`
  (in (0, 1]); the first 1 + tc k frames are used (the VAE's frame count)."""
  if not 0.0 < strength <= 1.0:
    raise TaskError(f"--strength={strength}: must be in (0, 1]")
  tc = generator.temporal_compression
  usable = 1 + tc * ((len(video) - 1) // tc)
  source = generator.encode(video[None, :usable])
  n = len(prompts)
  return generator.generate(prompts, seed, source=np.repeat(source, n, 0), strength=strength, **sampling)


def load_inputs(task: str, config, prompts: list[str], images=(), videos=(), strength: float | None = None,
                times: int = 1, at=(), overlap: int | None = None) -> dict:
  """Checks a task's arguments and reads its files at the generation size, before any model loads, so bad
  input costs one line and writes nothing. Interpolation's keyframes are --image files at times --at, or the
  frames of one --video at those times."""
  if task not in TASKS:
    raise TaskError(f"--task={task!r}: allowed {TASKS}")
  if not prompts:
    raise TaskError(f"--task={task} needs --prompt (repeatable) or --prompts_file")
  images, videos, frames = list(images or ()), list(videos or ()), config.data.num_frames
  if task in ("extend", "connect") and len(prompts) != 1:
    raise TaskError(f"--task={task} makes one video: give one --prompt, not {len(prompts)}")
  if task == "interpolate":
    if bool(images) == bool(videos) or len(videos) > 1:
      raise TaskError("--task=interpolate needs keyframes: --image files (one per --at time) or one --video "
                      "(its frames at the --at times)")
    keyframe_times = check_keyframe_times(at, frames, len(images) if images else None)
  else:
    needs = {"i2v": (1, 0), "extend": (0, 1), "connect": (0, 2), "edit": (0, 1)}.get(task, (0, 0))
    if len(images) != needs[0]:
      raise TaskError(f"--task={task} " + ("needs one --image" if needs[0] else "takes no --image"))
    if len(videos) != needs[1]:
      raise TaskError(f"--task={task} needs {needs[1]} --video, got {len(videos)}")
    if at:
      raise TaskError(f"--at sets keyframe times of --task=interpolate, not of --task={task}")
  if task == "edit" and (strength is None or not 0.0 < strength <= 1.0):
    raise TaskError(f"--strength={strength}: --task=edit needs a strength in (0, 1]")
  if task == "extend" and times < 1:
    raise TaskError(f"--times={times}: must be >= 1")
  if task == "image" and frames != 1:
    raise TaskError(f"--task=image makes one frame, not --frames={frames}")
  if task in ("i2v", "extend", "interpolate", "connect") and frames == 1:
    raise TaskError(f"--task={task} needs more than one frame per chunk")
  if task in ("extend", "connect"):
    tc = config_validation.vae_compression(config.vae)[0]
    overlap = check_overlap(overlap, frames, tc, ends=2 if task == "connect" else 1)
  size = (config.data.height, config.data.width)
  inputs = {"images": [load_image(path, size)[0] for path in images],
            "videos": [load_video(path, size) for path in videos], "overlap": overlap}
  if task in ("extend", "connect"):
    for i, video in enumerate(inputs["videos"]):
      _check_frames(f"--video {videos[i]}", video, overlap)
  if task == "interpolate":
    if videos:
      video = inputs["videos"][0]
      if max(keyframe_times) >= len(video):
        raise TaskError(f"keyframe time {max(keyframe_times)} is outside --video {videos[0]} ({len(video)} frames)")
      inputs["images"] = [video[t] for t in keyframe_times]
    inputs["at"] = keyframe_times
  return inputs


def run(generator, task: str, prompts: list[str], inputs: dict, out_dir: str, *, seed: int | None = None,
        direction: str = "forward", times: int = 1, strength: float | None = None,
        progress: bool = True) -> dict:
  """Runs a checked task (see load_inputs) and writes its mp4s and OUT_DIR/index.json; returns the index."""
  from vidgen import generate as generate_lib
  fps, seed = generator.config.data.fps, generator.config.sample.seed if seed is None else seed
  settings = dict(generator.settings(seed), task=task)
  overlap = inputs.get("overlap")
  if task in ("extend", "connect"):
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{task}_{generate_lib.slug(prompts[0])}.mp4")
    if task == "extend":
      entry = extend(generator, prompts[0], inputs["videos"][0], path, times, direction, overlap, seed, fps=fps,
                     scale=4, progress=progress)
      settings.update(direction=direction, times=times, overlap=entry["overlap"])
    else:
      video, n = connect(generator, prompts[0], *inputs["videos"], overlap=overlap, seed=seed, progress=progress)
      video_io.write_mp4(path, video, fps=fps, scale=4)
      entry = {"file": path, "frames": len(video), "transition_frames": n,
               "transition_start": len(inputs["videos"][0])}
      settings["overlap"] = overlap
    index = [dict(entry, file=os.path.basename(path), prompt=prompts[0], seed=seed, settings=settings)]
    with open(os.path.join(out_dir, "index.json"), "w") as f:
      json.dump(index, f, indent=1)
    return {"index": index, "out_dir": out_dir}
  if task == "i2v":
    videos = image_to_video(generator, prompts, inputs["images"][0][None], seed, progress=progress)
  elif task == "interpolate":
    videos = interpolate(generator, prompts, np.stack(inputs["images"]), inputs["at"], seed, progress=progress)
    settings["keyframe_times"] = inputs["at"]
  elif task == "edit":
    videos = edit(generator, prompts, inputs["videos"][0], strength, seed, progress=progress)
    settings["strength"] = strength
  else:  # t2v, image
    videos = generator.generate(prompts, seed, progress=progress)
  index = generate_lib.write_videos(out_dir, videos, prompts, settings, fps=fps)  # image: also a PNG each
  return {"index": index, "out_dir": out_dir}
