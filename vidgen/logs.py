"""What a user sees: vidgen's own lines and progress bars. Libraries (TFDS, orbax, grain) speak only with -v.

`quiet_libraries` is what the command line does by default; library users (Colab, tests) keep every log.
"""
from __future__ import annotations

import contextlib
import io
import logging as py_logging
import os

from absl import logging

_VIDGEN_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_quiet = False


class _VidgenOnly(py_logging.Filter):
  """Passes vidgen's records and every library's errors; drops the libraries' warnings (TFDS warns of its
  "custom data configuration" at every stage)."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    return record.levelno >= py_logging.ERROR or os.path.abspath(record.pathname).startswith(_VIDGEN_DIR)


def quiet_libraries():
  """Info lines off, and the libraries' warnings and prints (TFDS's progress bars too) hidden, for this process."""
  global _quiet
  if not _quiet:
    logging.set_verbosity(logging.WARNING)
    logging.get_absl_handler().addFilter(_VidgenOnly())
    import tensorflow_datasets as tfds  # here: only the command line pays for it before it needs it
    tfds.disable_progress_bar()
    _quiet = True


@contextlib.contextmanager
def library_output():
  """Within: what a library prints to stdout (TFDS's "Downloading and preparing dataset ...") is dropped when
  the libraries are quiet."""
  if not _quiet:
    yield
    return
  with contextlib.redirect_stdout(io.StringIO()):
    yield
