"""Buckets, the bucketed pipeline, and VAE training from a folder of real media files and from TFDS."""
import json
import os

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from etils import epath

from tests import helpers
from tests import media_fixtures
from vidgen import config_validation
from vidgen import main as main_lib
from vidgen.data import buckets as buckets_lib
from vidgen.data import datasets
from vidgen.data import media
from vidgen.train import dit_trainer

# 16:9-ish, 9:16-ish and 1:1 video buckets plus 1:1 images (sizes the test VAE's 8x compression divides).
BUCKETS = ("16x32x5", "32x16x5", "24x24x5", "24x24x1:0.5")
# One VAE level instead of two: each bucket's step compiles in about half the time.
SMALL_VAE = {"vae.dim_mult": (1, 2), "vae.temporal_downsample": (True,), "vae.spatial_downsample": (True,)}


def test_parse_and_assign():
  b = buckets_lib.parse(BUCKETS)
  assert [x.name for x in b] == ["16x32x5", "32x16x5", "24x24x5", "24x24x1"] and b[3].weight == 0.5
  assert buckets_lib.assign(b, 64, 36, 8) == (0, "")     # 16:9 video
  assert buckets_lib.assign(b, 36, 64, 8) == (1, "")     # 9:16
  assert buckets_lib.assign(b, 48, 48, 8) == (2, "")     # 1:1
  assert buckets_lib.assign(b, 50, 30, 1) == (3, "")     # an image goes to the 1-frame bucket only
  assert buckets_lib.assign(b, 64, 36, 3)[1].startswith("too short")
  assert buckets_lib.assign(b, 20, 20, 8)[1].startswith("smaller than every bucket")
  assert buckets_lib.available_frames(24, 24.0, 8) == 8
  for bad in (["16x32"], ["16x32x5", "16x32x5:2"], ["0x8x5"], ["8x8x5:-1"], []):
    with pytest.raises(ValueError, match="config.data.buckets"):
      buckets_lib.parse(bad)


def test_schedule_is_a_pure_function_of_seed_and_step_and_covers_every_example():
  members = [np.arange(0, 10), np.arange(10, 13), np.arange(13, 40)]
  s1, s2 = (buckets_lib.Schedule(members, [1.0, 1.0, 2.0], 4, seed=7) for _ in range(2))
  rows = [[s1.example_at(step, r) for r in range(4)] for step in range(300)]
  assert rows == [[s2.example_at(step, r) for r in range(4)] for step in reversed(range(300))][::-1]
  assert all(len({b for b, _ in step}) == 1 for step in rows)  # one bucket per batch
  counts = np.bincount([step[0][0] for step in rows], minlength=3) / 300
  np.testing.assert_allclose(counts, np.array([10, 3, 54]) / 67, atol=0.07)  # weight x size
  seen = {ex for step in rows for _, ex in step}
  assert seen == set(range(40))  # every example of every bucket, epoch after epoch
  with pytest.raises(ValueError, match="every bucket is empty"):
    buckets_lib.Schedule([np.arange(0), np.arange(3)], [1.0, 0.0], 4, seed=0)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("media"))
  written = media_fixtures.write_media_folder(root)
  return root, written


def _folder_config(root, manifest, **overrides):
  return helpers.load_config(**{"data.name": "folder", "data.path": root, "data.manifest": manifest,
                                "data.buckets": BUCKETS, **overrides})


def test_folder_report_counts_buckets_and_skips_bad_files(folder, tmp_path):
  root, written = folder
  config = _folder_config(root, written["manifest"])
  data = datasets.build(config.data, str(tmp_path), progress=False)
  report = data.report()
  assert sum(report["buckets"].values()) == report["examples"] == len(data)
  assert report["buckets"]["16x32x5"] >= 1 and report["buckets"]["32x16x5"] >= 1
  assert report["buckets"]["24x24x5"] >= 2 and report["buckets"]["24x24x1"] == 2  # mov + gif; png + jpg
  for path, reason in written["bad"].items():
    assert reason in report["skipped_files"][path], (path, report["skipped_files"].get(path))
  assert os.path.exists(os.path.join(tmp_path, "data", "report.json"))
  text = media.format_report(report)
  assert "bucket 16x32x5" in text and "skipped, missing caption: 1" in text


def test_bucketed_iterator_resumes_exactly_and_mixes_aspect_ratios(folder, tmp_path):
  root, written = folder
  config = _folder_config(root, written["manifest"])
  it = datasets.train_iterator(config.data, str(tmp_path), 8, seed=3)
  first = [next(it) for _ in range(3)]
  state = it.get_state()
  rest = [next(it)["video"] for _ in range(9)]
  shapes = {b["video"].shape[1:4] for b in first} | {v.shape[1:4] for v in rest}
  assert {(5, 16, 32), (5, 32, 16), (5, 24, 24)} <= shapes
  again = datasets.train_iterator(config.data, str(tmp_path), 8, seed=3)
  again.set_state(state)
  for expected in rest:
    np.testing.assert_array_equal(next(again)["video"], expected)


def test_two_hosts_read_the_single_hosts_batches_row_halves_each(folder, tmp_path, monkeypatch):
  """Every host draws the same bucket per step and reads only its rows: host p of 2 gets rows
  [4p, 4p + 4) of the 1-host batch of 8, so 2 hosts train exactly like 1."""
  root, written = folder
  config = _folder_config(root, written["manifest"])
  single = datasets.train_iterator(config.data, str(tmp_path), 8, seed=5)
  expected = [next(single)["video"] for _ in range(6)]
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  for host in range(2):
    monkeypatch.setattr(jax, "process_index", lambda host=host: host)
    it = datasets.train_iterator(config.data, str(tmp_path), 8, seed=5)
    for batch in expected:
      np.testing.assert_array_equal(next(it)["video"], batch[4 * host: 4 * host + 4])


def test_a_file_that_fails_mid_training_is_replaced_and_counted(tmp_path):
  media_fixtures.write_truncated_faststart(str(tmp_path / "broken.mp4"))
  (tmp_path / "broken.txt").write_text("a broken clip")
  good = media_fixtures.frames(24, 36, 64)
  media_fixtures.write_h264(str(tmp_path / "good.mp4"), good, fps=24)
  (tmp_path / "good.txt").write_text("a good clip")
  config = helpers.load_config(**{"data.name": "folder", "data.path": str(tmp_path), "data.fps": 0,
                                  "data.buckets": ("16x32x17",), "data.data_dir": str(tmp_path / "cache")})
  data = datasets.media_set(config.data, str(tmp_path), progress=False)
  assert len(data) == 2  # the truncated file passes probing (its index is intact)
  broken = [i for i, item in enumerate(data.items) if item.path == "broken.mp4"][0]
  ex = data.load(0, broken, seed=0)
  assert ex["caption"] == "a good clip" and ex["video"].shape == (17, 16, 32, 3)
  assert "broken.mp4" in data.report()["failed_during_training"]


def test_folder_trains_the_vae_with_three_aspect_ratios_in_one_run(folder, tmp_path, capsys):
  root, written = folder
  config = _folder_config(root, written["manifest"], **{**SMALL_VAE, "data.buckets": BUCKETS[:3], "train_vae.steps": 6,
                                                        "train_vae.log_every": 3, "train_vae.ckpt_every": 3})
  config_validation.validate(config)
  main_lib.run(config, str(tmp_path), "train_vae", progress=False)
  out = capsys.readouterr().out
  for hw in ("16, 32", "32, 16", "24, 24"):
    assert f"video(8, 5, {hw}, 3)" in out, out
  rows = helpers.read_metrics(tmp_path / "vae" / "metrics.jsonl")
  assert [r["step"] for r in rows] == [3, 6] and all(np.isfinite(r["loss"]) for r in rows)
  assert os.path.exists(tmp_path / "vae" / "latent_stats.json")


@pytest.mark.slow  # about 3 minutes: 6 compiles (the default tests cover each half)
def test_folder_trains_vae_then_frame_conditioned_dit_with_three_aspect_ratios(folder, tmp_path, capsys):
  root, written = folder
  steps = {f"{m}.{k}": v for m in ("train_vae", "train_dit") for k, v in (("steps", 6), ("log_every", 3),
                                                                          ("ckpt_every", 3))}
  config = _folder_config(root, written["manifest"], **{**SMALL_VAE, **steps, "data.buckets": BUCKETS[:3]})
  config_validation.validate(config)
  main_lib.run(config, str(tmp_path), "all", progress=False)  # data, VAE, latent cache, DiT
  out = capsys.readouterr().out
  # The small VAE compresses 2x in time and 4x in space: 5 frames of 16x32 -> 3 x 4 x 8 latents.
  for hw, latent_hw in (("16, 32", "4, 8"), ("32, 16", "8, 4"), ("24, 24", "6, 6")):
    assert f"vae: step compiled for video(8, 5, {hw}, 3)" in out, out
    # Frame conditioning (the default) trains from pixels: y is the encoding of the clip with frames blanked.
    assert f"dit: step compiled for ids(8, 32), video(8, 5, {hw}, 3)" in out, out
  for name in ("vae", "dit"):
    rows = helpers.read_metrics(tmp_path / name / "metrics.jsonl")
    assert [r["step"] for r in rows] == [3, 6] and all(np.isfinite(r["loss"]) for r in rows)


def test_bad_bucket_configs_fail_before_anything_is_built(folder):
  root, written = folder
  with pytest.raises(config_validation.ConfigError, match="data.buckets.*1 \\+ 4k"):
    config_validation.validate(_folder_config(root, "", **{"data.buckets": ("16x32x6",)}))
  with pytest.raises(config_validation.ConfigError, match="multiples of 8"):
    config_validation.validate(_folder_config(root, "", **{"data.buckets": ("20x32x5",)}))
  with pytest.raises(config_validation.ConfigError, match="data.path"):
    config_validation.validate(_folder_config(root + "/nope", ""))


class TinyActions(tfds.core.GeneratorBasedBuilder):
  """A TFDS video dataset like ucf101 in miniature: variable-size uint8 videos and class labels."""
  VERSION = tfds.core.Version("1.0.0")

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(__file__)

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "video": tfds.features.Tensor(shape=(None, None, None, 3), dtype=np.uint8,
                                      encoding=tfds.features.Encoding.ZLIB),
        "label": tfds.features.ClassLabel(names=["ApplyEyeMakeup", "jumping_jack"])}))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    sizes = [(12, 36, 64), (10, 64, 36), (9, 40, 40), (4, 40, 40)]  # the last is too short: skipped
    for i, (t, h, w) in enumerate(sizes * 2):
      yield i, {"video": media_fixtures.frames(t, h, w), "label": i % 2}


def test_tfds_video_dataset_trains_vae_then_dit_from_the_latent_cache(tmp_path, capsys):
  data_dir = str(tmp_path / "tfds")
  TinyActions(data_dir=data_dir, file_format="array_record").download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False,
                                                   compute_stats=tfds.download.ComputeStatsMode.SKIP))
  config = helpers.load_config(**{"data.name": "tfds", "data.tfds_name": "tiny_actions", "data.data_dir": data_dir,
                                  "data.buckets": BUCKETS[:3], "data.fps": 0, "train_vae.steps": 2,
                                  "train_dit.steps": 2, "dit.frame_conditioning": False, **SMALL_VAE})
  data = datasets.media_set(config.data, str(tmp_path), progress=False)
  report = data.report()
  assert report["buckets"] == {"16x32x5": 2, "32x16x5": 2, "24x24x5": 2}
  assert set(report["skipped_by_reason"]) == {"too short for every bucket"}
  assert data.items[0].caption == "apply eye makeup" and data.items[1].caption == "jumping jack"
  ex = data.load(2, data.members[2][0], seed=0)
  assert ex["video"].shape == (5, 24, 24, 3)
  config.data.buckets = ("16x16x5",)  # every clip in one bucket: one compile per model keeps the test short
  main_lib.run(config, str(tmp_path), "all", progress=False)  # data, VAE, latent cache, DiT (no Shapes judge)
  out = capsys.readouterr().out
  assert "vae: step compiled for video(8, 5, 16, 16, 3)" in out
  assert "dit: step compiled for ids(8, 32), mean(8, 3, 4, 4, 4)" in out
  assert [r["step"] for r in helpers.read_metrics(tmp_path / "dit" / "metrics.jsonl")][-1] == 2
  (cache,) = os.listdir(tmp_path / "dit" / "latents")
  with open(tmp_path / "dit" / "latents" / cache / "index.json") as f:
    assert json.load(f)["buckets"] == [{"name": "16x16x5", "count": 6, "file": "16x16x5.array_record"}]
  # Frame conditioning encodes the pixels in the step (y needs them): batches of clips and caption ids instead.
  batch = next(dit_trainer.media_pixel_iterator(config, str(tmp_path), 8, seed=0))
  assert batch["video"].shape == (8, 5, 16, 16, 3) and batch["ids"].shape == (8, 32)
  with pytest.raises(ValueError, match="tfds_split"):
    datasets.media_set(helpers.load_config(**{"data.name": "tfds", "data.tfds_name": "tiny_actions",
                                              "data.data_dir": data_dir, "data.tfds_split": "test"}).data,
                       str(tmp_path), progress=False)
