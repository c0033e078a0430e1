"""Frame-conditioned generation on the trained 'test' workdir: every task's shapes, its conditioning (known
frames come back through the VAE as given) and its bad input (one clear line, nothing written)."""
import json
import os

import jax
import numpy as np
import pytest
from PIL import Image

from tests import helpers
from vidgen import config_validation
from vidgen import generate as generate_lib
from vidgen import main as main_lib
from vidgen import tasks
from vidgen import video_io
from vidgen.data import datasets
from vidgen.data import shapes
from vidgen.diffusion import conditioning


@pytest.fixture(scope="module")
def generator(trained):
  config, workdir, _ = trained
  return generate_lib.Generator(config, workdir)


@pytest.fixture(scope="module")
def clip(trained):
  """A 9-frame 32x32 Shapes clip (the test preset's chunk: 3 latent frames of 4 frames after the first)."""
  config, _, _ = trained
  return shapes.make_example(datasets.shapes_spec(config.data), "heldout", 0)["video"]


def _through_vae(generator, frames):
  return generator.decode(generator.encode(frames[None]))[0]


def test_sample_masks_draw_every_task_and_never_know_everything():
  weights = conditioning.parse_task_weights("none:1,first:1,prefix:1,suffix:1,ends:1")
  masks = np.asarray(conditioning.sample_masks(jax.random.key(0), 512, 5, weights))
  assert masks.shape == (512, 5) and set(np.unique(masks)) == {0.0, 1.0}
  assert (masks.sum(1) < 5).all()
  rows = {tuple(m) for m in masks.astype(int)}
  assert (0, 0, 0, 0, 0) in rows and (1, 0, 0, 0, 0) in rows and (1, 1, 0, 0, 0) in rows
  assert (0, 0, 0, 1, 1) in rows and (1, 0, 0, 0, 1) in rows and (1, 1, 0, 1, 1) in rows
  first_only = np.asarray(conditioning.sample_masks(jax.random.key(1), 64, 5, {"first": 1.0}))
  assert (first_only == [1, 0, 0, 0, 0]).all()
  assert not np.asarray(conditioning.sample_masks(jax.random.key(2), 8, 1, weights)).any()  # images
  with pytest.raises(ValueError, match="TASK:WEIGHT"):
    conditioning.parse_task_weights("first:1,middle:2")


def test_i2v_first_frame_is_the_image_through_the_vae(generator, clip, tmp_path):
  path = str(tmp_path / "still.png")
  Image.fromarray(np.repeat(np.repeat(clip[0], 2, 0), 3, 1)).save(path)  # 64x96: covered, center-cropped
  image = tasks.load_image(path, clip.shape[1:3])
  assert image.shape == (1, *clip.shape[1:])
  videos = tasks.image_to_video(generator, ["a red circle moving left", "a blue square moving up"], image,
                                seed=0, progress=False)
  assert videos.shape == (2, *clip.shape)
  expected = _through_vae(generator, image)[0]
  for video in videos:
    assert np.abs(video[0].astype(int) - expected).max() <= 1
  assert not np.array_equal(videos[0, 1:], videos[1, 1:])  # the prompt drives the rest


def test_extend_forward_and_backward_keep_the_given_video_and_add_chunks(generator, clip, tmp_path):
  chunks = tasks.Chunks(generator)
  assert (chunks.latent_frames, chunks.frames, chunks.overlap, chunks.head, chunks.tail) == (3, 9, 1, 1, 4)
  for direction, new in (("forward", 8), ("backward", 5)):
    path = str(tmp_path / f"{direction}.mp4")
    info = tasks.extend(generator, "a red circle moving left", clip, path, times=3, direction=direction,
                        progress=False)
    video, _ = video_io.read_video(path)
    assert info["frames"] == len(video) == 9 + 3 * new and info["frames_per_chunk"] == new
    given = video[:9] if direction == "forward" else video[-9:]
    assert np.abs(given.astype(int) - clip).mean() < 4  # the given video, through H.264 only
    assert not os.path.exists(path + ".partial")


def test_connect_puts_a_transition_between_the_two_videos(generator, clip):
  other = clip[::-1].copy()
  video, n = tasks.connect(generator, "a green triangle moving right", clip, other, seed=1, progress=False)
  assert n == 9 - 1 - 4 and video.shape == (9 + n + 9, *clip.shape[1:])
  np.testing.assert_array_equal(video[:9], clip)
  np.testing.assert_array_equal(video[-9:], other)


def test_edit_strength_moves_from_the_source_to_the_prompt(generator, clip):
  source = _through_vae(generator, clip)
  low = tasks.edit(generator, ["a red circle moving left"], clip, strength=0.02, seed=0, progress=False)[0]
  high = tasks.edit(generator, ["a red circle moving left"], clip, strength=1.0, seed=0, progress=False)[0]
  assert low.shape == high.shape == clip.shape
  assert np.abs(low.astype(int) - source).mean() < np.abs(high.astype(int) - source).mean()
  assert np.abs(low.astype(int) - source).mean() < 4


def test_cli_tasks_write_their_files(trained, clip, tmp_path):
  config, workdir, _ = trained
  video_path = str(tmp_path / "clip.mp4")
  video_io.write_mp4(video_path, clip, fps=8)
  out = str(tmp_path / "image")
  result = main_lib.run(config, workdir, "generate", ["a blue square"], out, progress=False,
                        task=dict(name="image"))
  still = np.asarray(Image.open(os.path.join(out, result["index"][0]["image"])))
  assert still.shape == (32, 32, 3)
  out = str(tmp_path / "extend")
  result = main_lib.run(config, workdir, "generate", ["a red circle moving left"], out, progress=False,
                        task=dict(name="extend", videos=[video_path], times=2, direction="backward"))
  entry = json.loads(open(os.path.join(out, "index.json")).read())[0]
  assert entry["frames"] == 9 + 2 * 5 and entry["settings"]["direction"] == "backward"


@pytest.mark.parametrize("task, args, message", [
    ("i2v", dict(image="missing.png"), "image file not found"),
    ("edit", dict(videos=["CLIP"], strength=0.0), "strength"),
    ("edit", dict(videos=["CLIP"], strength=1.5), "strength"),
    ("extend", dict(videos=["missing.mp4"]), "not found"),
    ("extend", dict(videos=["CLIP"], times=0), "--times"),
    ("connect", dict(videos=["CLIP"]), "needs 2 --video"),
    ("i2v", dict(), "needs --image"),
])
def test_bad_task_input_is_one_line_and_writes_nothing(trained, clip, tmp_path, task, args, message):
  config, workdir, _ = trained
  video_path = str(tmp_path / "clip.mp4")
  video_io.write_mp4(video_path, clip, fps=8)
  args = dict(args, name=task)
  if "videos" in args:
    args["videos"] = [video_path if v == "CLIP" else str(tmp_path / v) for v in args["videos"]]
  if "image" in args:
    args["image"] = str(tmp_path / args["image"])
  out = str(tmp_path / "out")
  with pytest.raises(tasks.TaskError, match=message) as e:
    main_lib.run(config, workdir, "generate", ["a red circle"], out, progress=False, task=args)
  assert "\n" not in str(e.value)
  assert not os.path.exists(out)


def test_a_video_too_short_for_backward_conditioning(generator, clip, tmp_path):
  with pytest.raises(tasks.TaskError, match="has 2 frames; the conditioning needs at least 4"):
    tasks.extend(generator, "a red circle", clip[:2], str(tmp_path / "x.mp4"), direction="backward")
  assert not os.listdir(tmp_path)


def test_a_checkpoint_that_does_not_match_the_config_fails_in_one_line(trained):
  config, workdir, _ = trained
  other = config.copy_and_resolve_references()
  other.dit.frame_conditioning = False
  with pytest.raises(config_validation.ConfigError, match=r"patch_embedding.*frame_conditioning sets it"):
    generate_lib.Generator(other, workdir)
