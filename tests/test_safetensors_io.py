"""Reading public checkpoints: one file, a sharded set with its index, and the one-line refusals."""
import json

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

from vidgen.weights import safetensors_io


def _sharded(tmp_path):
  a = {"x.weight": np.arange(6, dtype=np.float32).reshape(2, 3)}
  b = {"y.weight": np.ones(4, ml_dtypes.bfloat16)}
  save_file(a, str(tmp_path / "model-00001-of-00002.safetensors"))
  save_file(b, str(tmp_path / "model-00002-of-00002.safetensors"))
  index = {"metadata": {}, "weight_map": {"x.weight": "model-00001-of-00002.safetensors",
                                          "y.weight": "model-00002-of-00002.safetensors"}}
  (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
  return a, b


def test_a_sharded_folder_reads_tensor_by_tensor(tmp_path):
  a, b = _sharded(tmp_path)
  files = safetensors_io.TensorFiles(str(tmp_path))
  assert files.keys() == ["x.weight", "y.weight"] and files.shape("x.weight") == (2, 3)
  np.testing.assert_array_equal(files.read("x.weight"), a["x.weight"])
  assert files.read("y.weight").dtype == ml_dtypes.bfloat16


@pytest.mark.parametrize("damage, message", [
    ("missing_shard", "shard model-00002-of-00002.safetensors is missing .*holds y.weight"),
    ("pickle", r"is a PyTorch pickle, which vidgen never loads.*vidgen.weights.convert_pth"),
    ("garbage", "not a readable safetensors file"),
    ("empty", "expected one .safetensors file or one .safetensors.index.json, found 0 and 0"),
])
def test_bad_checkpoints_fail_in_one_line(tmp_path, damage, message):
  path = tmp_path
  if damage == "missing_shard":
    _sharded(tmp_path)
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
  elif damage == "pickle":
    path = tmp_path / "Wan2.1_VAE.pth"
    path.write_bytes(b"\x80\x04not loaded")
  elif damage == "garbage":
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
  with pytest.raises(safetensors_io.WeightsError, match=message) as e:
    safetensors_io.TensorFiles(str(path))
  assert "\n" not in str(e.value)
