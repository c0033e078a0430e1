"""A prepared TFDS dataset with a video feature as captioned media (e.g. ucf101, moving_mnist,
bair_robot_pushing_small once the user has run `tfds build` for them).

Read through `tfds.data_sources` (random access over ArrayRecord, no tf.data). The video is the feature
`video_key` names, else the first `tfds.features.Video` or rank-4 uint8 tensor with 1 or 3 channels; the
caption is `caption_key`, else the first Text feature, else the names of the first ClassLabel (ucf101's
'ApplyEyeMakeup' becomes 'apply eye makeup'). TFDS builds `tfds.features.Video` with TensorFlow dtypes,
so datasets that use it need tensorflow importable (it is wherever they were prepared).
"""
from __future__ import annotations

import re

import numpy as np
import tensorflow_datasets as tfds
import tqdm

from vidgen.data import video_files


def _is_video(feature) -> bool:
  if isinstance(feature, tfds.features.Video):
    return True
  return (isinstance(feature, tfds.features.Tensor) and len(feature.shape) == 4 and feature.shape[-1] in (1, 3)
          and np.dtype(feature.np_dtype) == np.uint8)


def class_name_to_caption(name: str) -> str:
  """'ApplyEyeMakeup' / 'apply_eye_makeup' -> 'apply eye makeup'."""
  name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name).replace("_", " ")
  return " ".join(name.lower().split())


class TfdsVideos:
  """One split of a prepared TFDS video dataset: an index of MediaInfo rows and clip decoding."""

  def __init__(self, name: str, data_dir: str, split: str = "train", video_key: str = "", caption_key: str = "",
               source_fps: float = 0.0):
    if not name:
      raise ValueError("config.data.tfds_name is empty: data.name='tfds' needs a prepared dataset, "
                       "e.g. 'ucf101/ucf101_1' or 'moving_mnist'")
    try:
      builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # unknown name, missing module, unprepared files: all one line for the user
      raise ValueError(f"config.data.tfds_name={name!r}: cannot load it from {data_dir} ({type(e).__name__}: {e})")
    if split not in builder.info.splits:
      raise ValueError(f"config.data.tfds_split={split!r}: {name} under {data_dir} has splits "
                       f"{sorted(builder.info.splits) or 'none (prepare it first with `tfds build`)'}")
    features = builder.info.features
    self.video_key = video_key or next((k for k, f in features.items() if _is_video(f)), "")
    if self.video_key not in features or not _is_video(features[self.video_key]):
      raise ValueError(f"config.data.video_key={video_key!r}: {name} has no such video feature; features: "
                       f"{ {k: type(f).__name__ for k, f in features.items()} }")
    self.caption_key = caption_key or next(
        (k for k, f in features.items() if isinstance(f, tfds.features.Text)),
        next((k for k, f in features.items() if isinstance(f, tfds.features.ClassLabel)), ""))
    caption_feature = features[self.caption_key] if self.caption_key in features else None
    if not isinstance(caption_feature, (tfds.features.Text, tfds.features.ClassLabel)):
      raise ValueError(f"config.data.caption_key={caption_key!r}: {name} needs a Text or ClassLabel feature for "
                       f"captions; features: { {k: type(f).__name__ for k, f in features.items()} }")
    self.class_names = caption_feature.names if isinstance(caption_feature, tfds.features.ClassLabel) else None
    self.name, self.split, self.source_fps = name, split, float(source_fps)
    self.source = builder.as_data_source(split)
    self._static_shape = tuple(features[self.video_key].shape)

  def _caption(self, record) -> str:
    value = record[self.caption_key]
    if self.class_names is not None:
      return class_name_to_caption(self.class_names[int(value)])
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)

  def index(self, progress: bool = True) -> tuple[list[video_files.MediaInfo], dict[str, str]]:
    """(MediaInfo per usable record, {record: reason} for the others). Sizes come from the feature's static
    shape when it has one, else from reading each record once."""
    items, skipped = [], {}
    static = None not in self._static_shape
    for i in tqdm.trange(len(self.source), desc=f"indexing {self.name}", disable=not progress, leave=False):
      path = f"{self.split}[{i}]"
      try:
        record = self.source[i]
        caption = self._caption(record)
      except (UnicodeDecodeError, IndexError, ValueError) as e:
        skipped[path] = f"unreadable record: {e}"
        continue
      t, h, w, _ = self._static_shape if static else np.shape(record[self.video_key])
      if not caption.strip():
        skipped[path] = "empty caption"
      elif t == 0:
        skipped[path] = "zero frames"
      else:
        items.append(video_files.MediaInfo(path, caption, int(w), int(h), self.source_fps, int(t)))
    return items, skipped

  def decode_clip(self, item: video_files.MediaInfo, num_frames: int, fps: float, size: tuple[int, int],
                  start: float = 0.0) -> np.ndarray:
    """Like video_files.decode_clip for one record: fps resampling (when the source fps is known), a clip
    starting at `start` of the slack, resize to cover `size` and center crop."""
    frames = np.asarray(self.source[int(item.path[len(self.split) + 1:-1])][self.video_key])
    if frames.shape[-1] == 1:
      frames = np.repeat(frames, 3, axis=-1)
    fps = fps if self.source_fps > 0 else 0.0  # an unknown source rate: frames as they are
    idx = video_files.source_frame_indices(num_frames, fps, self.source_fps, len(frames), start)
    return np.stack([video_files.resize_center_crop(frames[i], size) for i in idx])
