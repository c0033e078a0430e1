"""Users' media folders: scanning (captions, probing, bad files), clip decoding and resampling."""
from __future__ import annotations

import os

import numpy as np
import pytest

from tests import media_fixtures
from vidgen.data import video_files as vf
from vidgen.video_io import read_video


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("media"))
  return root, media_fixtures.write_media_folder(root)


@pytest.fixture(scope="module")
def scanned(folder):
  root, written = folder
  return vf.scan_folder(root, written["manifest"], progress=False)


def nearest_reference(clip: np.ndarray, reference: np.ndarray) -> list[int]:
  """For each clip frame, the index of the most similar reference frame."""
  diff = np.abs(clip[:, None].astype(np.int16) - reference[None].astype(np.int16)).mean(axis=(2, 3, 4))
  return diff.argmin(axis=1).tolist()


# ---------------------------------------------------------------------------------------------
# scan_folder


def test_scan_finds_exactly_the_good_files(folder, scanned):
  _, written = folder
  media, _ = scanned
  assert [m.path for m in media] == sorted(written["good"])
  for m in media:
    width, height, fps, num_frames, caption = written["good"][m.path]
    assert (m.width, m.height, m.caption) == (width, height, caption), m
    assert m.fps == pytest.approx(fps, rel=1e-3), m
    assert abs(m.num_frames - num_frames) <= 1, m
    assert m.is_image == (fps == 0)
    assert m.duration == pytest.approx(num_frames / fps if fps else 0.0, abs=1.5 / max(fps, 1))


def test_scan_is_deterministic(folder, scanned):
  root, written = folder
  assert vf.scan_folder(root, written["manifest"], progress=False) == scanned


def test_scan_captions_from_sidecar_and_manifest(folder):
  root, written = folder
  media, skipped = vf.scan_folder(root, progress=False)  # without the manifest
  paths = [m.path for m in media]
  assert "wide.mp4" in paths and "sub/nested.mp4" in paths
  assert skipped["square.mov"] == "missing caption" and skipped["anim.gif"] == "missing caption"
  # A manifest caption wins over a sidecar.
  manifest = os.path.join(root, "override.csv")
  with open(manifest, "w") as f:
    f.write("Video,Prompt\nwide.mp4,from the csv\n")
  try:
    media, _ = vf.scan_folder(root, manifest, progress=False)
  finally:
    os.remove(manifest)
  assert {m.path: m.caption for m in media}["wide.mp4"] == "from the csv"


def test_scan_reports_each_bad_file(folder, scanned):
  _, written = folder
  media, skipped = scanned
  for rel, expected in {**written["bad"], **written["bad_lines"]}.items():
    assert rel in skipped, f"{rel} not reported; skipped: {skipped}"
    assert expected in skipped[rel], (rel, skipped[rel])
  # Sidecars, the manifest and other non-media files are ignored silently.
  assert set(skipped) == set(written["bad"]) | set(written["bad_lines"])
  assert not {m.path for m in media} & set(written["bad"])


def test_probe_reasons(folder):
  root, _ = folder
  assert vf.probe(os.path.join(root, "wide.mp4")) == (64, 36, 24.0, 24)
  assert vf.probe(os.path.join(root, "tall.webm"))[3] == 30  # webm has no count: packets counted
  for name, reason in [("empty.mp4", "empty file (0 bytes)"), ("corrupt.mp4", "cannot open: "),
                       ("unsupported.mov", "unsupported codec")]:
    with pytest.raises(vf.MediaError) as e:
      vf.probe(os.path.join(root, name))
    assert str(e.value).startswith(reason), str(e.value)


def test_truncated_faststart_opens_but_fails_to_decode_its_tail(tmp_path):
  path = str(tmp_path / "cut.mp4")
  media_fixtures.write_truncated_faststart(path)
  width, height, _, num_frames = vf.probe(path)  # the header is intact
  assert (width, height, num_frames) == (64, 36, 24)
  assert vf.decode_clip(path, 2, 8, (36, 64)).shape == (2, 36, 64, 3)
  with pytest.raises(vf.MediaError) as e:
    vf.decode_clip(path, 4, 8, (36, 64), start=1.0)
  assert path in str(e.value) and e.value.reason.startswith(("corrupt", "truncated")), str(e.value)


def test_missing_and_empty_roots(tmp_path):
  missing = str(tmp_path / "nope")
  with pytest.raises(ValueError, match="media folder not found: .*nope"):
    vf.scan_folder(missing, progress=False)
  empty = tmp_path / "empty"
  empty.mkdir()
  (empty / "clip.txt").write_text("a caption without a clip")
  with pytest.raises(ValueError) as e:
    vf.scan_folder(str(empty), progress=False)
  assert str(empty) in str(e.value) and ".mp4" in str(e.value) and ".png" in str(e.value)


# ---------------------------------------------------------------------------------------------
# read_captions


def test_read_captions_jsonl(folder):
  root, written = folder
  captions, skipped = vf.read_captions(root, written["manifest"])
  assert captions == {"square.mov": written["good"]["square.mov"][4],  # relative path
                      "anim.gif": written["good"]["anim.gif"][4],  # absolute path inside root
                      "missing.mp4": "gone"}
  assert set(skipped) == set(written["bad_lines"])
  assert vf.read_captions(root) == ({}, {})
  assert vf.read_captions(root, "captions.jsonl")[0] == captions  # found under root


def test_read_captions_csv_and_errors(tmp_path):
  root = str(tmp_path)
  (tmp_path / "ok.csv").write_text('file,caption\na.mp4,"one, with a comma"\n../out.mp4,outside\n'
                                   'a.mp4,again\nb.mp4\n', encoding="utf-8")
  captions, skipped = vf.read_captions(root, str(tmp_path / "ok.csv"))
  assert captions == {"a.mp4": "one, with a comma"}
  assert "outside" in skipped["ok.csv:3"] and "line 2" in skipped["ok.csv:4"] and "no caption" in skipped["ok.csv:5"]
  (tmp_path / "cols.csv").write_text("name,description\na.mp4,x\n")
  with pytest.raises(ValueError, match="path column .* caption column"):
    vf.read_captions(root, str(tmp_path / "cols.csv"))
  with pytest.raises(ValueError, match="manifest not found"):
    vf.read_captions(root, str(tmp_path / "missing.jsonl"))
  (tmp_path / "m.json").write_text("{}")
  with pytest.raises(ValueError, match="allowed"):
    vf.read_captions(root, str(tmp_path / "m.json"))
  (tmp_path / "bad.jsonl").write_text('{"name": "a.mp4"}\n[1]\n')
  with pytest.raises(ValueError, match="no usable entries"):
    vf.read_captions(root, str(tmp_path / "bad.jsonl"))


# ---------------------------------------------------------------------------------------------
# Resampling and decode_clip


def test_source_frame_indices():
  assert vf.source_frame_indices(8, 8, 24, 24).tolist() == [0, 3, 6, 9, 12, 15, 18, 21]
  assert vf.source_frame_indices(4, 8, 24, 24, start=0.0).tolist() == [0, 3, 6, 9]
  assert vf.source_frame_indices(4, 8, 24, 24, start=1.0).tolist() == [12, 15, 18, 21]
  assert vf.source_frame_indices(6, 24, 12, 12).tolist() == [0, 0, 1, 1, 2, 2]  # upsampled: repeats
  assert vf.source_frame_indices(3, 0, 24, 24, start=1.0).tolist() == [21, 22, 23]  # source rate
  assert vf.source_frame_indices(8, 8, 24, 23).tolist()[-1] == 21  # within half a frame: allowed
  with pytest.raises(vf.MediaError, match=r"too short: needs 9 frames at 8 fps \(1.125 s\), has 1.000 s"):
    vf.source_frame_indices(9, 8, 24, 24)
  with pytest.raises(vf.MediaError, match="too short"):
    vf.source_frame_indices(25, 0, 24, 24)


@pytest.mark.parametrize("name,num_frames,fps", [
    ("wide.mp4", 8, 8), ("wide.mp4", 4, 8), ("wide.mp4", 5, 0), ("wide.mp4", 30, 30),
    ("tall.webm", 10, 10), ("tall.webm", 6, 12), ("square.mov", 12, 24), ("anim.gif", 3, 5)])
def test_decode_clip_picks_the_resampled_frames(folder, name, num_frames, fps):
  root, _ = folder
  path = os.path.join(root, name)
  reference, source_fps = read_video(path)
  firsts = []
  for start in (0.0, 0.4, 1.0):
    clip = vf.decode_clip(path, num_frames, fps, reference.shape[1:3], start)
    assert clip.shape == (num_frames, *reference.shape[1:]) and clip.dtype == np.uint8
    expected = vf.source_frame_indices(num_frames, fps, source_fps, len(reference), start).tolist()
    assert nearest_reference(clip, reference) == expected, (start, expected)
    assert np.abs(clip.astype(int) - reference[expected].astype(int)).mean() < 2
    firsts.append(expected[0])
  slack = len(reference) / source_fps - num_frames / (fps if fps > 0 else source_fps)
  assert (firsts[0] != firsts[-1]) == (slack > 1 / source_fps)  # start 0 vs 1 differ when there is room


def test_decode_clip_crops_to_any_aspect(folder):
  root, _ = folder
  wide = vf.decode_clip(os.path.join(root, "wide.mp4"), 4, 8, (32, 32))  # 16:9 -> 1:1
  tall = vf.decode_clip(os.path.join(root, "tall.webm"), 4, 8, (18, 32))  # 9:16 -> 16:9
  gif = vf.decode_clip(os.path.join(root, "anim.gif"), 2, 0, (20, 20))
  assert wide.shape == (4, 32, 32, 3) and tall.shape == (4, 18, 32, 3) and gif.shape == (2, 20, 20, 3)
  assert wide.dtype == tall.dtype == gif.dtype == np.uint8


def test_decode_clip_applies_rotation(folder):
  root, _ = folder
  path = os.path.join(root, "rotated.mp4")
  stored, _ = read_video(path)  # as stored: 64x36, not rotated
  clip = vf.decode_clip(path, 8, 0, (64, 36))
  assert np.abs(clip.astype(int) - np.rot90(stored, 1, axes=(1, 2)).astype(int)).mean() < 2


def test_decode_clip_errors_name_the_file(folder):
  root, _ = folder
  wide = os.path.join(root, "wide.mp4")
  with pytest.raises(vf.MediaError) as e:
    vf.decode_clip(wide, 25, 24, (36, 64))
  assert str(e.value) == f"{wide}: too short: needs 25 frames at 24 fps (1.042 s), has 1.000 s"
  assert e.value.reason.startswith("too short")
  for name, reason in [("unsupported.mov", "unsupported codec"), ("corrupt.mp4", "cannot open"),
                       ("nothere.mp4", "cannot open")]:
    with pytest.raises(vf.MediaError, match=f"{name}: {reason}"):
      vf.decode_clip(os.path.join(root, name), 2, 8, (16, 16))
  with pytest.raises(ValueError, match="start must be a fraction"):
    vf.decode_clip(wide, 2, 8, (16, 16), start=1.5)


def test_decode_clip_images(folder):
  root, _ = folder
  still = vf.decode_clip(os.path.join(root, "still.png"), 1, 8, (30, 50))  # RGBA
  assert still.shape == (1, 30, 50, 3) and still.dtype == np.uint8
  assert (still[0, :, :10] == 255).all()  # the transparent edge is flattened onto white
  assert (still[0, :, 12:] == (200, 0, 0)).all()
  photo = vf.decode_clip(os.path.join(root, "photo.jpg"), 1, 0, (16, 16))
  assert photo.shape == (1, 16, 16, 3)
  with pytest.raises(vf.MediaError, match="still.png: an image gives 1 frame, 4 asked"):
    vf.decode_clip(os.path.join(root, "still.png"), 4, 8, (16, 16))


def test_images_of_any_mode(tmp_path):
  from PIL import Image
  gray = tmp_path / "gray.png"
  Image.fromarray(np.full((10, 20), 77, np.uint8), "L").save(gray)
  Image.fromarray(np.zeros((10, 20), np.uint8), "L").convert("P").save(tmp_path / "pal.bmp")
  assert vf.probe(str(gray)) == (20, 10, 0.0, 1)
  assert (vf.decode_clip(str(gray), 1, 0, (10, 20)) == 77).all()
  assert (vf.decode_clip(str(tmp_path / "pal.bmp"), 1, 0, (5, 5)) == 0).all()
  deep = tmp_path / "deep.png"  # 16-bit greyscale: scaled to 8 bits, not clipped to white
  Image.fromarray(np.full((4, 4), 32768, np.uint16)).save(deep)
  assert (vf.decode_clip(str(deep), 1, 0, (4, 4)) == 128).all()
  (tmp_path / "junk.jpg").write_bytes(b"not a jpeg")
  with pytest.raises(vf.MediaError, match="cannot open"):
    vf.probe(str(tmp_path / "junk.jpg"))


# ---------------------------------------------------------------------------------------------
# resize_center_crop


def test_resize_center_crop_keeps_the_center():
  frame = np.zeros((30, 90, 3), np.uint8)
  frame[:, :30] = (0, 255, 0)
  frame[:, 30:60] = (255, 0, 0)
  frame[:, 60:] = (0, 0, 255)
  assert (vf.resize_center_crop(frame, (30, 30)) == (255, 0, 0)).all()  # crop only
  down = vf.resize_center_crop(frame, (10, 10))
  assert down.shape == (10, 10, 3) and (down == (255, 0, 0)).all()  # box filter: no bleed
  up = vf.resize_center_crop(frame, (60, 60))
  assert up.shape == (60, 60, 3) and (up[:, 2:-2] == (255, 0, 0)).all()
  # Tall frame to a wide size: the top and bottom are cut.
  tall = np.zeros((90, 30, 3), np.uint8)
  tall[30:60] = 255
  crop = vf.resize_center_crop(tall, (10, 30))
  assert crop.shape == (10, 30, 3) and (crop == 255).all()
  assert vf.resize_center_crop(frame, (30, 90)) is not None and (vf.resize_center_crop(frame, (30, 90)) == frame).all()
  with pytest.raises(ValueError, match="uint8"):
    vf.resize_center_crop(frame.astype(np.float32), (10, 10))


@pytest.mark.parametrize("rotation", [None, 90])
@pytest.mark.parametrize("size", [(12, 20), (20, 12), (40, 72)])  # down to 16:9 and 9:16, up
def test_video_frames_scale_in_ffmpeg_like_images_in_pil(tmp_path, rotation, size):
  """Video frames are scaled by FFmpeg straight from YUV (fast); images by PIL (exact sub-pixel
  crop). Both cover the size and keep the center: they differ by at most a half-pixel shift."""
  y, x = np.mgrid[:36, :64]  # red ramps along x, green along y: a wrong turn or flip shows at once
  ramps = np.stack([x * 4, y * 7, np.full_like(x, 128)], axis=-1).astype(np.uint8)
  path = os.path.join(tmp_path, "v.mp4")
  media_fixtures.write_h264(path, np.repeat(ramps[None], 3, axis=0), 8, rotation=rotation)
  import av
  with av.open(path) as container:
    frame = next(container.decode(video=0))
  fast = vf._frame_array(frame, size)
  exact = vf.resize_center_crop(np.asarray(vf._frame_image(frame)), size)
  assert fast.shape == exact.shape == (*size, 3)
  assert np.abs(fast.astype(np.int16) - exact).mean() < 4
