r"""DiT speed: FLOP/s per device and MFU of the train step and of one sampler step, tiny to Wan-1.3B shape.

  python experiments/benchmark_dit.py --sizes=tiny,cpu           # this CPU (peak = measured f32 matmul)
  python experiments/benchmark_dit.py --sizes=wan1.3b_8k,wan1.3b_32k --dtype=bfloat16 --attention=cudnn
  python experiments/benchmark_dit.py --memory_check               # fsdp=8 vs fsdp=1 bytes, compile only

MFU = analytic matmul FLOPs (vidgen/models/flops.py, checked against XLA's cost analysis in the tests)
per second per device / the device's peak (vidgen/parallel/device_peaks.py): data-sheet numbers for
accelerators, and on CPU the f32 matmul FLOP/s measured by this same process right before, so the ratio
says how close the DiT step comes to what this machine can do at all. Results go to stdout as a table
and to --out as JSON.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time

from absl import app
from absl import flags

_SIZES = flags.DEFINE_list("sizes", ["tiny", "cpu"], "Named sizes (see SIZES).")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype (params stay float32).")
_ATTENTION = flags.DEFINE_string("attention", "xla", "dit.attention implementation.")
_REMAT = flags.DEFINE_enum("remat", "none", ["none", "full", "dots", "dots_no_batch"],
                           "What each block keeps for the backward pass (vidgen/models/dit.py REMAT_POLICIES).")
_SCAN = flags.DEFINE_bool("scan_blocks", False, "Scan over the DiT blocks (dit.scan_blocks): compiles 30 layers "
                          "in seconds instead of minutes.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps (after 2 warm-up steps).")
_OUT = flags.DEFINE_string("out", None, "Also write the results as JSON here.")
_MEMORY_CHECK = flags.DEFINE_bool("memory_check", False, "Compile a Wan-1.3B-shape DiT train step with fsdp=8 "
                                  "and fsdp=1 on 8 (faked) devices and compare per-device bytes; runs nothing.")
_MEMORY_DEPTH = flags.DEFINE_integer("memory_depth", 30, "Blocks of the --memory_check DiT (30: 1.42B parameters, "
                                     "Wan 2.1 1.3B's shape).")

# (dim, ffn_dim, heads, depth, latent grid (F, H, W), patch, batch, text_len, text_dim)
SIZES = {
    "tiny": (192, 768, 3, 4, (3, 4, 4), (1, 1, 1), 32, 32, 128),  # the Shapes tiny preset's DiT
    "cpu": (2048, 8192, 16, 2, (4, 16, 16), (1, 2, 2), 4, 64, 2048),  # wide matmuls that fill a CPU
    "small": (512, 2048, 8, 12, (5, 8, 8), (1, 2, 2), 64, 32, 512),  # the Shapes small preset's shape
    "wan1.3b_8k": (1536, 8960, 12, 30, (8, 32, 128), (1, 2, 2), 1, 512, 4096),  # 8192 tokens
    "wan1.3b_16k": (1536, 8960, 12, 30, (16, 32, 128), (1, 2, 2), 1, 512, 4096),
    "wan1.3b_32k": (1536, 8960, 12, 30, (21, 60, 104), (1, 2, 2), 1, 512, 4096),  # 480p, 81 frames: 32760
}
def build(size: str, dtype: str, attention: str, remat: str, scan_blocks: bool = False):
  """The DiT module, its inputs for one batch, and the analytic forward FLOPs per example."""
  import jax.numpy as jnp
  from vidgen.models import dit as dit_lib
  from vidgen.models import flops
  dim, ffn, heads, depth, grid, patch, batch, text_len, text_dim = SIZES[size]
  model = dit_lib.DiT(patch_size=patch, in_dim=16, out_dim=16, dim=dim, ffn_dim=ffn, num_heads=heads,
                      depth=depth, remat=remat, scan_blocks=scan_blocks, implementation=attention,
                      dtype=jnp.dtype(dtype))
  tokens = math.prod(g // p for g, p in zip(grid, patch))
  fwd = flops.dit_forward_flops(tokens=tokens, text_len=text_len, text_dim=text_dim, dim=dim, ffn_dim=ffn,
                                depth=depth, in_dim=16, out_dim=16, patch_volume=math.prod(patch))
  shapes = dict(x=(batch, *grid, 16), context=(batch, text_len, text_dim))
  return model, shapes, tokens, fwd


def train_step_fn(model, lr: float = 1e-4):
  """One rectified-flow step with AdamW, as the trainer runs it."""
  import jax
  import optax
  from vidgen.diffusion import flow
  tx = optax.adamw(lr)

  def step(params, opt_state, x0, context, rng):
    loss_fn = lambda p: flow.flow_loss(lambda x_t, t: model.apply(p, x_t, t, context), x0, rng)
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss
  return tx, step


def _time(fn, args, steps: int) -> float:
  import jax
  out = None
  for _ in range(2):
    out = fn(*args)
    args = _feed(args, out)
  jax.block_until_ready(out)
  t0 = time.perf_counter()
  for _ in range(steps):
    out = fn(*args)
    args = _feed(args, out)
  jax.block_until_ready(out)
  return (time.perf_counter() - t0) / steps


def _feed(args, out):
  """Train steps feed their new params and optimizer state back in; sampler steps reuse their inputs."""
  return (out[0], out[1], *args[2:]) if isinstance(out, tuple) and len(out) == 3 else args


def benchmark(size: str, dtype: str, attention: str, remat: str, scan_blocks: bool, steps: int,
              peak: float | None, peak_source: str) -> dict:
  import jax
  import jax.numpy as jnp
  model, shapes, tokens, fwd = build(size, dtype, attention, remat, scan_blocks)
  batch = shapes["x"][0]
  rng = jax.random.key(0)
  x = jax.random.normal(rng, shapes["x"], jnp.float32)
  ctx = jax.random.normal(rng, shapes["context"], jnp.float32)
  params = jax.jit(model.init)(rng, x, jnp.zeros((batch,)), ctx)
  n_params = sum(p.size for p in jax.tree_util.tree_leaves(params))
  tx, step = train_step_fn(model)
  opt_state = tx.init(params)
  train = jax.jit(step, donate_argnums=(0, 1))
  compiled = train.lower(params, opt_state, x, ctx, rng).compile()
  cost = compiled.cost_analysis()
  xla_flops = (cost[0] if isinstance(cost, list) else cost)["flops"]
  train_s = _time(compiled, (params, opt_state, x, ctx, rng), steps)
  # One sampler step: the velocity with classifier-free guidance, i.e. a forward on 2x the batch.
  x2, ctx2 = jnp.concatenate([x, x]), jnp.concatenate([ctx, ctx])
  params = jax.jit(model.init)(rng, x, jnp.zeros((batch,)), ctx)
  sample = jax.jit(lambda p, xx, cc: model.apply(p, xx, jnp.full((xx.shape[0],), 0.5), cc))
  sample_s = _time(sample, (params, x2, ctx2), steps)
  device = jax.devices()[0]
  n_dev = jax.device_count()
  train_fs = 3 * fwd * batch / train_s / n_dev
  sample_fs = fwd * 2 * batch / sample_s / n_dev
  return {
      "size": size, "params": n_params, "tokens": tokens, "batch": batch, "dtype": dtype, "attention": attention,
      "remat": remat, "scan_blocks": scan_blocks, "device": device.device_kind, "devices": n_dev, "peak_flops": peak, "peak_source": peak_source,
      "train_step_s": train_s, "train_flops_analytic": 3 * fwd * batch, "train_flops_xla": xla_flops,
      "train_tflops_per_device": train_fs / 1e12, "train_mfu": train_fs / peak if peak else None,
      "sample_step_s": sample_s, "sample_tflops_per_device": sample_fs / 1e12,
      "sample_mfu": sample_fs / peak if peak else None,
  }


def memory_check(depth: int = 30, grid: tuple[int, int, int] = (4, 16, 16)) -> dict:
  """Per-device bytes of a Wan-1.3B-shape DiT train step (batch 8) with fsdp=8 vs fsdp=1.

  At 256 tokens per clip the parameters, gradients and AdamW moments dominate: what FSDP splits.
  """
  import jax
  import jax.numpy as jnp
  from vidgen.models import dit as dit_lib
  import fsdp_memory  # experiments/fsdp_memory.py, beside this script
  if jax.device_count() != 8:
    raise SystemExit(f"--memory_check needs 8 devices, found {jax.device_count()}")
  model = dit_lib.DiT(
      patch_size=(1, 2, 2), in_dim=16, out_dim=16, dim=1536, ffn_dim=8960, num_heads=12, depth=depth, remat="full",
      scan_blocks=True)  # per-block gathers and gradient reductions inside the loop, and a compile that fits
  x = jax.ShapeDtypeStruct((8, *grid, 16), jnp.float32)
  ctx = jax.ShapeDtypeStruct((8, 512, 4096), jnp.float32)
  result = {f"fsdp{f}": fsdp_memory.train_step_bytes(model, x, ctx, dict(data=8 // f, fsdp=f)) for f in (1, 8)}
  per_device = {k: v["total"] for k, v in result.items()}
  state = {k: v["state"] for k, v in result.items()}
  return {"params": result["fsdp1"]["params"], "bytes_per_device": per_device, "state_bytes_per_device": state,
          "ratio_fsdp8_to_fsdp1": per_device["fsdp8"] / per_device["fsdp1"],
          "state_ratio_fsdp8_to_fsdp1": state["fsdp8"] / state["fsdp1"], "detail": result}


def main(argv):
  del argv
  if _MEMORY_CHECK.value:
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
  import jax
  from vidgen.parallel import device_peaks
  if _MEMORY_CHECK.value:
    out = memory_check(depth=_MEMORY_DEPTH.value)
    gib = lambda k, key="bytes_per_device": f"{out[key][k] / 2**30:.2f} GiB"
    print(f"{out['params'] / 1e9:.2f}B-parameter DiT train step on {jax.devices()[0].platform}, per device:\n"
          f"  total (arguments + outputs + temporaries - donated): fsdp=1 {gib('fsdp1')}, fsdp=8 {gib('fsdp8')}, "
          f"ratio {out['ratio_fsdp8_to_fsdp1']:.3f}\n"
          f"  train state (parameters + AdamW moments): fsdp=1 {gib('fsdp1', 'state_bytes_per_device')}, "
          f"fsdp=8 {gib('fsdp8', 'state_bytes_per_device')}, ratio {out['state_ratio_fsdp8_to_fsdp1']:.3f}")
    results = out
  else:
    unknown = [s for s in _SIZES.value if s not in SIZES]
    if unknown:
      raise app.UsageError(f"unknown --sizes {unknown}: allowed {sorted(SIZES)}")
    peak, source = device_peaks.peak_flops(jax.devices()[0], _DTYPE.value)
    print(f"JAX {jax.__version__}, {jax.device_count()} x {jax.devices()[0].device_kind}, peak "
          + (f"{peak / 1e12:.3f} TFLOP/s per device ({source})" if peak else source))
    print("| size | params | tokens | batch | dtype | train s/step | train TFLOP/s/dev | train MFU "
          "| sample s/step | sample TFLOP/s/dev | sample MFU | XLA/analytic FLOPs |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    results = []
    for size in _SIZES.value:
      r = benchmark(size, _DTYPE.value, _ATTENTION.value, _REMAT.value, _SCAN.value, _STEPS.value, peak, source)
      results.append(r)
      mfu = lambda v: f"{v:.1%}" if v is not None else "n/a"
      print(f"| {size} | {r['params'] / 1e6:.1f}M | {r['tokens']} | {r['batch']} | {r['dtype']} | "
            f"{r['train_step_s']:.3f} | {r['train_tflops_per_device']:.3f} | {mfu(r['train_mfu'])} | "
            f"{r['sample_step_s']:.3f} | {r['sample_tflops_per_device']:.3f} | {mfu(r['sample_mfu'])} | "
            f"{r['train_flops_xla'] / r['train_flops_analytic']:.3f} |", flush=True)
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      json.dump(results, f, indent=1)


if __name__ == "__main__":
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  app.run(main)
