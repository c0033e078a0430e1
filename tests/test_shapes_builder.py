"""TFDS Shapes builder: ArrayRecord build and random-access read, without TensorFlow."""

import importlib.util
import os
import pickle
import sys

import numpy as np
import pytest

from vidgen.data import shapes, shapes_builder

SPEC = shapes.ShapesSpec()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("tfds")
  return data_dir, shapes_builder.build_shapes(str(data_dir), SPEC, num_train=12, num_heldout=8, num_val=4)


def test_build_writes_array_record_splits(built):
  data_dir, builder = built
  assert builder.info.file_format.value == "array_record"
  assert {s: builder.info.splits[s].num_examples for s in builder.info.splits} == dict(train=12, heldout=8, val=4)
  files = os.listdir(builder.data_dir)
  assert any(".array_record" in f for f in files) and "features.json" in files


def test_source_items_decode_to_numpy_and_match_the_renderer(built):
  _, builder = built
  for split in ("train", "heldout", "val"):
    source = shapes_builder.shapes_source(builder, split)
    seen = set()
    for i in range(len(source)):
      item = source[i]
      assert item["video"].dtype == np.uint8 and item["video"].shape == (9, 32, 32, 3)
      assert isinstance(item["caption"], str)
      expected = shapes.make_example(SPEC, split, item["index"])
      assert np.array_equal(item["video"], expected["video"]) and item["caption"] == expected["caption"]
      assert item["objects"]["color"] == [o.color for o in expected["objects"]]
      assert np.allclose(item["objects"]["x0"], [o.x0 for o in expected["objects"]], atol=1e-4)
      seen.add(item["index"])
    assert seen == set(range(len(source)))


def test_source_is_picklable_and_batch_readable(built):
  _, builder = built
  source = shapes_builder.shapes_source(builder, "train")
  clone = pickle.loads(pickle.dumps(source))
  assert clone[3]["caption"] == source[3]["caption"]
  assert [x["index"] for x in source.__getitems__([0, 5])] == [source[0]["index"], source[5]["index"]]


def test_second_build_reuses_the_data(built):
  data_dir, builder = built
  record = next(f for f in os.listdir(builder.data_dir) if "train.array_record" in f)
  mtime = os.path.getmtime(os.path.join(builder.data_dir, record))
  again = shapes_builder.build_shapes(str(data_dir), SPEC, num_train=12, num_heldout=8, num_val=4)
  assert again.data_dir == builder.data_dir
  assert os.path.getmtime(os.path.join(builder.data_dir, record)) == mtime


def test_specs_do_not_collide():
  names = {shapes_builder.shapes_config().name,
           shapes_builder.shapes_config(shapes.ShapesSpec(noise_std=0.0)).name,
           shapes_builder.shapes_config(num_train=10).name,
           shapes_builder.shapes_config(seed=1).name}
  assert len(names) == 4
  assert shapes_builder.shapes_config().name == shapes_builder.Shapes.BUILDER_CONFIGS[0].name
  assert shapes_builder.shapes_config().name.startswith("32x32x9_")
  same = shapes.ShapesSpec(height=32.0, speed=2, noise_std=2, background=[24, 24, 28])
  assert shapes_builder.shapes_config(same).name == shapes_builder.shapes_config().name
  with pytest.raises(ValueError, match="num_train"):
    shapes_builder.shapes_config(num_train=-1)


def test_tensorflow_is_not_needed(built):
  if importlib.util.find_spec("tensorflow") is not None:
    pytest.skip("TensorFlow is installed here, so this run cannot show that the path works without it")
  _, builder = built
  assert shapes_builder.shapes_source(builder, "val")[0]["video"].shape == (9, 32, 32, 3)
  assert "tensorflow" not in sys.modules
