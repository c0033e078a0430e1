"""Frame-conditioned generation on the trained 'test' workdir: every task's shapes, its conditioning (known
frames come back through the VAE as given) and its bad input (one clear line, nothing written)."""
import json
import os

import jax
import numpy as np
import pytest
from PIL import Image

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


def test_sample_masks_draw_every_kind_and_never_know_everything():
  weights = conditioning.parse_mask_weights("none:1,first:1,prefix:1,suffix:1,ends:1,keyframes:1")
  masks = np.asarray(conditioning.sample_masks(jax.random.key(0), 1024, 9, weights))
  assert masks.shape == (1024, 9) and set(np.unique(masks)) == {0.0, 1.0}
  assert (masks.sum(1) < 9).all()
  rows = {tuple(m) for m in masks.astype(int)}
  assert (0,) * 9 in rows and (1,) + (0,) * 8 in rows and (1, 1, 1) + (0,) * 6 in rows
  assert (0,) * 7 + (1, 1) in rows and (1,) + (0,) * 7 + (1,) in rows
  assert any(sum(r) and not r[0] and not r[-1] for r in rows)  # keyframes inside the clip only: interpolation
  first_only = np.asarray(conditioning.sample_masks(jax.random.key(1), 64, 9, {"first": 1.0}))
  assert (first_only == [1] + [0] * 8).all()
  assert not np.asarray(conditioning.sample_masks(jax.random.key(2), 8, 1, weights)).any()  # images
  with pytest.raises(ValueError, match="MASK:WEIGHT"):
    conditioning.parse_mask_weights("first:1,middle:2")


def test_model_input_is_wan_layout_noise_then_pixel_mask_then_y():
  frame_mask = np.zeros((1, 9), np.float32)
  frame_mask[0, [0, 3, 8]] = 1  # frame 0 alone in latent frame 0; 1-4 in latent frame 1; 5-8 in 2
  m = np.asarray(conditioning.latent_mask(frame_mask, 4))
  np.testing.assert_array_equal(m[0], [[1, 1, 1, 1], [0, 0, 1, 0], [0, 0, 0, 1]])
  np.testing.assert_array_equal(conditioning.known_prefix(frame_mask, 4), [[True, False, False]])
  np.testing.assert_array_equal(conditioning.known_prefix(np.ones((1, 9)), 4), [[True] * 3])
  x, y = np.full((1, 3, 2, 2, 5), 7.0), np.full((1, 3, 2, 2, 5), -1.0)
  inp = np.asarray(conditioning.model_input(x, y, m))
  assert inp.shape == (1, 3, 2, 2, 5 + 4 + 5) == (1, 3, 2, 2, conditioning.channels(5, 4))
  assert (inp[..., :5] == 7).all() and (inp[..., 9:] == -1).all()
  np.testing.assert_array_equal(inp[0, :, 1, 0, 5:9], m[0])


def test_y_reads_only_the_known_frames(generator, clip):
  mask = np.zeros((1, 9), np.float32)
  mask[0, [0, 8]] = 1
  y, m = generator.condition(clip[None], mask)
  other = clip[::-1].copy()
  other[0], other[8] = clip[0], clip[8]  # the same keyframes, different frames between them
  y_other, _ = generator.condition(other[None], mask)
  np.testing.assert_allclose(y, y_other, atol=1e-5)
  moved = clip.copy()
  moved[8] = clip[4]
  assert np.abs(np.asarray(generator.condition(moved[None], mask)[0]) - np.asarray(y)).max() > 1e-3
  assert m.shape == (1, 3, 4)


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


def test_t2v_reads_the_blank_clip_as_the_none_task_trains(generator, clip):
  """Nothing known is y of a blank clip (not zeros): sampling sees what training's 'none' task showed."""
  t2v = generator.sample_latents(["a red circle moving left"], 3, progress=False)
  blank = generator.sample_latents(["a red circle moving left"], 3, frames=clip[None],
                                   frame_mask=np.zeros((1, 9), np.float32), progress=False)
  np.testing.assert_allclose(t2v, blank, atol=1e-5)


def test_extend_forward_and_backward_keep_the_given_video_and_add_chunks(generator, clip, tmp_path):
  # Extend: frame 0 and one latent frame; connect (both ends) keeps a quarter of the chunk per end.
  assert tasks.default_overlap(9, 4) == 5 and tasks.default_overlap(81, 4) == 5 and tasks.default_overlap(5, 4) == 2
  assert tasks.default_overlap(9, 4, ends=2) == 3 and tasks.default_overlap(81, 4, ends=2) == 21
  for direction in ("forward", "backward"):
    path = str(tmp_path / f"{direction}.mp4")
    info = tasks.extend(generator, "a red circle moving left", clip, path, times=3, direction=direction,
                        progress=False)
    video, _ = video_io.read_video(path)
    assert info["frames"] == len(video) == 9 + 3 * 4 and info["frames_per_chunk"] == 4 and info["overlap"] == 5
    given = video[:9] if direction == "forward" else video[-9:]
    assert np.abs(given.astype(int) - clip).mean() < 4  # the given video, through H.264 only
    assert not os.path.exists(path + ".partial")


def test_extend_forward_decodes_like_one_long_video(generator, clip, tmp_path, monkeypatch):
  # Each chunk's new latent frame continues the chunk before it: decoding them with the carried decoder cache
  # gives what one decode of all the latents gives, so no seam comes from decoding chunks apart.
  sampled, written = [], []
  spy = lambda f, out: lambda *a, **kw: out.append(f(*a, **kw)) or out[-1]
  monkeypatch.setattr(generator, "sample_latents", spy(generator.sample_latents, sampled))
  write = video_io.Mp4Writer.write
  monkeypatch.setattr(video_io.Mp4Writer, "write", lambda self, frames: written.append(frames) or write(self, frames))
  tasks.extend(generator, "a red circle moving left", clip, str(tmp_path / "forward.mp4"), times=3, progress=False)
  one_decode = generator.decode(np.concatenate([sampled[0]] + [z[:, 2:] for z in sampled[1:]], axis=1))[0]
  assert one_decode.shape == (9 + 2 * 4, *clip.shape[1:]) and len(written) == 4
  assert np.abs(np.concatenate(written[1:]).astype(int) - one_decode[5:]).max() <= 1


def test_interpolate_fills_between_keyframes_at_any_frame(generator, clip):
  times = [0, 3, 8]
  videos = tasks.interpolate(generator, ["a red circle moving left"] * 2, clip[times], times, seed=0,
                             progress=False)
  assert videos.shape == (2, *clip.shape)
  expected = _through_vae(generator, clip[:1])[0]  # frame 0 starts the clip: written back exactly
  assert np.abs(videos[0, 0].astype(int) - expected).max() <= 1
  assert not np.array_equal(videos[0], videos[1])  # seed + i


def test_connect_puts_a_transition_between_the_two_videos(generator, clip):
  other = clip[::-1].copy()
  video, n = tasks.connect(generator, "a green triangle moving right", clip, other, seed=1, progress=False)
  assert n == 9 - 2 * 3 and video.shape == (9 + n + 9, *clip.shape[1:])
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
                        task=dict(name="extend", videos=[video_path], times=2, direction="backward", overlap=2))
  entry = json.loads(open(os.path.join(out, "index.json")).read())[0]
  assert entry["frames"] == 9 + 2 * 7 and entry["settings"]["direction"] == "backward"
  assert entry["settings"]["overlap"] == 2
  keyframes = []
  for t in (0, 8):
    keyframes.append(str(tmp_path / f"key{t}.png"))
    Image.fromarray(clip[t]).save(keyframes[-1])
  for name, args in (("images", dict(images=keyframes, at=["0", "8"])), ("video", dict(videos=[video_path], at=[0, 8]))):
    out = str(tmp_path / name)
    result = main_lib.run(config, workdir, "generate", ["a red circle moving left"], out, progress=False,
                          task=dict(name="interpolate", **args))
    assert result["index"][0]["settings"]["keyframe_times"] == [0, 8]
    assert video_io.read_video(os.path.join(out, result["index"][0]["file"]))[0].shape == (9, 128, 128, 3)


@pytest.mark.parametrize("task, args, message", [
    ("i2v", dict(images=["missing.png"]), "image file not found"),
    ("edit", dict(videos=["CLIP"], strength=0.0), "strength"),
    ("edit", dict(videos=["CLIP"], strength=1.5), "strength"),
    ("extend", dict(videos=["missing.mp4"]), "not found"),
    ("extend", dict(videos=["CLIP"], times=0), "--times"),
    ("extend", dict(videos=["CLIP"], overlap=9), "--overlap=9 frames: allowed 1 to 8"),
    ("connect", dict(videos=["CLIP"]), "needs 2 --video"),
    ("connect", dict(videos=["CLIP", "CLIP"], overlap=5), "allowed 1 to 4 .* both ends"),
    ("i2v", dict(), "needs 1 --image, got 0"),
    ("t2v", dict(videos=["CLIP"]), "--task=t2v takes no --video, got 1"),
    ("t2v", dict(strength=0.5), "--strength sets the noise level of --task=edit, not of --task=t2v"),
    ("interpolate", dict(videos=["CLIP"], at=[0, 9]), "keyframe time 9 is outside the clip: allowed 0 to 8"),
    ("interpolate", dict(videos=["CLIP"], at=[0, -1]), "keyframe time -1 is outside the clip"),
    ("interpolate", dict(videos=["CLIP"], at=[4]), "at least 2 keyframe times"),
    ("interpolate", dict(videos=["CLIP"], at=["0", "x"]), "frame indices"),
    ("interpolate", dict(videos=["CLIP"], at=[2, 2]), "must differ"),
    ("interpolate", dict(images=["KEY"], at=[0, 8]), "1 keyframe images for 2 times"),
    ("interpolate", dict(at=[0, 8]), "needs keyframes"),
    ("i2v", dict(images=["KEY"], at=[0]), "--at sets keyframe times of --task=interpolate"),
])
def test_bad_task_input_is_one_line_and_writes_nothing(trained, clip, tmp_path, task, args, message):
  config, workdir, _ = trained
  video_path = str(tmp_path / "clip.mp4")
  video_io.write_mp4(video_path, clip, fps=8)
  Image.fromarray(clip[0]).save(str(tmp_path / "KEY.png"))
  args = dict(args, name=task)
  if "videos" in args:
    args["videos"] = [video_path if v == "CLIP" else str(tmp_path / v) for v in args["videos"]]
  if "images" in args:
    args["images"] = [str(tmp_path / (v + ".png" if v == "KEY" else v)) for v in args["images"]]
  out = str(tmp_path / "out")
  with pytest.raises(tasks.TaskError, match=message) as e:
    main_lib.run(config, workdir, "generate", ["a red circle"], out, progress=False, task=args)
  assert "\n" not in str(e.value)
  assert not os.path.exists(out)


def test_a_video_too_short_for_the_conditioning(generator, clip, tmp_path):
  with pytest.raises(tasks.TaskError, match="has 2 frames; the conditioning needs at least 5"):
    tasks.extend(generator, "a red circle", clip[:2], str(tmp_path / "x.mp4"), direction="backward")
  assert not os.listdir(tmp_path)


def test_a_checkpoint_that_does_not_match_the_config_fails_in_one_line(trained):
  config, workdir, _ = trained
  other = config.copy_and_resolve_references()
  other.dit.frame_conditioning = False
  with pytest.raises(config_validation.ConfigError, match=r"patch_embedding.*frame_conditioning sets it"):
    generate_lib.Generator(other, workdir)


def test_hold_keyframes_fills_each_keyframes_latent_frame():
  keys = np.arange(3)[None, :, None, None, None] * np.ones((1, 3, 2, 2, 3), np.uint8)  # keyframe i is all i
  times, held = tasks.hold_keyframes([0, 6, 7], keys, frames=9, tc=4)
  assert times == [0, 5, 6, 7, 8]  # frame 0 alone; frames 5-8 are latent frame 2
  assert held[0, :, 0, 0, 0].tolist() == [0, 1, 1, 2, 2]  # 5 and 6 nearest to 6, 7 and 8 to 7
  assert tasks.hold_keyframes([2, 3], keys[:, :2], frames=9, tc=4)[0] == [1, 2, 3, 4]
