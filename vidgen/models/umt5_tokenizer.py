"""The UMT5 tokenizer (T5's sentencepiece unigram) and Wan's prompt cleaning, at parity with transformers.

Built from a checkpoint's tokenizer folder: `tokenizer.json` with the `tokenizers` package, else `spiece.model`
with `sentencepiece`. Either way the ids equal what transformers' AutoTokenizer gives for that folder, the way
diffusers' WanPipeline calls it: each prompt cleaned (`prompt_clean`), EOS (id 1) appended, padded with 0 to 512
tokens and truncated there (the content to 511 tokens, then EOS), with a warning naming the prompt's length.

tokenizer.json: for T5Tokenizer folders, transformers (5.x) does not run the file's pipeline as stored: it
rebuilds the Unigram model from the file's vocabulary (unk id 2, no byte fallback) with only the file's
precompiled sentencepiece normaliser, a whitespace split and a Metaspace pre-tokenizer that prefixes every chunk;
the same is done here, so an older tokenizer.json tokenizes as transformers tokenizes it today.
spiece.model: T5's added tokens (<pad>, </s>, <unk> and the <extra_id_N> sentinels, numbered after the pieces in
reverse) are matched in the raw text first, as transformers does, and sentencepiece encodes the text between them
with every Unicode whitespace run made one space (transformers splits words on all of them, sentencepiece on
spaces only).

Prompt cleaning is Wan's (and diffusers'): ftfy.fix_text, html.unescape twice, whitespace runs to one space. Without
the `ftfy` package it runs without fix_text, as diffusers does, after a one-time warning: mojibake, curly quotes,
ligatures and full-width letters then reach the tokenizer as they are.
"""
from __future__ import annotations

import html
import json
import os
import re

from absl import logging
import numpy as np

MAX_LENGTH = 512  # Wan's text_len: the reference pipeline pads and truncates every prompt to it
PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
T5_EXTRA_IDS = 100  # transformers' T5Tokenizer default, when tokenizer_config.json does not say
T5_CLASSES = ("T5Tokenizer", "T5TokenizerFast", "MT5Tokenizer", "MT5TokenizerFast")

# diffusers' whitespace_clean matches `regex`'s \s (Unicode White_Space); Python's \s also matches U+001C..U+001F.
_WHITESPACE = re.compile(r"[^\S\x1c-\x1f]+")
_warned_ftfy = False


def _fix_text(text: str) -> str:
  global _warned_ftfy
  try:
    import ftfy
  except ImportError:
    if not _warned_ftfy:
      logging.warning("ftfy is not installed: prompts are cleaned without ftfy.fix_text (as diffusers does without "
                      "it), so text with mojibake, curly quotes or full-width letters tokenizes unlike Wan's "
                      "reference: pip install ftfy")
      _warned_ftfy = True
    return text
  return ftfy.fix_text(text)


def basic_clean(text: str) -> str:
  return html.unescape(html.unescape(_fix_text(text))).strip()


def whitespace_clean(text: str) -> str:
  return _WHITESPACE.sub(" ", text).strip()


def prompt_clean(text: str) -> str:
  """Wan's prompt cleaning (wan/modules/tokenizers.py, diffusers' pipeline_wan.prompt_clean)."""
  return whitespace_clean(basic_clean(text))


def _t5_tokenizer_json(path: str, tokenizer_class: str | None):
  import tokenizers
  with open(path, encoding="utf-8") as f:
    spec = json.load(f)
  model = spec.get("model") or {}
  if (tokenizer_class is None or tokenizer_class in T5_CLASSES) and model.get("type") == "Unigram":
    normalizer = spec.get("normalizer")
    parts = normalizer.get("normalizers", []) if normalizer and normalizer.get("type") == "Sequence" else [normalizer]
    spec["normalizer"] = next((n for n in parts if n and n.get("type") == "Precompiled"), None)
    spec["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "WhitespaceSplit"},
        {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True}]}
    model.update(unk_id=UNK_ID, byte_fallback=False)
  spec.update(post_processor=None, truncation=None, padding=None)
  tok = tokenizers.Tokenizer.from_str(json.dumps(spec))
  return lambda text: tok.encode(text, add_special_tokens=False).ids, tok.get_vocab_size(with_added_tokens=True)


def _sentencepiece(path: str, extra_ids: int):
  import sentencepiece
  sp = sentencepiece.SentencePieceProcessor(model_file=path)
  size = sp.get_piece_size()
  special = {sp.id_to_piece(i): i for i in (sp.pad_id(), sp.eos_id(), sp.unk_id()) if i >= 0}
  special.update({f"<extra_id_{n}>": size + extra_ids - 1 - n for n in range(extra_ids)})
  splitter = re.compile("(" + "|".join(re.escape(s) for s in sorted(special, key=len, reverse=True)) + ")")

  def encode(text):
    ids = []
    for i, part in enumerate(splitter.split(text)):
      # transformers splits on Unicode whitespace before its unigram; sentencepiece splits on spaces only.
      ids.extend([special[part]] if i % 2 else sp.encode(_WHITESPACE.sub(" ", part)) if part else [])
    return ids

  return encode, size + extra_ids


class UMT5Tokenizer:
  """Prompts -> (ids int32 [B, max_length], mask bool [B, max_length]) as Wan's pipeline tokenizes them."""

  def __init__(self, encode, vocab_size: int, source: str, max_length: int = MAX_LENGTH):
    if max_length < 1:
      raise ValueError(f"max_length={max_length}: must be >= 1")
    self._encode = encode
    self.vocab_size = vocab_size  # pieces and added tokens (the model's embedding may be larger: UMT5 pads it)
    self.source = source
    self.max_length = max_length

  @classmethod
  def from_folder(cls, path: str, max_length: int = MAX_LENGTH) -> "UMT5Tokenizer":
    """A tokenizer folder (tokenizer.json and/or spiece.model, maybe tokenizer_config.json), or one such file."""
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    config = {}
    if os.path.exists(os.path.join(folder, "tokenizer_config.json")):
      with open(os.path.join(folder, "tokenizer_config.json"), encoding="utf-8") as f:
        config = json.load(f)
    tokenizer_json = path if path.endswith(".json") else os.path.join(folder, "tokenizer.json")
    spiece = path if path.endswith(".model") else os.path.join(folder, "spiece.model")
    if not path.endswith(".model") and os.path.exists(tokenizer_json):
      encode, size = _t5_tokenizer_json(tokenizer_json, config.get("tokenizer_class"))
      return cls(encode, size, tokenizer_json, max_length)
    if os.path.exists(spiece):
      encode, size = _sentencepiece(spiece, int(config.get("extra_ids", T5_EXTRA_IDS)))
      return cls(encode, size, spiece, max_length)
    raise FileNotFoundError(f"{path}: no tokenizer.json or spiece.model (a UMT5 checkpoint's tokenizer folder)")

  def tokenize(self, text: str) -> list[int]:
    """The ids of already-cleaned text, EOS appended, not truncated or padded."""
    return self._encode(text) + [EOS_ID]

  def encode(self, text: str, clean: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(ids int32 [max_length], mask bool [max_length]) of one prompt."""
    cleaned = prompt_clean(text) if clean else text
    ids = self.tokenize(cleaned)
    if len(ids) > self.max_length:
      logging.warning("Prompt has %d tokens (with EOS), more than the text encoder's %d: truncated to its first %d "
                      "and EOS: %r", len(ids), self.max_length, self.max_length - 1, cleaned[:200])
      ids = ids[: self.max_length - 1] + [EOS_ID]
    out = np.full((self.max_length,), PAD_ID, np.int32)
    out[: len(ids)] = ids
    mask = np.zeros((self.max_length,), bool)
    mask[: len(ids)] = True
    return out, mask

  def __call__(self, texts, clean: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(ids int32 [B, max_length], mask bool [B, max_length]) of a prompt or a list of prompts."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
      return np.zeros((0, self.max_length), np.int32), np.zeros((0, self.max_length), bool)
    pairs = [self.encode(t, clean) for t in texts]
    return (np.stack([p[0] for p in pairs]).reshape(len(texts), self.max_length),
            np.stack([p[1] for p in pairs]).reshape(len(texts), self.max_length))
