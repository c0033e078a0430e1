"""Text encoder + DiT as one module: the denoiser that the DiT trainer optimises jointly.

`encode_text` runs once per prompt batch; `velocity` runs once per sampler step.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from vidgen.models import dit as dit_lib
from vidgen.models import text as text_lib


class TextToVideo(nn.Module):
  text_kwargs: dict
  dit_kwargs: dict
  dtype: Any = jnp.float32

  def setup(self):
    self.text = text_lib.TextEncoder(dtype=self.dtype, **self.text_kwargs)
    self.dit = dit_lib.DiT(dtype=self.dtype, **self.dit_kwargs)

  def encode_text(self, ids):
    return self.text(ids)

  def velocity(self, x_t, t, context, context_mask, pooled):
    return self.dit(x_t, t, context, context_mask, pooled)

  def __call__(self, x_t, t, ids):
    context, mask, pooled = self.text(ids)
    return self.dit(x_t, t, context, mask, pooled)
