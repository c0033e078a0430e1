"""Generation tasks with one frame-conditioned model (vidgen/diffusion/conditioning.py): text-to-video, a single
image, image-to-video, extending a video forward or backward, connecting two videos, editing a video.

Given images and videos are resized to cover the generation size (config.data, or --size) and center-cropped,
the data pipeline's policy. A chunk is one clip of the trained length F = 1 + tc (T - 1) frames (T latent
frames); `overlap` latent frames of conditioning are the first m = 1 + tc (overlap - 1) frames of a chunk
(continuing a video) or its last tc overlap frames (leading into one). The causal VAE makes both exact:
latent frames depend only on their own and earlier frames, and a chunk's first latent frame is one image.
"""
from __future__ import annotations

import json
import os
import tempfile

import jax.numpy as jnp
import numpy as np

from vidgen import video_io
from vidgen.data import video_files
from vidgen.diffusion import conditioning

TASKS = ("t2v", "image", "i2v", "extend", "connect", "edit")


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


class Chunks:
  """The chunk geometry of a generator: T latent frames, F pixel frames, tc pixel frames per latent frame."""

  def __init__(self, generator, overlap: int | None = None):
    self.generator = generator
    self.latent_frames = generator.grid[0]
    self.tc = generator.temporal_compression
    self.frames = 1 + self.tc * (self.latent_frames - 1)
    self.overlap = max(1, (self.latent_frames - 1) // 2) if overlap is None else overlap
    if not 1 <= self.overlap < self.latent_frames:
      raise TaskError(f"overlap={self.overlap} latent frames: allowed 1 to {self.latent_frames - 1} for chunks "
                      f"of {self.latent_frames} latent frames ({self.frames} frames; set --frames)")

  @property
  def head(self) -> int:
    """Frames that condition a chunk's start: 1 + tc (overlap - 1)."""
    return 1 + self.tc * (self.overlap - 1)

  @property
  def tail(self) -> int:
    """Frames that condition a chunk's end: tc overlap."""
    return self.tc * self.overlap

  def start_latents(self, frames: np.ndarray):
    """[overlap, h, w, z] latents of `head` frames as a chunk's start."""
    return self.generator.encode(frames[None])[0]

  def end_latents(self, frames: np.ndarray):
    """[overlap, h, w, z] latents of `tail` frames as a chunk's end: encoded behind copies of their first
    frame (what fills the chunk before them cannot reach them through a causal VAE of this temporal reach)."""
    filler = np.repeat(frames[:1], self.frames - len(frames), axis=0)
    return self.generator.encode(np.concatenate([filler, frames])[None])[0, -self.overlap:]

  def conditioned(self, first=None, last=None):
    """(known [1, T, h, w, z], mask [1, T]) with `first` latents at the start and `last` at the end."""
    _, h, w = self.generator.grid
    known = jnp.zeros((self.latent_frames, h, w, self.generator.config.vae.z_dim))
    if first is not None:
      known = known.at[:len(first)].set(first)
    if last is not None:
      known = known.at[self.latent_frames - len(last):].set(last)
    mask = conditioning.known(self.latent_frames, 0 if first is None else len(first),
                              0 if last is None else len(last))
    return known[None], mask[None]


def image_to_video(generator, prompts: list[str], image: np.ndarray, seed: int | None = None,
                   **sampling) -> np.ndarray:
  """uint8 [N, F, H, W, 3]: `image` [1, H, W, 3] is every video's first frame, the prompt guides the motion."""
  chunks = Chunks(generator, overlap=1)
  known, mask = chunks.conditioned(first=chunks.start_latents(image))
  n = len(prompts)
  return generator.generate(prompts, seed, known=np.repeat(known, n, 0), mask=np.repeat(mask, n, 0), **sampling)


def _check_frames(what: str, video: np.ndarray, needed: int):
  if len(video) < needed:
    raise TaskError(f"{what} has {len(video)} frames; the conditioning needs at least {needed}")


def extend(generator, prompt: str, video: np.ndarray, out_path: str, times: int = 1, direction: str = "forward",
           overlap: int | None = None, seed: int | None = None, fps: int = 8, scale: int = 1,
           progress: bool = True, **sampling) -> dict:
  """Continues `video` [T0, H, W, 3] by `times` chunks, forward or backward, each conditioned on the last
  (first) frames of the one before, into one mp4 at out_path. Memory stays that of one chunk: forward chunks
  stream into the file; backward ones, generated last-first, wait on disk as .npy until written in order."""
  if direction not in ("forward", "backward"):
    raise TaskError(f"--direction={direction!r}: allowed forward, backward")
  if times < 1:
    raise TaskError(f"--times={times}: must be >= 1")
  chunks = Chunks(generator, overlap)
  seed = generator.config.sample.seed if seed is None else seed
  _check_frames("the video to extend", video, chunks.head if direction == "forward" else chunks.tail)
  new_per_chunk = chunks.frames - (chunks.head if direction == "forward" else chunks.tail)
  with video_io.Mp4Writer(out_path, fps=fps, scale=scale) as writer:
    if direction == "forward":
      writer.write(video)
      context = video[-chunks.head:]
      for i in range(times):
        known, mask = chunks.conditioned(first=chunks.start_latents(context))
        clip = generator.generate([prompt], seed + i, known=known, mask=mask, progress=progress, **sampling)[0]
        writer.write(clip[chunks.head:])
        context = clip[-chunks.head:]
    else:
      with tempfile.TemporaryDirectory() as parts:
        context = video[:chunks.tail]
        for i in range(times):
          known, mask = chunks.conditioned(last=chunks.end_latents(context))
          clip = generator.generate([prompt], seed + i, known=known, mask=mask, progress=progress, **sampling)[0]
          np.save(os.path.join(parts, f"{i}.npy"), clip[:new_per_chunk])
          context = clip[:chunks.tail]
        for i in reversed(range(times)):
          writer.write(np.load(os.path.join(parts, f"{i}.npy")))
      writer.write(video)
  return {"file": out_path, "frames": len(video) + times * new_per_chunk, "chunks": times,
          "frames_per_chunk": new_per_chunk, "given_frames": len(video)}


def connect(generator, prompt: str, first: np.ndarray, second: np.ndarray, overlap: int | None = None,
            seed: int | None = None, **sampling) -> tuple[np.ndarray, int]:
  """(uint8 [T1 + n + T2, H, W, 3], n): `first`, a generated transition of n frames, then `second`. The
  transition's chunk starts with the end of `first` and ends with the start of `second`."""
  chunks = Chunks(generator, overlap)
  if chunks.latent_frames < 2 * chunks.overlap + 1:
    raise TaskError(f"connecting needs chunks of at least {2 * chunks.overlap + 1} latent frames "
                    f"({1 + chunks.tc * 2 * chunks.overlap} frames; set --frames), has {chunks.latent_frames}")
  _check_frames("the first video", first, chunks.head)
  _check_frames("the second video", second, chunks.tail)
  known, mask = chunks.conditioned(first=chunks.start_latents(first[-chunks.head:]),
                                   last=chunks.end_latents(second[:chunks.tail]))
  clip = generator.generate([prompt], seed, known=known, mask=mask, **sampling)[0]
  transition = clip[chunks.head: chunks.frames - chunks.tail]
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


def load_inputs(task: str, config, prompts: list[str], image: str | None = None, videos=(),
                strength: float | None = None, times: int = 1) -> dict:
  """Checks a task's arguments and reads its files at the generation size, before any model loads, so bad
  input costs one line and writes nothing."""
  if task not in TASKS:
    raise TaskError(f"--task={task!r}: allowed {TASKS}")
  if not prompts:
    raise TaskError(f"--task={task} needs --prompt (repeatable) or --prompts_file")
  one_prompt = task in ("extend", "connect")
  if one_prompt and len(prompts) != 1:
    raise TaskError(f"--task={task} makes one video: give one --prompt, not {len(prompts)}")
  needs = {"i2v": (1, 0), "extend": (0, 1), "connect": (0, 2), "edit": (0, 1)}.get(task, (0, 0))
  if bool(image) != bool(needs[0]):
    raise TaskError(f"--task={task} " + ("needs --image" if needs[0] else "takes no --image"))
  if len(videos) != needs[1]:
    raise TaskError(f"--task={task} needs {needs[1]} --video, got {len(videos)}")
  if task == "edit" and (strength is None or not 0.0 < strength <= 1.0):
    raise TaskError(f"--strength={strength}: --task=edit needs a strength in (0, 1]")
  if task == "extend" and times < 1:
    raise TaskError(f"--times={times}: must be >= 1")
  if task == "image" and config.data.num_frames != 1:
    raise TaskError(f"--task=image makes one frame, not --frames={config.data.num_frames}")
  if task in ("i2v", "extend", "connect") and config.data.num_frames == 1:
    raise TaskError(f"--task={task} needs more than one frame per chunk")
  size = (config.data.height, config.data.width)
  return {"image": load_image(image, size) if image else None,
          "videos": [load_video(path, size) for path in videos]}


def run(generator, task: str, prompts: list[str], inputs: dict, out_dir: str, *, seed: int | None = None,
        direction: str = "forward", times: int = 1, strength: float | None = None, overlap: int | None = None,
        progress: bool = True) -> dict:
  """Runs a checked task (see load_inputs) and writes its mp4s and OUT_DIR/index.json; returns the index."""
  from vidgen import generate as generate_lib
  fps, seed = generator.config.data.fps, generator.config.sample.seed if seed is None else seed
  settings = dict(generator.settings(seed), task=task)
  if task in ("extend", "connect"):
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{task}_{generate_lib.slug(prompts[0])}.mp4")
    if task == "extend":
      entry = extend(generator, prompts[0], inputs["videos"][0], path, times, direction, overlap, seed, fps=fps,
                     scale=4, progress=progress)
      settings.update(direction=direction, times=times, overlap=Chunks(generator, overlap).overlap)
    else:
      video, n = connect(generator, prompts[0], *inputs["videos"], overlap=overlap, seed=seed, progress=progress)
      video_io.write_mp4(path, video, fps=fps, scale=4)
      entry = {"file": path, "frames": len(video), "transition_frames": n,
               "transition_start": len(inputs["videos"][0])}
    index = [dict(entry, file=os.path.basename(path), prompt=prompts[0], seed=seed, settings=settings)]
    with open(os.path.join(out_dir, "index.json"), "w") as f:
      json.dump(index, f, indent=1)
    return {"index": index, "out_dir": out_dir}
  if task == "i2v":
    videos = image_to_video(generator, prompts, inputs["image"], seed, progress=progress)
  elif task == "edit":
    videos = edit(generator, prompts, inputs["videos"][0], strength, seed, progress=progress)
    settings["strength"] = strength
  else:  # t2v, image
    videos = generator.generate(prompts, seed, progress=progress)
  index = generate_lib.write_videos(out_dir, videos, prompts, settings, fps=fps)  # image: also a PNG each
  return {"index": index, "out_dir": out_dir}
