"""Frame conditioning: one mechanism for image-to-video, extending, connecting and editing.

The DiT reads [x_t, c * m, m] on its channels (in_dim = 2 z_dim + 1): the noisy latent, the known latent
frames c (zeros elsewhere) and the mask m, 1 on known latent frames. Training draws a task per example
(TASKS) and so learns every kind of known frames at once; sampling passes the same known frames to both
classifier-free guidance branches and writes them back into the result (they come back as given).

The mask is per latent frame. With a causal VAE, latent frame 0 encodes pixel frame 0 alone and frame
j >= 1 encodes pixel frames tc (j - 1) + 1 ... tc j, so "the first 1 + tc (k - 1) frames of a video" are
exactly "the first k latent frames": an image is latent frame 0, and a clip continues from the latents of
its predecessor's last frames re-encoded as a new clip's start.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# none: text only; first: frame 0 (an image); prefix: the first k frames (extend forward); suffix: the last k
# (extend backward, a connection's end); ends: the first and last k (connect two videos). 1 <= k < T.
TASKS = ("none", "first", "prefix", "suffix", "ends")


def channels(z_dim: int) -> int:
  """The DiT's input channels with frame conditioning."""
  return 2 * z_dim + 1


def dit_in_dim(config) -> int:
  """The DiT's input channels for a vidgen config: z_dim, or channels(z_dim) with dit.frame_conditioning."""
  z = config.vae.z_dim
  return channels(z) if config.dit.get("frame_conditioning", False) else z


def model_input(x_t, cond, mask):
  """[B, T, h, w, 2 z + 1] from x_t, cond [B, T, h, w, z] and mask [B, T] (1 on known frames)."""
  m = mask.astype(x_t.dtype)[:, :, None, None, None]
  m_channel = jnp.broadcast_to(m, x_t.shape[:-1] + (1,))
  return jnp.concatenate([x_t, cond.astype(x_t.dtype) * m, m_channel], axis=-1)


def parse_task_weights(spec: str) -> dict[str, float]:
  """'none:0.4,first:0.2,...' -> weights by task; raises ValueError naming what is wrong."""
  weights = {}
  for item in str(spec).split(","):
    name, sep, value = item.strip().partition(":")
    if not sep or name not in TASKS:
      raise ValueError(f"{item.strip()!r}: entries are TASK:WEIGHT with TASK one of {TASKS}")
    try:
      weights[name] = float(value)
    except ValueError:
      raise ValueError(f"{item.strip()!r}: the weight must be a number") from None
    if weights[name] < 0:
      raise ValueError(f"{item.strip()!r}: weights must be >= 0")
  if sum(weights.values()) <= 0:
    raise ValueError(f"{spec!r}: at least one task needs a positive weight")
  return weights


def sample_masks(rng, batch: int, num_frames: int, weights: dict[str, float]):
  """float32 [batch, num_frames]: a task per example drawn with `weights`, k uniform in [1, T - 1]
  (for 'ends', the first and last k with 2 k < T). A one-frame clip (an image) is always 'none'."""
  if num_frames < 2:
    return jnp.zeros((batch, num_frames), jnp.float32)
  r_task, r_k = jax.random.split(rng)
  logits = jnp.log(jnp.asarray([weights.get(name, 0.0) for name in TASKS], jnp.float32))
  task = jax.random.categorical(r_task, logits, shape=(batch,))[:, None]
  u = jax.random.uniform(r_k, (batch, 1))
  k = 1 + jnp.floor(u * (num_frames - 1)).astype(jnp.int32)  # 1 .. T - 1
  k_ends = 1 + jnp.floor(u * ((num_frames - 1) // 2)).astype(jnp.int32)  # 2 k < T when T >= 3
  j = jnp.arange(num_frames)[None]
  ends = (j < k_ends) | (j >= num_frames - k_ends) if num_frames >= 3 else j == 0
  masks = jnp.stack([jnp.broadcast_to(m, (batch, num_frames))
                     for m in (j < 0, j == 0, j < k, j >= num_frames - k, ends)])  # order of TASKS
  return masks[task[:, 0], jnp.arange(batch)].astype(jnp.float32)

def known(num_frames: int, first: int = 0, last: int = 0) -> np.ndarray:
  """float32 [num_frames]: 1 on the first `first` and the last `last` latent frames."""
  if first + last >= num_frames:
    raise ValueError(f"{first} + {last} known latent frames leave nothing to generate in {num_frames}")
  m = np.zeros(num_frames, np.float32)
  m[:first] = 1.0
  if last:
    m[num_frames - last:] = 1.0
  return m
