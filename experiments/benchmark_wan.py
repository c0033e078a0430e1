r"""vidgen against diffusers on the same CPU: Wan 2.1 DiT forward at Wan-1.3B width, float32, shared weights.

  /tmp/refenv/bin/python experiments/benchmark_wan.py [--blocks=2] [--rounds=3] [--out=F]

Needs an environment with both vidgen (jax, flax) and the reference (torch, diffusers), e.g. the reference
venv with `pip install -e .` on top. Both implementations get the SAME random weights: vidgen's DiT is
initialised, every parameter redrawn (so the adaLN-zero modulations are not zero and the blocks do real
work), and the diffusers WanTransformer3DModel loads them strictly through
vidgen.weights.wan_dit.to_state_dict(params, 'diffusers'). The outputs are compared (max rel err) so the
timing is known to be of the same computation.

Timing: vidgen jitted (compile excluded, block_until_ready), diffusers under torch.no_grad with
torch.set_num_threads(--threads); one warm-up of each, then --rounds rounds alternating vidgen / diffusers
so drifts of the machine hit both alike; medians and vidgen/diffusers reported as a markdown table and
as JSON (--out). Parts: the DiT forward (batch 2), a whole CFG UniPC sampling of --steps steps (per step the
cond + uncond batch of 2 through the DiT, guidance, the UniPC update; --steps=0 skips it) and the decode of a
tiny random Wan VAE (--vae_dim=0 skips it).

The load average goes into the output: on a machine whose cores other processes share, torch's OpenMP
threads lose much more than XLA's pool (measured 2026-12-01 at load ~4.5 on 2 cores: diffusers' DiT forward
2.6 s with --threads=2 and 1.8 s with --threads=1, vidgen ~1.0 s either way), so compare ratios only from a
quiet machine, or run both --threads values.
"""
from __future__ import annotations

import json
import math
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

_BLOCKS = flags.DEFINE_integer("blocks", 2, "DiT blocks (Wan-1.3B has 30).")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Alternating timed rounds (after one warm-up of each).")
_THREADS = flags.DEFINE_integer("threads", 2, "torch.set_num_threads.")
_BATCH = flags.DEFINE_integer("batch", 2, "Batch (2 = the cond + uncond batch of one CFG step).")
_GRID = flags.DEFINE_list("grid", ["3", "10", "40"], "Latent grid F,H,W (patch (1, 2, 2): 3*5*20 = 300 tokens).")
_TEXT_LEN = flags.DEFINE_integer("text_len", 512, "Text context tokens (Wan pads to 512).")
_OUT = flags.DEFINE_string("out", None, "Also write the results as JSON here.")
_STEPS = flags.DEFINE_integer("steps", 3, "UniPC steps of the CFG sampling part (0 skips it); 3 = a 1st-order "
                              "step, a 2nd-order predictor-corrector step and the final step.")
_CFG = flags.DEFINE_float("cfg", 5.0, "Guidance scale of the CFG sampling part.")
_SHIFT = flags.DEFINE_float("shift", 3.0, "Flow shift of the CFG sampling part.")
_VAE_DIM = flags.DEFINE_integer("vae_dim", 16, "base_dim of the tiny random Wan VAE of the decode part (0 skips it; "
                                "Wan 2.1's is 96).")
_VAE_GRID = flags.DEFINE_list("vae_grid", ["3", "10", "40"], "Latent grid F,H,W of the VAE decode part "
                              "(-> 9 x 80 x 320 pixels).")
_PEAK = flags.DEFINE_bool("peak", True, "Measure the f32 matmul peak (vidgen.parallel.device_peaks).")

DIM, FFN, HEADS, FREQ, Z, TEXT_DIM, PATCH = 1536, 8960, 12, 256, 16, 4096, (1, 2, 2)


def _median_times(fns: dict, rounds: int) -> dict:
  """{name: [seconds per round]}: each fn once as warm-up, then rounds rounds in the dict's order."""
  for fn in fns.values():
    fn()
  times = {name: [] for name in fns}
  for _ in range(rounds):
    for name, fn in fns.items():
      t0 = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - t0)
  return times


def build(blocks: int):
  """(vidgen DiT, its randomly redrawn params, diffusers WanTransformer3DModel holding the same weights)."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  import torch
  from diffusers import WanTransformer3DModel

  from vidgen.models import dit as dit_lib
  from vidgen.weights import wan_dit

  model = dit_lib.DiT(patch_size=PATCH, in_dim=Z, out_dim=Z, dim=DIM, ffn_dim=FFN, freq_dim=FREQ, num_heads=HEADS,
                      depth=blocks, qk_norm=True, cross_attn_norm=True, text_pool=False, eps=1e-6,
                      reference_precision=True, dtype=jnp.float32)
  abstract = wan_dit.abstract_params(model, TEXT_DIM)
  leaves, treedef = jax.tree_util.tree_flatten(abstract)
  keys = jax.random.split(jax.random.key(1), len(leaves))

  def redraw(k, a):  # fan-in-scaled normals; biases / norms / modulations small but non-zero
    fan_in = math.prod(a.shape[:-1]) if len(a.shape) >= 2 else 1
    scale = 1.0 / math.sqrt(fan_in) if len(a.shape) >= 2 else 0.05
    return (jax.random.normal(k, a.shape, jnp.float32) * scale).astype(a.dtype)

  params = jax.tree_util.tree_unflatten(treedef, [redraw(k, a) for k, a in zip(keys, leaves)])
  n_params = int(sum(a.size for a in jax.tree_util.tree_leaves(params)))

  torch.manual_seed(0)
  ref = WanTransformer3DModel(patch_size=PATCH, num_attention_heads=HEADS, attention_head_dim=DIM // HEADS,
                              in_channels=Z, out_channels=Z, text_dim=TEXT_DIM, freq_dim=FREQ, ffn_dim=FFN,
                              num_layers=blocks, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                              eps=1e-6).eval()
  state = wan_dit.to_state_dict(params, "diffusers", dtype=np.float32)
  ref.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
  del state
  return model, params, n_params, ref


def bench_dit(built, batch: int, grid, text_len: int, rounds: int) -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np
  import torch

  model, params, n_params, ref = built
  blocks = model.depth
  rng = np.random.default_rng(0)
  x = rng.standard_normal((batch, *grid, Z), dtype=np.float32)  # vidgen [B, F, H, W, C]
  t = np.linspace(0.9, 0.3, batch).astype(np.float32)
  ctx = rng.standard_normal((batch, text_len, TEXT_DIM), dtype=np.float32)

  fwd = jax.jit(lambda p, x, t, c: model.apply({"params": p}, x, t, c, context_mask=None))
  jx, jt, jc = jnp.asarray(x), jnp.asarray(t), jnp.asarray(ctx)
  t0 = time.perf_counter()
  compiled = fwd.lower(params, jx, jt, jc).compile()
  compile_s = time.perf_counter() - t0

  hx = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 4, 1, 2, 3)))  # diffusers [B, C, F, H, W]
  ht = torch.from_numpy((t * np.float32(1000.0)).astype(np.float32))
  hc = torch.from_numpy(ctx)

  out = {}

  def run_vidgen():
    out["vidgen"] = compiled(params, jx, jt, jc).block_until_ready()

  def run_diffusers():
    with torch.no_grad():
      out["diffusers"] = ref(hx, ht, hc, return_dict=False)[0]

  times = _median_times({"vidgen": run_vidgen, "diffusers": run_diffusers}, rounds)
  got = np.asarray(out["vidgen"], np.float64).transpose(0, 4, 1, 2, 3)
  want = out["diffusers"].numpy().astype(np.float64)
  rel = float(np.abs(got - want).max() / np.abs(want).max())
  tokens = math.prod(g // p for g, p in zip(grid, PATCH))
  return dict(part="dit_forward", shape=f"B{batch} grid{tuple(grid)} {tokens} tok, ctx {text_len}x{TEXT_DIM}, "
                                          f"{blocks} blk d{DIM} ffn{FFN} h{HEADS}",
              n_params=n_params, compile_s=compile_s, times=times, max_rel_err=rel)


def bench_cfg_sampling(built, grid, text_len: int, rounds: int, steps: int, cfg: float, shift: float) -> dict:
  """A whole UniPC sampling of `steps` steps with CFG for one sample: per step the cond + uncond batch of 2
  through the DiT, the guidance and the UniPC update. vidgen: Generator's way (one jitted cond/uncond
  velocity, vidgen.diffusion.sampling.sample(solver='unipc') around it); diffusers: the WanPipeline's loop
  (transformer on the doubled latent, guidance, UniPCMultistepScheduler.step), scheduler configured as the
  Wan 2.1 diffusers checkpoints (tests/fixtures/wan/make_sampler.py WAN_SCHEDULER_CONFIG)."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  import torch
  from diffusers import UniPCMultistepScheduler

  from vidgen.diffusion import sampling

  sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "fixtures",
                                  "wan"))
  import make_sampler  # noqa: E402

  model, params, _, ref = built
  rng = np.random.default_rng(1)
  noise = rng.standard_normal((1, *grid, Z), dtype=np.float32)
  ctx_c = rng.standard_normal((1, text_len, TEXT_DIM), dtype=np.float32)
  ctx_u = rng.standard_normal((1, text_len, TEXT_DIM), dtype=np.float32)

  jc = jnp.concatenate([jnp.asarray(ctx_c), jnp.asarray(ctx_u)])

  @jax.jit
  def cond_uncond(p, x, t, ctx):  # as Generator._cond_uncond_velocity (no frame conditioning)
    xx = jnp.concatenate([x, x])
    v = model.apply({"params": p}, xx, jnp.full((xx.shape[0],), t, jnp.float32), ctx, context_mask=None)
    return v[: x.shape[0]], v[x.shape[0]:]

  velocity = sampling.guided(lambda x, t: cond_uncond(params, x, t, jc), cfg)
  jnoise = jnp.asarray(noise)
  t0 = time.perf_counter()
  cond_uncond(params, jnoise, 0.5, jc)[0].block_until_ready()
  compile_s = time.perf_counter() - t0
  out = {}

  def run_vidgen():
    out["vidgen"] = jax.block_until_ready(
        sampling.sample(velocity, jnoise, num_steps=steps, solver="unipc", shift=shift, progress=False))

  hc = torch.from_numpy(np.concatenate([ctx_c, ctx_u]))
  hnoise = torch.from_numpy(np.ascontiguousarray(noise.transpose(0, 4, 1, 2, 3)))

  def run_diffusers():
    sched = UniPCMultistepScheduler.from_config(make_sampler.WAN_SCHEDULER_CONFIG, flow_shift=shift)
    sched.set_timesteps(steps)
    x = hnoise.clone()
    with torch.no_grad():
      for t in sched.timesteps:
        v = ref(torch.cat([x, x]), t.expand(2), hc, return_dict=False)[0]
        v_c, v_u = v[:1], v[1:]
        v = v_u + cfg * (v_c - v_u)
        x = sched.step(v, t, x, return_dict=False)[0]
    out["diffusers"] = x

  times = _median_times({"vidgen": run_vidgen, "diffusers": run_diffusers}, rounds)
  got = np.asarray(out["vidgen"], np.float64).transpose(0, 4, 1, 2, 3)
  want = out["diffusers"].numpy().astype(np.float64)
  rel = float(np.abs(got - want).max() / np.abs(want).max())
  tokens = math.prod(g // p for g, p in zip(grid, PATCH))
  return dict(part=f"cfg_unipc_{steps}_steps", shape=f"B1 (x2 cond+uncond) grid{tuple(grid)} {tokens} tok, ctx "
                                                   f"{text_len}x{TEXT_DIM}, {model.depth} blk, cfg {cfg:g}",
              n_params=0, compile_s=compile_s, times=times, max_rel_err=rel)


def bench_vae_decode(base_dim: int, grid, rounds: int) -> dict:
  """Decode of a latent clip by a tiny random AutoencoderKLWan (z_dim 16, dim_mult (1, 2, 4, 4), one residual
  block per level, no decoder attention, like Wan 2.1's but base_dim wide), saved with save_pretrained and
  loaded by vidgen.weights.wan_vae (so both hold the same weights). Both outputs clipped to [-1, 1] (diffusers'
  decode clamps) for the comparison."""
  import tempfile

  import jax
  import jax.numpy as jnp
  import numpy as np
  import torch
  from diffusers import AutoencoderKLWan

  from vidgen.models import vae as vae_lib
  from vidgen.weights import wan_vae

  torch.manual_seed(2)
  ref = AutoencoderKLWan(base_dim=base_dim, z_dim=Z, dim_mult=[1, 2, 4, 4], num_res_blocks=1, attn_scales=[],
                         temperal_downsample=[False, True, True], dropout=0.0).eval()
  with tempfile.TemporaryDirectory() as folder:
    ref.save_pretrained(folder, safe_serialization=True)
    kwargs, _, _ = wan_vae.vae_config_from_diffusers(folder)
    model = vae_lib.VideoVAE(**kwargs)
    abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 1, 16, 16, 3))))["params"]
    params = wan_vae.load_vae(folder, abstract)
  rng = np.random.default_rng(3)
  z = rng.standard_normal((1, *grid, Z), dtype=np.float32)  # vidgen [B, T, h, w, z]
  jz = jnp.asarray(z)
  decode = jax.jit(lambda p, z: model.apply({"params": p}, z, method=model.decode))
  t0 = time.perf_counter()
  compiled = decode.lower(params, jz).compile()
  compile_s = time.perf_counter() - t0
  hz = torch.from_numpy(np.ascontiguousarray(z.transpose(0, 4, 1, 2, 3)))
  out = {}

  def run_vidgen():
    out["vidgen"] = compiled(params, jz).block_until_ready()

  def run_diffusers():
    with torch.no_grad():
      out["diffusers"] = ref.decode(hz).sample

  times = _median_times({"vidgen": run_vidgen, "diffusers": run_diffusers}, rounds)
  got = np.clip(np.asarray(out["vidgen"], np.float64), -1, 1).transpose(0, 4, 1, 2, 3)
  want = out["diffusers"].numpy().astype(np.float64)
  rel = float(np.abs(got - want).max() / np.abs(want).max())
  n_params = int(sum(a.size for a in jax.tree_util.tree_leaves(params)))
  return dict(part="vae_decode", shape=f"latent {tuple(grid)}x{Z} -> {tuple(want.shape[2:])} px, base_dim {base_dim}",
              n_params=n_params, compile_s=compile_s, times=times, max_rel_err=rel)


def main(argv):
  del argv
  import jax
  import torch
  import diffusers

  torch.set_num_threads(_THREADS.value)
  wall0 = time.perf_counter()
  grid = tuple(int(g) for g in _GRID.value)
  env = dict(python=platform.python_version(), machine=platform.machine(), cpu_count=os.cpu_count(),
             torch=torch.__version__, torch_threads=torch.get_num_threads(), diffusers=diffusers.__version__,
             jax=jax.__version__, jax_devices=[str(d) for d in jax.devices()], jax_backend=jax.default_backend())
  try:
    import flax
    env["flax"] = flax.__version__
  except ImportError:
    pass
  env["loadavg_before"] = os.getloadavg()  # 1, 5, 15 min: above cpu_count, other processes share the cores
  if env["loadavg_before"][0] > 0.5 * (os.cpu_count() or 1):
    print(f"WARNING: load average {env['loadavg_before'][0]:.1f} on {os.cpu_count()} cores: other processes share "
          "them, and torch's threads suffer more from that than XLA's (see the docstring)", flush=True)
  if _PEAK.value:
    from vidgen.parallel import device_peaks
    peak, source = device_peaks.peak_flops()
    env["f32_matmul_peak_flops"], env["peak_source"] = peak, source

  built = build(_BLOCKS.value)
  results = [bench_dit(built, _BATCH.value, grid, _TEXT_LEN.value, _ROUNDS.value)]
  print(f"dit forward done, {time.perf_counter() - wall0:.1f} s", flush=True)
  if _STEPS.value > 0:
    results.append(bench_cfg_sampling(built, grid, _TEXT_LEN.value, _ROUNDS.value, _STEPS.value, _CFG.value,
                                      _SHIFT.value))
    print(f"cfg sampling done, {time.perf_counter() - wall0:.1f} s", flush=True)
  if _VAE_DIM.value > 0:
    results.append(bench_vae_decode(_VAE_DIM.value, tuple(int(g) for g in _VAE_GRID.value), _ROUNDS.value))
  env["loadavg_after"] = os.getloadavg()
  for r in results:
    r["vidgen_s"] = statistics.median(r["times"]["vidgen"])
    r["diffusers_s"] = statistics.median(r["times"]["diffusers"])
    r["ratio"] = r["vidgen_s"] / r["diffusers_s"]

  print()
  for k, v in env.items():
    print(f"- {k}: {v}")
  print()
  print("| part | shape | vidgen s | diffusers s | vidgen/diffusers |")
  print("|---|---|---|---|---|")
  for r in results:
    print(f"| {r['part']} | {r['shape']} | {r['vidgen_s']:.3f} | {r['diffusers_s']:.3f} | {r['ratio']:.2f} |")
  print()
  for r in results:
    print(f"{r['part']}: rounds vidgen {['%.3f' % s for s in r['times']['vidgen']]}, diffusers "
          f"{['%.3f' % s for s in r['times']['diffusers']]}, vidgen compile {r['compile_s']:.1f} s, "
          f"outputs max rel err {r['max_rel_err']:.2e}, {r['n_params']} params")
  wall = time.perf_counter() - wall0
  print(f"wall {wall:.1f} s")
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      json.dump(dict(env=env, rounds=_ROUNDS.value, results=results, wall_s=wall), f, indent=2)


if __name__ == "__main__":
  app.run(main)
