"""Peak FLOP/s per device, the denominator of MFU.

Accelerators: dense peaks from vendor data sheets (bf16 on tensor cores / the MXU; GPU f32 runs on the
CUDA cores, far lower). CPUs have no useful data-sheet number, so their peak is an f32 matmul measured in
this process (split evenly over faked devices, which share the cores): the MFU then says how close a step
comes to what this machine does at its best.
"""
from __future__ import annotations

import functools
import math
import time

import jax
import jax.numpy as jnp

# (platform, substring of device_kind, compute dtype) -> dense FLOP/s per device.
PEAKS = {
    ("gpu", "H100", "bfloat16"): 989e12, ("gpu", "H100", "float32"): 67e12,
    ("gpu", "H200", "bfloat16"): 989e12, ("gpu", "H200", "float32"): 67e12,
    ("gpu", "A100", "bfloat16"): 312e12, ("gpu", "A100", "float32"): 19.5e12,
    ("tpu", "v5 lite", "bfloat16"): 197e12, ("tpu", "v5e", "bfloat16"): 197e12,
    ("tpu", "v5p", "bfloat16"): 459e12, ("tpu", "v6", "bfloat16"): 918e12,
}


@functools.lru_cache(maxsize=None)
def measured_matmul_peak(n: int = 2048, repeats: int = 10) -> float:
  """Best f32 matmul FLOP/s of one local device, measured once per process."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  a = jax.device_put(a, jax.local_devices()[0])
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  best = math.inf
  for _ in range(repeats):
    t0 = time.perf_counter()
    f(a).block_until_ready()
    best = min(best, time.perf_counter() - t0)
  return 2 * n ** 3 / best


def peak_flops(device=None, dtype: str = "float32") -> tuple[float | None, str]:
  """(peak FLOP/s of one device, where the number comes from); None when no peak is known."""
  device = device or jax.local_devices()[0]
  if device.platform == "cpu":
    # Faked CPU devices (--xla_force_host_platform_device_count) share the host's cores.
    shared = jax.local_device_count()
    return measured_matmul_peak() / shared, "measured f32 matmul" + (f" / {shared} devices" if shared > 1 else "")
  kind = device.device_kind
  for (platform, name, d), peak in PEAKS.items():
    if platform == device.platform and name.lower() in kind.lower() and d == str(jnp.dtype(dtype)):
      return peak, f"{kind} data sheet, {d}"
  return None, f"no peak known for {kind!r} in {dtype}"
