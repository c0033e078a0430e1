"""vidgen/atomic_files.py: files written whole or not at all."""
import json
import os

import numpy as np
import pytest

from tests import test_imports
from vidgen import atomic_files


def test_write_json_writes_whole_the_bytes_json_dump_writes(tmp_path):
  obj = {"b": [1, 2.5, None, True], "a": {"x": "é", "nan": float("nan")}}
  for kwargs in ({}, {"indent": 1}, {"indent": 2, "sort_keys": True}):
    path = str(tmp_path / "out.json")
    atomic_files.write_json(path, obj, **kwargs)
    with open(tmp_path / "ref.json", "w") as f:
      json.dump(obj, f, **kwargs)
    assert (tmp_path / "out.json").read_bytes() == (tmp_path / "ref.json").read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["out.json", "ref.json"]  # no .partial left behind


def test_an_exception_while_serialising_leaves_the_old_file_and_no_partial(tmp_path):
  path = tmp_path / "report.json"
  path.write_text('{"old": 1}')
  with pytest.raises(TypeError):
    atomic_files.write_json(str(path), {"a": [1, 2, 3], "b": object()}, indent=1)  # fails after writing "a"
  assert path.read_text() == '{"old": 1}'
  assert os.listdir(tmp_path) == ["report.json"]
  with pytest.raises(TypeError):
    atomic_files.write_json(str(tmp_path / "new.json"), object())
  assert os.listdir(tmp_path) == ["report.json"]


def test_partial_path_renames_on_success_and_removes_on_error(tmp_path):
  path = str(tmp_path / "cache.npz")
  with atomic_files.partial_path(path, suffix=".partial.npz") as tmp:
    assert tmp == path + ".partial.npz"
    np.savez(tmp, x=np.arange(3))
  np.testing.assert_array_equal(np.load(path)["x"], np.arange(3))
  before = open(path, "rb").read()
  with pytest.raises(RuntimeError):
    with atomic_files.partial_path(path, suffix=".partial.npz") as tmp:
      np.savez(tmp, x=np.arange(5))
      raise RuntimeError("crashed mid-write")
  assert open(path, "rb").read() == before
  assert os.listdir(tmp_path) == ["cache.npz"]
  with pytest.raises(RuntimeError):  # nothing written yet: no partial file to remove is fine
    with atomic_files.partial_path(str(tmp_path / "other")):
      raise RuntimeError
  assert os.listdir(tmp_path) == ["cache.npz"]


def test_it_imports_nothing_from_vidgen():
  assert test_imports.import_graph(test_imports.PACKAGE)["vidgen.atomic_files"] == set()
