"""Frame conditioning: one mechanism for image-to-video, extending, interpolating, connecting and editing.

Known frames are given in pixels, with a mask over the F = 1 + tc (T - 1) frames of a clip. The DiT reads
[x_t, mask, y] on its channels, Wan 2.1's image-to-video layout (in_dim = 2 z + tc, 36 for Wan's z = 16, tc = 4):
- mask: tc channels per latent frame, the pixel frames that latent frame encodes (frame 0's mask fills all tc
  channels of latent frame 0, which encodes frame 0 alone; latent frame j >= 1 encodes frames tc (j-1)+1 .. tc j);
- y: the normalised VAE encoding of the clip with unknown frames blanked (0 in the VAE's [-1, 1] input space).
So a keyframe may sit at any frame, not only where a latent frame starts. Training draws a mask per example
(MASKS: which frames are known, the training-side counterpart of the user tasks in vidgen/tasks.py) and learns
every kind of known frames at once; the loss covers every frame.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

# Kinds of known-frame masks. none: text only; first: frame 0 (an image); prefix: the first k frames (extend
# forward); suffix: the last k (extend backward); ends: the first and last k (connect two videos, interpolate
# between two keyframes); keyframes: a random set of frames (interpolation). 1 <= k < F.
MASKS = ("none", "first", "prefix", "suffix", "ends", "keyframes")


def channels(z_dim: int, temporal_compression: int) -> int:
  """The DiT's input channels with frame conditioning: x_t, the mask and y."""
  return 2 * z_dim + temporal_compression


def latent_mask(frame_mask, tc: int):
  """[B, T, tc] of a pixel-frame mask [B, 1 + tc (T - 1)]: frame 0 repeated tc times, then groups of tc."""
  frame_mask = jnp.asarray(frame_mask, jnp.float32)
  first = jnp.repeat(frame_mask[:, :1], tc, axis=1)
  full = jnp.concatenate([first, frame_mask[:, 1:]], axis=1)
  return full.reshape(frame_mask.shape[0], -1, tc)


def known_prefix(frame_mask, tc: int):
  """[B, T] bool: latent frames whose frames and every frame before them are known. A causal VAE encodes them
  exactly as in y, so sampling writes them back (an i2v first frame comes back as the VAE round trip)."""
  prefix = jnp.cumprod(jnp.asarray(frame_mask, jnp.float32), axis=1)
  return latent_mask(prefix, tc).min(axis=-1) > 0


def model_input(x_t, y, mask):
  """[B, T, h, w, 2 z + tc]: x_t and y [B, T, h, w, z] with the latent mask [B, T, tc] (see latent_mask)."""
  m = jnp.broadcast_to(mask.astype(x_t.dtype)[:, :, None, None, :], x_t.shape[:-1] + (mask.shape[-1],))
  return jnp.concatenate([x_t, m, y.astype(x_t.dtype)], axis=-1)


def blank_unknown(video, frame_mask):
  """The VAE input of y: video [B, F, H, W, C] in [-1, 1] with unknown frames set to 0."""
  return video * jnp.asarray(frame_mask, video.dtype)[:, :, None, None, None]


def parse_mask_weights(spec: str) -> dict[str, float]:
  """'none:0.4,first:0.2,...' -> weights by mask kind; raises ValueError naming what is wrong."""
  weights = {}
  for item in str(spec).split(","):
    name, sep, value = item.strip().partition(":")
    if not sep or name not in MASKS:
      raise ValueError(f"{item.strip()!r}: entries are MASK:WEIGHT with MASK one of {MASKS}")
    try:
      weights[name] = float(value)
    except ValueError:
      raise ValueError(f"{item.strip()!r}: the weight must be a number") from None
    if weights[name] < 0:
      raise ValueError(f"{item.strip()!r}: weights must be >= 0")
  if sum(weights.values()) <= 0:
    raise ValueError(f"{spec!r}: at least one mask kind needs a positive weight")
  return weights


def sample_masks(rng, batch: int, num_frames: int, weights: dict[str, float]):
  """float32 [batch, num_frames] pixel-frame masks: a kind per example drawn with `weights`, k uniform in
  [1, F - 1] (for 'ends', the first and last k with 2 k < F); 'keyframes' knows each frame with a probability
  drawn uniformly in [0.1, 0.5] per example, never every frame. A one-frame clip (an image) is always 'none'."""
  if num_frames < 2:
    return jnp.zeros((batch, num_frames), jnp.float32)
  r_kind, r_k, r_p, r_key = jax.random.split(rng, 4)
  logits = jnp.log(jnp.asarray([weights.get(name, 0.0) for name in MASKS], jnp.float32))
  kind = jax.random.categorical(r_kind, logits, shape=(batch,))
  u = jax.random.uniform(r_k, (batch, 1))
  k = 1 + jnp.floor(u * (num_frames - 1)).astype(jnp.int32)  # 1 .. F - 1
  k_ends = 1 + jnp.floor(u * ((num_frames - 1) // 2)).astype(jnp.int32)  # 2 k < F when F >= 3
  j = jnp.arange(num_frames)[None]
  ends = (j < k_ends) | (j >= num_frames - k_ends) if num_frames >= 3 else j == 0
  p = jax.random.uniform(r_p, (batch, 1), minval=0.1, maxval=0.5)
  draws = jax.random.uniform(r_key, (batch, num_frames))
  keyframes = draws < p
  # Never every frame: the frame with the largest draw stays unknown.
  keyframes &= j != jnp.argmax(draws, axis=1)[:, None]
  masks = jnp.stack([jnp.broadcast_to(m, (batch, num_frames))
                     for m in (j < 0, j == 0, j < k, j >= num_frames - k, ends, keyframes)])  # order of MASKS
  return masks[kind, jnp.arange(batch)].astype(jnp.float32)
