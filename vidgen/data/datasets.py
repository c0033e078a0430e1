"""Datasets by name from `config.data`: the built-in Shapes set (built once per data dir), a folder of the
user's videos and images, or a prepared TFDS video dataset; the last two are bucketed (vidgen/data/media.py).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os

from absl import logging
import numpy as np

from vidgen import atomic_files
from vidgen.data import buckets as buckets_lib
from vidgen.data import media
from vidgen.data import pipeline
from vidgen.data import shapes
from vidgen.data import shapes_builder
from vidgen.data import tfds_videos
from vidgen.data import video_files

NAMES = ("shapes", "folder", "tfds")

SHAPES_SPEC_FIELDS = ("height", "width", "num_frames", "speed", "min_size", "max_size",
                      "two_object_prob", "noise_std")


def shapes_spec(data_config) -> shapes.ShapesSpec:
  return shapes.ShapesSpec(**{k: data_config[k] for k in SHAPES_SPEC_FIELDS})


def data_dir(data_config, workdir: str) -> str:
  return data_config.data_dir or os.path.join(workdir, "data")


def build(data_config, workdir: str, progress: bool = True):
  """Builds (or reuses) the dataset: the TFDS Shapes builder, or the bucketed MediaSet of a folder or TFDS
  video dataset (whose report, counts per bucket and skipped files, goes to DATA_DIR/report.json)."""
  if data_config.name not in NAMES:
    raise ValueError(f"config.data.name={data_config.name!r}: allowed {NAMES}")
  if data_config.name != "shapes":
    return media_set(data_config, workdir, progress)
  return shapes_builder.build_shapes(
      data_dir(data_config, workdir), shapes_spec(data_config), num_train=data_config.num_train,
      num_heldout=data_config.num_heldout, num_val=data_config.num_val, progress=progress)


def source(data_config, workdir: str, split: str):
  """A random-access source of {'video': uint8 [T,H,W,3], 'caption': str, ...} for `split`."""
  return shapes_builder.shapes_source(build(data_config, workdir), split)


def buckets(data_config) -> tuple[buckets_lib.Bucket, ...]:
  """config.data.buckets, or one bucket of data.height x data.width x data.num_frames when it is empty."""
  specs = tuple(data_config.buckets)
  return buckets_lib.parse(specs or (f"{data_config.height}x{data_config.width}x{data_config.num_frames}",))


def media_set(data_config, workdir: str, progress: bool = True) -> media.MediaSet:
  """The folder or TFDS media of config.data in buckets; the folder's probe results are cached by listing."""
  out_dir = data_dir(data_config, workdir)
  os.makedirs(out_dir, exist_ok=True)
  if data_config.name == "folder":
    items, skipped = _folder_index(data_config, out_dir, progress)
    root = data_config.path
    decode = lambda item, b, start: video_files.decode_clip(os.path.join(root, item.path), b.frames,
                                                            data_config.fps, (b.height, b.width), start)
  else:
    source, items, skipped = _tfds_index(data_config.tfds_name, out_dir, data_config.tfds_split,
                                         data_config.video_key, data_config.caption_key, data_config.source_fps,
                                         progress)
    decode = lambda item, b, start: source.decode_clip(item, b.frames, data_config.fps, (b.height, b.width), start)
  result = media.MediaSet(items, skipped, buckets(data_config), data_config.fps, decode)
  report = result.report()
  with open(os.path.join(out_dir, "report.json"), "w") as f:
    json.dump(report, f, indent=1)
  logging.info("dataset: %s", media.format_report(report).replace("\n", "; "))
  return result


_TFDS_INDEXES = {}


def _tfds_index(name, data_dir, split, video_key, caption_key, source_fps, progress):
  """(TfdsVideos, items, skipped), read once per process: indexing may read every record, and the data
  stage, VAE training, its statistics and the latent cache all ask for the same dataset."""
  key = (name, os.path.abspath(data_dir), split, video_key, caption_key, source_fps)
  if key not in _TFDS_INDEXES:
    source = tfds_videos.TfdsVideos(name, data_dir, split, video_key, caption_key, source_fps)
    _TFDS_INDEXES[key] = (source, *source.index(progress))
  return _TFDS_INDEXES[key]


def _folder_index(data_config, out_dir: str, progress: bool):
  """scan_folder's result, reused while no file under the folder (or the manifest) changed."""
  root, manifest = data_config.path, data_config.manifest or None
  if not os.path.isdir(root):
    raise ValueError(f"config.data.path={root!r} is not a directory: name='folder' needs a folder of videos "
                     f"{video_files.VIDEO_EXTENSIONS} and images {video_files.IMAGE_EXTENSIONS}")
  listing = []
  for dirpath, _, names in os.walk(root):
    for name in names:
      st = os.stat(os.path.join(dirpath, name))
      listing.append((os.path.relpath(os.path.join(dirpath, name), root), st.st_size, st.st_mtime_ns))
  if manifest:
    st = os.stat(manifest) if os.path.exists(manifest) else None
    listing.append((os.path.abspath(manifest), st and st.st_size, st and st.st_mtime_ns))
  key = hashlib.sha1(json.dumps([os.path.abspath(root), sorted(listing)]).encode()).hexdigest()
  path = os.path.join(out_dir, f"media_index_{key[:12]}.json")
  if os.path.exists(path):
    with open(path) as f:
      cached = json.load(f)
    return [video_files.MediaInfo(**m) for m in cached["items"]], cached["skipped"]
  items, skipped = video_files.scan_folder(root, manifest, progress=progress)
  atomic_files.write_json(path, {"items": [dataclasses.asdict(m) for m in items], "skipped": skipped})
  return items, skipped


def train_iterator(data_config, workdir: str, global_batch_size: int, seed: int, keys=("video",)):
  """A checkpointable iterator of host-local training batches holding `keys` ('video', 'caption')."""
  if data_config.name == "shapes":
    return pipeline.batched_iterator(source(data_config, workdir, "train"), global_batch_size, seed=seed,
                                     transform=lambda ex: {k: ex[k] for k in keys})
  data = media_set(data_config, workdir, progress=False)
  schedule = data.schedule(global_batch_size, seed)

  def load(bucket, example, step, row):
    ex = data.load(bucket, example, seed=[seed, 2, step, row])
    return {k: ex[k] for k in keys}
  return pipeline.bucketed_iterator(schedule, load)


def clip_batches(data_config, workdir: str, num: int, batch: int, split: str = "train", seed: int = 0):
  """uint8 video batches [b, T, H, W, 3] of about `num` clips, each batch one shape, for statistics and
  evaluation on this host. Shapes reads `split` in order; media (no held-out split) follow the training
  bucket schedule, so every bucket shows up in proportion."""
  if data_config.name == "shapes":
    src = source(data_config, workdir, split)
    for start in range(0, min(num, len(src)), batch):
      yield np.stack([src[i]["video"] for i in range(start, min(num, len(src), start + batch))])
    return
  data = media_set(data_config, workdir, progress=False)
  schedule = data.schedule(batch, seed)
  for step in range(-(-min(num, len(data)) // batch)):  # about one pass over a small dataset
    rows = [schedule.example_at(step, row) for row in range(batch)]
    yield np.stack([data.load(b, ex, seed=[seed, 3, step, row])["video"] for row, (b, ex) in enumerate(rows)])
