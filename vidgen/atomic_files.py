"""Files written whole or not at all: a crash or an exception mid-write never leaves a half-written file under the
final name (readers, resumes and caches keyed by a file would otherwise trust a truncated one).

Each writer writes PATH.partial beside PATH and renames it over PATH (os.replace: atomic on one filesystem); on an
exception the partial file is removed and a PATH already there is left as it was. Imports nothing from vidgen.
"""
from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Iterator


@contextlib.contextmanager
def partial_path(path: str, suffix: str = ".partial") -> Iterator[str]:
  """Yields PATH + SUFFIX for the caller to write; renamed to PATH when the block ends without an exception,
  removed when it raises. SUFFIX lets writers that insist on an extension keep one (np.savez: '.partial.npz')."""
  tmp = path + suffix
  try:
    yield tmp
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise
  os.replace(tmp, path)


def write_json(path: str, obj: Any, **json_kwargs) -> None:
  """json.dump(obj, file, **json_kwargs) into PATH, whole or not at all (the bytes json.dump writes, nothing
  added: no trailing newline)."""
  with partial_path(path) as tmp, open(tmp, "w") as f:
    json.dump(obj, f, **json_kwargs)
