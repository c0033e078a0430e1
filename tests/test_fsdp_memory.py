"""FSDP splits a 1B+ DiT train step 8 ways: per-device bytes from memory_analysis(), compile only."""
import jax
import jax.numpy as jnp

from vidgen.models import dit as dit_lib
from experiments import fsdp_memory


def test_fsdp8_needs_at_most_a_fifth_of_the_fsdp1_bytes_per_device():
  # Wan 2.1 1.3B's block shape and depth (1.42B parameters here: a 4096-wide text input), 256 tokens a clip.
  model = dit_lib.DiT(patch_size=(1, 2, 2), in_dim=16, out_dim=16, dim=1536, ffn_dim=8960, num_heads=12,
                      depth=30, remat="full", scan_blocks=True)
  latent = jax.ShapeDtypeStruct((8, 4, 16, 16, 16), jnp.float32)
  context = jax.ShapeDtypeStruct((8, 512, 4096), jnp.float32)
  one = fsdp_memory.train_step_bytes(model, latent, context, dict(data=8, fsdp=1))
  eight = fsdp_memory.train_step_bytes(model, latent, context, dict(data=1, fsdp=8))
  assert one["params"] >= 1e9
  # fp32 parameters + two AdamW moments, whole on every device without FSDP.
  assert one["state"] >= 12 * one["params"]
  assert eight["state"] <= 0.13 * one["state"]
  assert eight["total"] <= 0.2 * one["total"], (eight, one)
