"""A hashed word tokenizer: any text in, fixed-length ids out, no vocabulary file.

Words (lower-cased runs of letters, digits and apostrophes) map to buckets by CRC32, which is
stable across processes and machines (unlike Python's `hash`). Word-level ids let a small text
encoder trained jointly with the DiT learn attributes such as "red" or "left" in a few thousand
steps; collisions are rare at a few thousand buckets for a small vocabulary.
"""
from __future__ import annotations

import re
import zlib

from absl import logging
import numpy as np

PAD_ID = 0
_NUM_RESERVED = 1
_WORD = re.compile(r"[a-z0-9']+")


class HashedWordTokenizer:
  """Maps text to `max_length` int32 ids and a validity mask; pads with PAD_ID."""

  def __init__(self, vocab_size: int = 4096, max_length: int = 32):
    if vocab_size <= _NUM_RESERVED + 1:
      raise ValueError(f"text.vocab_size={vocab_size}: must be > {_NUM_RESERVED + 1}")
    if max_length < 1:
      raise ValueError(f"text.max_length={max_length}: must be >= 1")
    self.vocab_size = vocab_size
    self.max_length = max_length

  def words(self, text: str) -> list[str]:
    return _WORD.findall(text.lower())

  def word_id(self, word: str) -> int:
    return _NUM_RESERVED + zlib.crc32(word.encode("utf-8")) % (self.vocab_size - _NUM_RESERVED)

  def encode(self, text: str) -> tuple[np.ndarray, np.ndarray]:
    """Returns (ids int32[max_length], mask bool[max_length]). The empty text is all padding."""
    words = self.words(text)
    if len(words) > self.max_length:
      logging.warning("Prompt has %d words; truncated to text.max_length=%d: %r",
                      len(words), self.max_length, text)
      words = words[: self.max_length]
    ids = np.full((self.max_length,), PAD_ID, np.int32)
    ids[: len(words)] = [self.word_id(w) for w in words]
    return ids, ids != PAD_ID

  def encode_batch(self, texts) -> tuple[np.ndarray, np.ndarray]:
    pairs = [self.encode(t) for t in texts]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
