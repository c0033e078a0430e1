"""The analytic Shapes judge and video metrics: right on real renders, wrong on broken videos."""

import re

import numpy as np
import pytest
from scipy import ndimage

from vidgen.data import shapes
from vidgen.evaluate import shapes_judge, video_metrics

SPEC = shapes.ShapesSpec()
RED_CIRCLE_LEFT = shapes.ObjectSpec("red", "circle", "left", x0=23.0, y0=9.0, size=12.0)
PROMPT = "a red circle moving left"


def render(*objects, seed=0):
  return shapes.render_objects(SPEC, objects, np.random.default_rng(seed))


def judge(video, prompt=PROMPT):
  return shapes_judge.judge_video(video, prompt, SPEC)


def test_real_videos_score_at_least_99_percent():
  examples = [shapes.make_example(SPEC, "train", i) for i in range(420)]
  single = [e for e in examples if len(e["objects"]) == 1][:200]
  double = [e for e in examples if len(e["objects"]) == 2][:100]
  assert len(single) == 200 and len(double) == 100
  for batch in (single, double):
    report = shapes_judge.judge_batch([e["video"] for e in batch], [e["caption"] for e in batch], SPEC)
    assert report["all_correct_rate"] >= 0.99, [r for r in report["per_prompt"] if not r["all_correct"]][:3]
    assert report["color_accuracy"] >= 0.99 and report["shape_accuracy"] >= 0.99
    assert report["direction_accuracy"] >= 0.99 and report["extra_object_rate"] <= 0.01
    assert 1.5 < report["mean_flicker"] < 3.5  # noise_std=2: honest, non-zero background variation
    assert report["mean_area_cv"] < 0.02
    assert len(report["per_prompt"]) == len(batch)


def test_heldout_videos_and_batch_report_by_composition():
  batch = [shapes.make_example(SPEC, "heldout", i) for i in range(16)]
  report = shapes_judge.judge_batch(np.stack([e["video"] for e in batch]), [e["caption"] for e in batch], SPEC)
  assert report["all_correct_rate"] == 1.0 and report["num_videos"] == 16
  assert set(report["by_composition"]) == {shapes.make_caption([c]) for c in shapes.HELDOUT_COMPOSITIONS}


def test_correct_video_details():
  result = judge(render(RED_CIRCLE_LEFT))
  assert result["all_correct"] and not result["extra_colors"]
  (obj,) = result["objects"]
  assert obj["detected_shape"] == "circle" and obj["detected_motion"] == "left"
  assert obj["frames_present"] == SPEC.num_frames
  assert abs(obj["displacement"] - SPEC.speed * (SPEC.num_frames - 1)) < 0.5
  assert obj["blur_px"] == 0.0


@pytest.mark.parametrize("sigma", [0.5, 1.0])
def test_robust_to_blur_and_off_colors(sigma):
  videos, prompts = [], []
  for i in range(24):
    example = shapes.make_example(SPEC, "val", i)
    video = ndimage.gaussian_filter(example["video"].astype(np.float32), (0, sigma, sigma, 0))
    videos.append(np.clip(video * 0.9 + np.array([12.0, -8.0, 10.0]), 0, 255))  # desaturated, tinted
    prompts.append(example["caption"])
  assert shapes_judge.judge_batch(videos, prompts, SPEC)["all_correct_rate"] == 1.0


def test_wrong_color_fails():
  result = judge(render(shapes.ObjectSpec("green", "circle", "left", 23.0, 9.0, 12.0)))
  assert not result["objects"][0]["color_ok"] and result["extra_colors"] == ["green"] and not result["all_correct"]


@pytest.mark.parametrize("shape, wrong", [("square", "circle"), ("triangle", "circle"), ("circle", "square"),
                                          ("triangle", "square"), ("circle", "triangle"), ("square", "triangle")])
def test_wrong_shape_fails(shape, wrong):
  result = judge(render(shapes.ObjectSpec("red", shape, "left", 23.0, 9.0, 12.0)), f"a red {wrong} moving left")
  (obj,) = result["objects"]
  assert obj["color_ok"] and obj["direction_ok"] and not obj["shape_ok"] and obj["detected_shape"] == shape
  assert not result["all_correct"]


@pytest.mark.parametrize("motion, x0, y0", [("right", 9.0, 9.0), ("up", 16.0, 24.0), ("down", 16.0, 8.0)])
def test_wrong_direction_fails(motion, x0, y0):
  result = judge(render(shapes.ObjectSpec("red", "circle", motion, x0, y0, 12.0)))
  assert result["objects"][0]["detected_motion"] == motion and not result["all_correct"]


def test_static_object_fails():
  still = np.repeat(render(RED_CIRCLE_LEFT)[:1], SPEC.num_frames, axis=0)
  result = judge(still)
  assert result["objects"][0]["detected_motion"] == "static" and not result["all_correct"]


def test_barely_moving_object_fails():
  slow = shapes.render_objects(shapes.ShapesSpec(speed=0.5), [RED_CIRCLE_LEFT], np.random.default_rng(0))
  assert judge(slow)["objects"][0]["detected_motion"] == "static"


def test_blank_background_fails():
  result = judge(render())
  assert not result["objects"][0]["color_ok"] and result["objects"][0]["frames_present"] == 0
  assert not result["all_correct"] and np.isnan(result["area_cv"])


def test_pure_noise_fails():
  noise = np.random.default_rng(0).integers(0, 256, (SPEC.num_frames, 32, 32, 3), dtype=np.uint8)
  result = judge(noise)
  assert not result["all_correct"] and result["extra_object"]


def test_extra_object_fails():
  blue_square_up = shapes.ObjectSpec("blue", "square", "up", x0=24.0, y0=24.0, size=11.0)
  video = render(RED_CIRCLE_LEFT, blue_square_up)
  result = judge(video)
  assert result["objects"][0]["correct"] and result["extra_colors"] == ["blue"] and not result["all_correct"]
  assert judge(video, "a red ball going left and a blue box rising")["all_correct"]
  second_red = shapes.ObjectSpec("red", "square", "up", x0=24.0, y0=24.0, size=11.0)
  assert judge(render(RED_CIRCLE_LEFT, second_red))["extra_colors"] == ["red"]


def test_unknown_color_object_is_extra():
  video = render(RED_CIRCLE_LEFT).copy()
  video[:, 20:30, 4:14] = 250  # a white block
  assert judge(video)["extra_colors"] == ["unknown"]


def test_object_vanishing_for_most_frames_fails():
  video = render(RED_CIRCLE_LEFT).copy()
  video[3:] = render()[3:]
  result = judge(video)
  assert result["objects"][0]["frames_present"] == 3 and not result["objects"][0]["color_ok"]


def test_judge_rejects_bad_inputs():
  with pytest.raises(ValueError, match="cannot parse prompt"):
    judge(render(RED_CIRCLE_LEFT), "a spinning top")
  with pytest.raises(ValueError, match="video"):
    judge(np.zeros((32, 32, 3), np.uint8))
  with pytest.raises(ValueError, match="2 videos but 1 prompts"):
    shapes_judge.judge_batch([render(), render()], [PROMPT], SPEC)


def test_psnr():
  a = np.full((2, 3, 4, 4, 3), 100, np.uint8)
  b = a.copy()
  b[0] += 10  # mse 100 -> 28.13 dB; b[1] identical -> inf
  assert video_metrics.psnr(a[0], b[0]) == pytest.approx(10 * np.log10(255**2 / 100))
  assert video_metrics.psnr(a, b) == np.inf
  b[1] += 5
  expected = (10 * np.log10(255**2 / 100) + 10 * np.log10(255**2 / 25)) / 2
  assert video_metrics.psnr(a, b) == pytest.approx(expected)
  assert video_metrics.psnr(a / 255.0, b / 255.0, max_val=1.0) == pytest.approx(expected)
  with pytest.raises(ValueError, match="equal shapes"):
    video_metrics.psnr(a, b[0])


def test_background_flicker_and_area_stability():
  video = np.zeros((3, 4, 4, 3), np.uint8)
  video[1] = 6
  video[:, 0, 0] = [255, 0, 0]
  mask = np.zeros((3, 4, 4), bool)
  mask[:, 0, 0] = True
  assert video_metrics.background_flicker(video, mask) == pytest.approx(6.0)
  assert video_metrics.background_flicker(video) == pytest.approx(6.0 * 15 / 16)
  assert np.isnan(video_metrics.background_flicker(video, np.ones((3, 4, 4), bool)))
  assert video_metrics.area_stability([50, 50, 50]) == 0.0
  assert video_metrics.area_stability([40, 60]) == pytest.approx(0.2)
  assert np.isnan(video_metrics.area_stability([0, 0]))


def test_transition_flicker_locates_changes_and_matches_background_flicker():
  video = np.zeros((4, 4, 4, 3), np.uint8)
  video[2:] = 6  # one background jump, at the transition 1 -> 2
  video[:, 0, 0] = [255, 0, 0]
  mask = np.zeros((4, 4, 4), bool)
  mask[:, 0, 0] = True
  np.testing.assert_allclose(video_metrics.transition_flicker(video, mask), [0.0, 6.0, 0.0])
  assert np.mean(video_metrics.transition_flicker(video, mask)) == pytest.approx(
      video_metrics.background_flicker(video, mask))
  np.testing.assert_allclose(video_metrics.transition_flicker(video), [0.0, 6.0 * 15 / 16, 0.0])
  mask[2] = True  # frame 2 all object: the transitions into and out of it have no background
  flicker = video_metrics.transition_flicker(video, mask)
  assert flicker[0] == 0.0 and np.isnan(flicker[1:]).all()
  with pytest.raises(ValueError, match="T>=2"):
    video_metrics.transition_flicker(video[:1])


def _recolor(prompt, old, new):
  """The prompt with one color word swapped (colors are whole words, used once per object)."""
  return re.sub(rf"\b{old}\b", new, prompt)


def test_two_object_eval_prompts_on_real_clips_need_both_objects_right():
  rng = np.random.default_rng(0)
  prompts = shapes.two_object_prompts(16, seed=0)
  videos = []
  for prompt in prompts:
    comps = shapes.parse_prompt(prompt)
    objects = shapes.place_objects(SPEC, comps, rng)
    video = shapes.render_objects(SPEC, objects, rng)
    videos.append(video)
    result = judge(video, prompt)
    assert result["all_correct"] and len(result["objects"]) == 2, (prompt, result)
    # A wrong color for one object: that object fails (the rendered one shows as an extra object).
    other = next(c for c in shapes.COLORS if c not in {comps[0].color, comps[1].color})
    wrong = judge(video, _recolor(prompt, comps[1].color, other))
    assert wrong["objects"][0]["correct"] and not wrong["objects"][1]["color_ok"] and not wrong["all_correct"]
    # Only one of the two objects in the clip: not all-correct though the first one is right.
    alone = judge(shapes.render_objects(SPEC, objects[:1], rng), prompt)
    assert not alone["all_correct"] and sum(o["correct"] for o in alone["objects"]) == 1
  report = shapes_judge.judge_batch(videos, prompts, SPEC)
  assert report["all_correct_rate"] == 1.0 and report["num_videos"] == 16


def test_paraphrased_eval_prompts_on_real_heldout_clips():
  # Held-out clip i shows held-out composition i % 8, the composition paraphrase prompt i describes.
  prompts = shapes.paraphrase_prompts(16, seed=0)
  clips = [shapes.make_example(SPEC, "heldout", i) for i in range(16)]
  report = shapes_judge.judge_batch([c["video"] for c in clips], prompts, SPEC)
  assert report["all_correct_rate"] == 1.0, [r for r in report["per_prompt"] if not r["all_correct"]][:2]
  assert set(report["by_composition"]) == {shapes.make_caption([c]) for c in shapes.HELDOUT_COMPOSITIONS}
  for clip, prompt in zip(clips, prompts):
    (comp,) = [o.composition for o in clip["objects"]]
    other = shapes.COLORS[(shapes.COLORS.index(comp.color) + 1) % len(shapes.COLORS)]
    wrong = judge(clip["video"], _recolor(prompt, comp.color, other))
    assert not wrong["objects"][0]["color_ok"] and wrong["extra_colors"] == [comp.color]
    assert not wrong["all_correct"]
