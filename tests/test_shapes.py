"""Shapes renderer, captions, compositions and determinism."""

import itertools

import numpy as np
import pytest

from vidgen.data import shapes
from vidgen.models.tokenizer import HashedWordTokenizer

SPEC = shapes.ShapesSpec()


def test_compositions_hold_out_eight_balanced_triples():
  held, train = set(shapes.HELDOUT_COMPOSITIONS), set(shapes.TRAIN_COMPOSITIONS)
  assert len(shapes.ALL_COMPOSITIONS) == 48 and len(held) == 8 and len(train) == 40
  assert not held & train and held | train == set(shapes.ALL_COMPOSITIONS)
  for color in shapes.COLORS:
    assert sum(c.color == color for c in held) == 2
  for index, values in enumerate((shapes.COLORS, shapes.SHAPES, shapes.MOTIONS)):
    assert {c[index] for c in train} == set(values)
  # Only the combination is new: every pair inside a held-out triple occurs in training.
  for comp in held:
    for i, j in itertools.combinations(range(3), 2):
      assert any(t[i] == comp[i] and t[j] == comp[j] for t in train)


def test_heldout_compositions_never_appear_in_training_clips():
  held = set(shapes.HELDOUT_COMPOSITIONS)
  two_objects = 0
  for index in range(400):
    objects = shapes.make_example(SPEC, "train", index)["objects"]
    assert not {o.composition for o in objects} & held
    two_objects += len(objects) == 2
  assert 0.17 < two_objects / 400 < 0.33  # two_object_prob = 0.25
  for split in ("val", "heldout"):
    for index in range(40):
      objects = shapes.make_example(SPEC, split, index)["objects"]
      assert len(objects) == 1 and (objects[0].composition in held) == (split == "heldout")


def test_make_example_is_deterministic_by_seed_split_and_index():
  a, b = shapes.make_example(SPEC, "train", 7, seed=3), shapes.make_example(SPEC, "train", 7, seed=3)
  assert np.array_equal(a["video"], b["video"]) and a["caption"] == b["caption"] and a["objects"] == b["objects"]
  assert a["video"].dtype == np.uint8 and a["video"].shape == (9, 32, 32, 3)
  for other in (shapes.make_example(SPEC, "train", 7, seed=4), shapes.make_example(SPEC, "train", 8, seed=3),
                shapes.make_example(SPEC, "val", 7, seed=3)):
    assert other["objects"] != a["objects"]
  with pytest.raises(ValueError, match="split='test'"):
    shapes.make_example(SPEC, "test", 0)


def test_two_objects_have_distinct_colors_and_never_touch():
  spec = shapes.ShapesSpec(two_object_prob=1.0)
  for index in range(60):
    example = shapes.make_example(spec, "train", index)
    a, b = example["objects"]
    assert a.color != b.color
    (ax, ay), (bx, by) = shapes.trajectory(spec, a), shapes.trajectory(spec, b)
    gap = (a.size + b.size) / 2 + 1
    assert np.all((np.abs(ax - bx) >= gap - 1e-9) | (np.abs(ay - by) >= gap - 1e-9))
    assert shapes.parse_prompt(example["caption"]) == [a.composition, b.composition]


def test_objects_move_at_spec_speed_and_stay_inside_the_frame():
  for index in range(100):
    example = shapes.make_example(SPEC, "train", index)
    for obj in example["objects"]:
      cx, cy = shapes.trajectory(SPEC, obj)
      assert np.allclose(np.hypot(np.diff(cx), np.diff(cy)), SPEC.speed)
      half = obj.size / 2
      assert cx.min() - half >= -1e-9 and cx.max() + half <= SPEC.width + 1e-9
      assert cy.min() - half >= -1e-9 and cy.max() + half <= SPEC.height + 1e-9
      assert SPEC.min_size <= obj.size <= SPEC.max_size


@pytest.mark.parametrize("shape, area_factor", [("circle", np.pi / 4), ("square", 1.0), ("triangle", 0.5)])
def test_render_is_antialiased_with_the_analytic_area(shape, area_factor):
  spec = shapes.ShapesSpec(noise_std=0)
  obj = shapes.ObjectSpec("blue", shape, "right", x0=8.3, y0=15.7, size=11.0)
  video = shapes.render_objects(spec, [obj]).astype(np.float64)
  background, color = np.array(spec.background), np.array(shapes.PALETTE["blue"])
  coverage = ((video - background) @ (color - background)) / ((color - background) ** 2).sum()
  # 4x4 supersampling places edges to a quarter pixel: areas agree within a few percent.
  assert np.allclose(coverage.sum((1, 2)), area_factor * 11.0**2, rtol=0.045)
  assert np.ptp(coverage.sum((1, 2))) < 1e-3  # whole-pixel steps: every frame has the same coverage
  fractional = (coverage > 0.05) & (coverage < 0.95)
  assert fractional.any()  # soft edges, not a binary mask
  assert np.array_equal(video[0, 0, 0], background)
  x_centroid = (coverage * (np.arange(32) + 0.5)).sum((1, 2)) / coverage.sum((1, 2))
  assert np.allclose(np.diff(x_centroid), spec.speed, atol=0.05)


def test_noise_is_small_and_honest():
  video = shapes.render_objects(SPEC, [], np.random.default_rng(0)).astype(np.float64)
  assert abs((video - np.array(SPEC.background)).std() - SPEC.noise_std) < 0.2
  assert 1.5 < np.abs(np.diff(video, axis=0)).mean() < 3.0
  clean = shapes.render_objects(shapes.ShapesSpec(noise_std=0), [], np.random.default_rng(0))
  assert np.all(clean == np.array(SPEC.background, np.uint8))


def test_render_rejects_objects_leaving_the_frame():
  with pytest.raises(ValueError, match="leaves"):
    shapes.render_objects(SPEC, [shapes.ObjectSpec("red", "square", "left", x0=10.0, y0=16.0, size=12.0)])


@pytest.mark.parametrize("kwargs, field", [
    (dict(num_frames=1), "num_frames"), (dict(height=4), "height"), (dict(speed=0.0), "speed"),
    (dict(max_size=20.0), "max_size"), (dict(min_size=12.0, max_size=11.0), "max_size"),
    (dict(two_object_prob=1.5), "two_object_prob"), (dict(background=(300, 0, 0)), "background"),
    (dict(noise_std=-1.0), "noise_std"),
    (dict(height=24, width=24, speed=1.0, max_size=12.0), "two_object_prob"),
])
def test_spec_validation_names_the_field(kwargs, field):
  with pytest.raises(ValueError, match=f"ShapesSpec.{field}="):
    shapes.ShapesSpec(**kwargs)


def test_object_spec_validation():
  with pytest.raises(ValueError, match="ObjectSpec.color='purple'"):
    shapes.ObjectSpec("purple", "circle", "left", 16.0, 16.0, 10.0)
  with pytest.raises(ValueError, match="ObjectSpec.motion='spin'"):
    shapes.ObjectSpec("red", "circle", "spin", 16.0, 16.0, 10.0)


def test_parse_prompt_inverts_every_template():
  for comp in shapes.ALL_COMPOSITIONS:
    for article, word, phrase in itertools.product(
        shapes.ARTICLES, shapes.SHAPE_WORDS[comp.shape], shapes.MOTION_PHRASES[comp.motion]):
      text = " ".join(w for w in (article, comp.color, word, phrase) if w)
      assert shapes.parse_prompt(text) == [comp], text
  rng = np.random.default_rng(0)
  for _ in range(300):
    comps = [shapes.ALL_COMPOSITIONS[i] for i in rng.choice(48, size=int(rng.integers(1, 3)))]
    caption = shapes.make_caption(comps, rng)
    assert shapes.parse_prompt(caption) == comps, caption
  assert shapes.parse_prompt("The Red Ball, rising; while a blue box falls.") == [
      ("red", "circle", "up"), ("blue", "square", "down")]
  assert shapes.make_caption([("red", "circle", "left"), ("blue", "square", "up")]) == (
      "a red circle moving left and a blue square moving up")


@pytest.mark.parametrize("text", ["", "a purple circle moving left", "a red circle spinning",
                                  "a red moving left", "red circle moving left and"])
def test_parse_prompt_rejects_text_outside_the_grammar(text):
  with pytest.raises(ValueError, match="cannot parse prompt"):
    shapes.parse_prompt(text)


def test_eval_prompts_cycle_heldout_compositions_deterministically():
  prompts = shapes.eval_prompts(24, seed=1)
  assert prompts == shapes.eval_prompts(24, seed=1) and prompts != shapes.eval_prompts(24, seed=2)
  parsed = [shapes.parse_prompt(p) for p in prompts]
  assert [p[0] for p in parsed] == [shapes.HELDOUT_COMPOSITIONS[i % 8] for i in range(24)]
  assert len(set(prompts)) > 16  # varied templates
  train_prompts = shapes.eval_prompts(5, compositions=shapes.TRAIN_COMPOSITIONS)
  assert shapes.parse_prompt(train_prompts[0]) == [shapes.TRAIN_COMPOSITIONS[0]]


def _training_vocabulary():
  words = set(shapes.COLORS) | set(shapes.CONNECTORS) | {a for a in shapes.ARTICLES if a}
  words |= {w for ws in shapes.SHAPE_WORDS.values() for w in ws}
  return words | {w for ps in shapes.MOTION_PHRASES.values() for p in ps for w in p.split()}


def test_training_captions_use_the_caption_vocabulary_alone():
  vocabulary = _training_vocabulary()
  for index in range(200):
    assert set(shapes.make_example(SPEC, "train", index)["caption"].split()) <= vocabulary


def test_two_object_prompts_are_deterministic_pairs_of_heldout_compositions():
  prompts = shapes.two_object_prompts(32, seed=1)
  assert prompts == shapes.two_object_prompts(32, seed=1) and prompts != shapes.two_object_prompts(32, seed=2)
  assert len(set(prompts)) == 32
  held = set(shapes.HELDOUT_COMPOSITIONS)
  firsts = []
  for prompt in prompts:
    comps = shapes.parse_prompt(prompt)  # the training captions' grammar: only the compositions are new
    assert len(comps) == 2 and set(comps) <= held and comps[0].color != comps[1].color, prompt
    axes = [shapes.MOTION_VECTORS[c.motion][0] != 0 for c in comps]
    assert axes[0] == axes[1], prompt  # one axis: a pair every spec can draw apart
    firsts.append(comps)
  # The i-th prompt names held-out composition i % 8 (first or second), like training's two-object clips.
  assert all(shapes.HELDOUT_COMPOSITIONS[i % 8] in comps for i, comps in enumerate(firsts))
  assert {c for comps in firsts for c in comps} == held
  assert {tuple(comps) for comps in firsts} != {tuple(comps[::-1]) for comps in firsts}  # both orders occur
  assert len({frozenset(comps) for comps in firsts}) == 12  # every same-axis held-out pair
  with pytest.raises(ValueError, match="partner"):
    shapes.two_object_prompts(2, compositions=shapes.HELDOUT_COMPOSITIONS[:2])  # red left, red down


def test_paraphrase_prompts_reword_the_heldout_prompts_in_orders_training_never_uses():
  prompts = shapes.paraphrase_prompts(64, seed=1)
  assert prompts == shapes.paraphrase_prompts(64, seed=1) and prompts != shapes.paraphrase_prompts(64, seed=2)
  heldout = shapes.eval_prompts(64, seed=1)
  vocabulary = _training_vocabulary()
  tokenizer = HashedWordTokenizer()
  for i, (prompt, original) in enumerate(zip(prompts, heldout)):
    words = tokenizer.words(prompt)  # what the text encoder sees: the same words in another order
    assert sorted(words) == sorted(tokenizer.words(original)) and words != tokenizer.words(original), prompt
    assert set(words) <= vocabulary and not set(words) & set(shapes.CONNECTORS)
    with pytest.raises(ValueError, match="cannot parse prompt"):  # outside every training caption template
      shapes.parse_prompt(prompt)
    assert shapes.parse_prompt(prompt, paraphrases=True) == [shapes.HELDOUT_COMPOSITIONS[i % 8]]
  # Every (held-out composition, template) pair occurs.
  assert len({(i % 8, i % len(shapes.PARAPHRASE_TEMPLATES)) for i in range(64)}) == 8 * len(
      shapes.PARAPHRASE_TEMPLATES)
  assert shapes.CAPTION_TEMPLATE not in shapes.PARAPHRASE_TEMPLATES


def test_parse_prompt_inverts_every_paraphrase_template_and_training_grammar_rejects_them():
  for comp in shapes.ALL_COMPOSITIONS:
    for template, article, word, phrase in itertools.product(
        shapes.PARAPHRASE_TEMPLATES, shapes.ARTICLES, shapes.SHAPE_WORDS[comp.shape],
        shapes.MOTION_PHRASES[comp.motion]):
      text = " ".join(template.format(article=article, color=comp.color, shape=word, motion=phrase).split())
      assert shapes.parse_prompt(text, paraphrases=True) == [comp], text
      with pytest.raises(ValueError, match="cannot parse prompt"):  # never a training caption's word order
        shapes.parse_prompt(text)
  with pytest.raises(ValueError, match="cannot parse prompt"):
    shapes.parse_prompt("moving left, a red circle")
  assert shapes.parse_prompt("Moving to the left: the RED ball.", paraphrases=True) == [("red", "circle", "left")]
  # Paraphrases are single objects; captions still parse as before with paraphrases on.
  assert shapes.parse_prompt("a red ball going left and a blue box rising", paraphrases=True) == [
      ("red", "circle", "left"), ("blue", "square", "up")]
  with pytest.raises(ValueError, match="cannot parse prompt"):
    shapes.parse_prompt("moving left, a red circle and a blue box rising", paraphrases=True)


def test_place_objects_renders_the_compositions_asked_for():
  rng = np.random.default_rng(0)
  pair = shapes.place_objects(SPEC, shapes.HELDOUT_COMPOSITIONS[:2], rng)
  assert [o.composition for o in pair] == list(shapes.HELDOUT_COMPOSITIONS[:2])
  assert shapes.render_objects(SPEC, pair).shape == (SPEC.num_frames, SPEC.height, SPEC.width, 3)
  (single,) = shapes.place_objects(SPEC, [shapes.HELDOUT_COMPOSITIONS[3]], rng)
  assert single.composition == shapes.HELDOUT_COMPOSITIONS[3]
  with pytest.raises(ValueError, match="one or two"):
    shapes.place_objects(SPEC, shapes.HELDOUT_COMPOSITIONS[:3], rng)


@pytest.mark.parametrize("preset", ["tiny", "small", "test"])
def test_every_two_object_eval_prompt_can_be_drawn_at_the_presets_sizes(preset):
  from tests import helpers
  from vidgen.data import datasets
  config = helpers.load_config(preset)
  spec = datasets.shapes_spec(config.data)
  rng = np.random.default_rng(0)
  for prompt in shapes.two_object_prompts(config.eval.num_two_object, seed=config.seed):
    objects = shapes.place_objects(spec, shapes.parse_prompt(prompt), rng)
    assert shapes.render_objects(spec, objects).shape == (spec.num_frames, spec.height, spec.width, 3)
