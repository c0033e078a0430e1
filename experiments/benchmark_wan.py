r"""vidgen against diffusers on the same CPU: Wan 2.1 at Wan-1.3B width, float32, the same weights on both sides.

  /tmp/refenv/bin/python experiments/benchmark_wan.py [--blocks=2] [--umt5_layers=2] [--rounds=3] [--out=F]

Needs an environment with both vidgen (jax, flax) and the reference (torch, diffusers, transformers,
sentencepiece, ftfy), e.g. the reference venv with `pip install -e .` on top. Every part compares the two
outputs (max rel err, or max abs for frames), so the timing is known to be of the same computation. Parts:

  dit_forward       the DiT forward (--batch, --grid, --text_len) of --blocks blocks
  cfg_unipc_N_steps a whole CFG UniPC sampling of --steps steps (per step the cond + uncond batch of 2 through the
                    DiT, guidance, the UniPC update; --steps=0 skips it)
  vae_decode        the decode of a tiny random Wan VAE of base_dim --vae_dim (--vae_grid; --vae_dim=0 skips it)
  umt5_encode       the prompt and the negative prompt through UMT5 as each pipeline encodes them (512 tokens,
                    zeros past each prompt's): diffusers' WanPipeline.encode_prompt with CFG against two
                    WanGenerator.encode_prompts (--umt5=false skips it)
  pipeline          the whole text-to-video call from the same noise: diffusers' WanPipeline(...,
                    output_type='np') against WanGenerator.generate (--pipeline_size, --pipeline_frames,
                    --pipeline_steps, --cfg, --shift; text encode, CFG UniPC sampling, VAE decode; also the
                    seconds of each of these three; --pipeline=false skips it)

Weights. The DiT parts: vidgen's DiT is initialised, every parameter redrawn (so the adaLN-zero modulations are
not zero and the blocks do real work), and the diffusers WanTransformer3DModel loads them strictly through
vidgen.weights.wan_dit.to_state_dict(params, 'diffusers'). The VAE part: a random AutoencoderKLWan saved with
save_pretrained and loaded by vidgen.weights.wan_vae. The umt5 and pipeline parts: a reduced but real-width Wan
2.1 checkpoint in the diffusers layout (WanPipeline.save_pretrained: the DiT at Wan-1.3B width with --blocks blocks,
Wan 2.1's VAE as AutoencoderKLWan's defaults, UMT5 at UMT5-XXL width with --umt5_layers of its 24 layers and its
256384-token vocabulary, the small UMT5 tokenizer of tests/fixtures/wan/umt5, the UniPC scheduler of the Wan 2.1
diffusers checkpoints with flow_shift --shift), every tensor redrawn, fan-in scaled; written once into a temporary
folder, or into --pipeline_dir and reused from there by later runs with the same --blocks, --umt5_layers and
--pipeline_widths. Both sides load that folder: diffusers' WanPipeline and vidgen's WanGenerator
(configs/wan.py:t2v, dit.dtype float32). At the defaults it takes ~7 GB of disk and ~7 GB of memory per framework
(the UMT5 vocabulary's embedding alone is 4.2 GB in float32). --pipeline_widths=tiny shrinks every width of that
checkpoint, only to smoke-test this script (its parity numbers, not its speed).

Timing: vidgen jitted (compile excluded: the DiT and VAE parts compile ahead, the umt5 and pipeline parts report
their first call's extra time as compile), block_until_ready, diffusers under torch.no_grad with
torch.set_num_threads(--threads); one warm-up of each, then --rounds rounds alternating vidgen / diffusers so
drifts of the machine hit both alike; medians and vidgen/diffusers reported as a markdown table and as JSON
(--out).

The load average goes into the output: on a machine whose cores other processes share, torch's OpenMP
threads lose much more than XLA's pool (measured 2026-12-01 at load ~4.5 on 2 cores: diffusers' DiT forward
2.6 s with --threads=2 and 1.8 s with --threads=1, vidgen ~1.0 s either way), so compare ratios only from a
quiet machine, or run both --threads values.
"""
from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import platform
import re
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

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
_UMT5 = flags.DEFINE_bool("umt5", True, "The UMT5 encode part (prompt + negative prompt).")
_PIPELINE = flags.DEFINE_bool("pipeline", True, "The whole-pipeline part (text to decoded frames).")
_UMT5_LAYERS = flags.DEFINE_integer("umt5_layers", 2, "UMT5 layers of the umt5 / pipeline parts' checkpoint "
                                    "(UMT5-XXL has 24).")
_PIPELINE_SIZE = flags.DEFINE_string("pipeline_size", "160x96", "WxH of the pipeline part's video (multiples of 16).")
_PIPELINE_FRAMES = flags.DEFINE_integer("pipeline_frames", 9, "Frames of the pipeline part's video (1 + 4 k).")
_PIPELINE_STEPS = flags.DEFINE_integer("pipeline_steps", 3, "UniPC steps of the pipeline part (with --cfg, --shift).")
_PIPELINE_DIR = flags.DEFINE_string("pipeline_dir", None, "Where the umt5 / pipeline parts' checkpoint is written, "
                                    "and reused from by later runs (default: a temporary folder, removed after).")
_PIPELINE_WIDTHS = flags.DEFINE_enum("pipeline_widths", "real", ["real", "tiny"], "Widths of that checkpoint: "
                                     "'real' (Wan-1.3B DiT, Wan 2.1 VAE, UMT5-XXL) or 'tiny' (only to smoke-test "
                                     "this script: parity, not speed).")

DIM, FFN, HEADS, FREQ, Z, TEXT_DIM, PATCH = 1536, 8960, 12, 256, 16, 4096, (1, 2, 2)

# The umt5 / pipeline parts' checkpoint: the DiT's width, UMT5's (text_dim is its d_model), the VAE's base_dim.
PIPELINE_WIDTHS = {
    "real": dict(dim=DIM, ffn=FFN, heads=HEADS, vae_dim=96,
                 umt5=dict(d_model=TEXT_DIM, d_ff=10240, num_heads=64, d_kv=64, vocab_size=256384)),
    "tiny": dict(dim=32, ffn=64, heads=2, vae_dim=8,
                 umt5=dict(d_model=32, d_ff=64, num_heads=2, d_kv=16, vocab_size=320)),
}
PROMPT = "a red fox trots through fresh snow at dawn, its breath misting in the cold air, the camera following"
TEXT_LEN = 512  # Wan's max_sequence_length: both pipelines encode and attend to all 512 positions
TOKENIZER = os.path.join(ROOT, "tests", "fixtures", "wan", "umt5", "tokenizer")  # ids < 320: any vocabulary fits
MARKER = "benchmark_wan.json"  # in a checkpoint folder this script wrote: what it was built with


def _median_times(fns: dict, rounds: int, warmup: dict | None = None) -> dict:
  """{name: [seconds per round]}: each fn once as warm-up (its seconds into `warmup` if given), then rounds rounds
  in the dict's order."""
  for name, fn in fns.items():
    t0 = time.perf_counter()
    fn()
    if warmup is not None:
      warmup[name] = time.perf_counter() - t0
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


def _fixture(name: str):
  """A module of tests/fixtures/wan (the fixture scripts import each other, and their common.py, by name)."""
  import importlib
  path = os.path.join(ROOT, "tests", "fixtures", "wan")
  if path not in sys.path:
    sys.path.insert(0, path)
  return importlib.import_module(name)


def _rel_err(got, want) -> float:
  import numpy as np
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  return float(np.abs(got - want).max() / np.abs(want).max())


def _redraw(module, seed: int):
  """Every floating parameter of a torch module drawn anew (the references zero some: adaLN modulations, the DiT
  head, the VAE attention's projection), as tests/fixtures/wan/common.py's rerandomise but scaled by fan-in so real
  widths keep values O(1): Linear / Conv weights N(0, 1 / fan_in), embeddings N(0, 1), norm scales 1 + N(0, 0.1^2),
  the rest (biases, modulation tables) N(0, 0.05^2). In place: the UMT5 embedding is 4.2 GB."""
  import torch
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for sub in module.modules():
      norm = "norm" in type(sub).__name__.lower()
      for name, p in sub.named_parameters(recurse=False):
        if not p.dtype.is_floating_point:
          continue
        if isinstance(sub, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)) and name == "weight":
          p.normal_(0.0, 1.0 / math.sqrt(math.prod(p.shape[1:])), generator=g)
        elif isinstance(sub, torch.nn.Embedding):
          p.normal_(0.0, 1.0, generator=g)
        elif (norm and name == "weight") or name == "gamma":  # Wan's VAE RMS_norm calls its scale gamma
          p.normal_(1.0, 0.1, generator=g)
        else:
          p.normal_(0.0, 0.05, generator=g)
  return module


def pipeline_folder(folder: str, blocks: int, umt5_layers: int, widths: str, shift: float):
  """Writes the umt5 / pipeline parts' checkpoint into `folder` (diffusers' layout, WanPipeline.save_pretrained)
  unless a run with the same settings wrote it there before (the scheduler's shift is set again on loading)."""
  import shutil

  import torch
  from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
  from transformers import AutoTokenizer, UMT5Config, UMT5EncoderModel

  settings = dict(blocks=blocks, umt5_layers=umt5_layers, widths=widths)
  marker = os.path.join(folder, MARKER)
  if os.path.exists(marker):
    with open(marker) as f:
      found = json.load(f)
    if found != settings:
      raise app.UsageError(f"{folder} holds a checkpoint built with {found}, not {settings}: give another "
                           "--pipeline_dir or delete it")
    print(f"reusing the checkpoint in {folder}", flush=True)
    return
  if os.path.isdir(folder) and os.listdir(folder):
    raise app.UsageError(f"{folder} is neither empty nor a checkpoint this script wrote (no {MARKER}): give an "
                         "empty or new --pipeline_dir")
  t0 = time.perf_counter()
  w = PIPELINE_WIDTHS[widths]
  torch.manual_seed(0)
  transformer = WanTransformer3DModel(patch_size=PATCH, num_attention_heads=w["heads"],
                                      attention_head_dim=w["dim"] // w["heads"], in_channels=Z, out_channels=Z,
                                      text_dim=w["umt5"]["d_model"], freq_dim=FREQ, ffn_dim=w["ffn"],
                                      num_layers=blocks, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                                      eps=1e-6)
  # The rest of Wan 2.1's VAE config is AutoencoderKLWan's defaults: z_dim 16, dim_mult (1, 2, 4, 4), 2 residual
  # blocks per level, no attention scales, temporal downsampling (False, True, True), its latents mean / std.
  vae = AutoencoderKLWan(base_dim=w["vae_dim"])
  text_encoder = UMT5EncoderModel(UMT5Config(**w["umt5"], num_layers=umt5_layers, relative_attention_num_buckets=32,
                                             relative_attention_max_distance=128, feed_forward_proj="gated-gelu",
                                             layer_norm_epsilon=1e-6, dropout_rate=0.0))
  for seed, module in enumerate((transformer, vae, text_encoder)):
    _redraw(module.float().eval(), seed=10 + seed)
  scheduler = UniPCMultistepScheduler.from_config(_fixture("make_sampler").WAN_SCHEDULER_CONFIG, flow_shift=shift)
  pipe = WanPipeline(tokenizer=AutoTokenizer.from_pretrained(TOKENIZER), text_encoder=text_encoder, vae=vae,
                     scheduler=scheduler, transformer=transformer)
  pipe.save_pretrained(folder, safe_serialization=True)
  for name in os.listdir(TOKENIZER):  # the tokenizer folder as the source has it (save_pretrained drops spiece.model)
    shutil.copy(os.path.join(TOKENIZER, name), os.path.join(folder, "tokenizer"))
  with open(marker, "w") as f:  # last: an interrupted build is not reused
    json.dump(settings, f)
  size = sum(os.path.getsize(os.path.join(b, n)) for b, _, names in os.walk(folder) for n in names)
  print(f"wrote the checkpoint {settings} into {folder}: {size / 2**30:.2f} GiB, {time.perf_counter() - t0:.1f} s",
        flush=True)


def _wan_config():
  """configs/wan.py's 't2v' preset (every shape from the folder), loaded by path as the CLI loads it. Its
  `import common` means configs/common.py: the fixtures' common.py (the CFG part imports it) is set aside."""
  import importlib.util
  fixture_common = sys.modules.pop("common", None)
  try:
    spec = importlib.util.spec_from_file_location("wan_config", os.path.join(ROOT, "configs", "wan.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config("t2v")
  finally:
    sys.modules.pop("common", None)
    if fixture_common is not None:
      sys.modules["common"] = fixture_common


def load_pipelines(folder: str, size, frames: int, steps: int, cfg: float, shift: float):
  """(vidgen WanGenerator, diffusers WanPipeline), both of the checkpoint in `folder`, set to sample alike."""
  from diffusers import UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
  from safetensors.torch import load_file

  from vidgen import generate as generate_lib

  t0 = time.perf_counter()
  # Without accelerate, diffusers cannot from_pretrained a WanTransformer3DModel (its _keep_in_fp32_modules want
  # low_cpu_mem_usage): built from its config and loaded strictly, as tests/fixtures/wan/make_pipeline.py does.
  sub = os.path.join(folder, "transformer")
  transformer = WanTransformer3DModel.from_config(WanTransformer3DModel.load_config(sub)).float().eval()
  state = {}
  for name in sorted(os.listdir(sub)):  # one file or save_pretrained's shards
    if name.endswith(".safetensors"):
      state.update(load_file(os.path.join(sub, name)))
  transformer.load_state_dict(state, strict=True)
  del state
  scheduler = UniPCMultistepScheduler.from_config(_fixture("make_sampler").WAN_SCHEDULER_CONFIG, flow_shift=shift)
  pipe = WanPipeline.from_pretrained(folder, transformer=transformer, scheduler=scheduler)
  pipe.text_encoder.float().eval()
  pipe.vae.float().eval()
  pipe.set_progress_bar_config(disable=True)

  config = _wan_config()
  config.weights, config.dit.dtype = folder, "float32"
  config.data.width, config.data.height, config.data.num_frames = *size, frames
  config.sample.steps, config.sample.cfg_scale, config.sample.shift = steps, cfg, shift
  gen = generate_lib.WanGenerator(config)  # sample.negative_prompt: the preset's, Wan 2.1's
  print(f"loaded both pipelines, {time.perf_counter() - t0:.1f} s", flush=True)
  return gen, pipe


def _n_params(tree) -> int:
  import jax
  return int(sum(a.size for a in jax.tree_util.tree_leaves(tree)))


def bench_umt5(gen, pipe, rounds: int) -> dict:
  """The prompt and the negative prompt through UMT5, as each pipeline encodes them for a CFG run: diffusers'
  encode_prompt (tokenize to 512, the encoder, zeros past each prompt's tokens) against two
  WanGenerator.encode_prompts. The embeddings compared: the larger max rel err of the two."""
  import jax
  import torch

  negative = gen.config.sample.negative_prompt
  out = {}

  def run_vidgen():
    out["vidgen"] = jax.block_until_ready((gen.encode_prompts([PROMPT]), gen.encode_prompts([negative])))

  def run_diffusers():
    with torch.no_grad():
      out["diffusers"] = pipe.encode_prompt(PROMPT, negative, do_classifier_free_guidance=True,
                                            max_sequence_length=TEXT_LEN, device=torch.device("cpu"))

  warmup = {}
  times = _median_times({"vidgen": run_vidgen, "diffusers": run_diffusers}, rounds, warmup)
  rel = max(_rel_err(v[0], d.numpy()) for v, d in zip(out["vidgen"], out["diffusers"]))
  c = pipe.text_encoder.config
  return dict(part="umt5_encode", shape=f"prompt + negative, {TEXT_LEN} tok each, {c.num_layers} layers d{c.d_model} "
                                        f"ff{c.d_ff} h{c.num_heads}x{c.d_kv}, vocab {c.vocab_size}",
              n_params=_n_params(gen.params["text_encoder"]),
              compile_s=warmup["vidgen"] - statistics.median(times["vidgen"]), times=times, max_rel_err=rel)


def bench_pipeline(gen, pipe, rounds: int) -> dict:
  """The whole text-to-video call from the same noise: diffusers' WanPipeline(..., latents=noise, output_type='np')
  against WanGenerator.generate(noise=noise) (uint8 frames). max_rel_err: the latents the VAEs decode (after the
  last step, de-normalised); frames_max_abs: the frames in [0, 1] (vidgen's decoded again as floats, untimed).
  Per part (medians, from wrappers around each side's encode and decode, timed with the rounds): text encode (both
  prompts), VAE decode (with the conversion to frames), denoise (the rest: the sampling loop)."""
  from unittest import mock

  import jax
  import numpy as np
  import torch

  s, d = gen.config.sample, gen.config.data
  tc, sc = gen.temporal_compression, gen.spatial_compression
  latent = (1 + (d.num_frames - 1) // tc, d.height // sc, d.width // sc)
  noise = np.random.default_rng(4).standard_normal((1, Z, *latent), dtype=np.float32)  # diffusers [B, C, T, h, w]
  vnoise = np.moveaxis(noise, 1, -1)  # vidgen [B, T, h, w, C]
  out, seen, cur, parts = {}, {}, {}, {"vidgen": [], "diffusers": []}

  def timed(name, fn, sync=lambda x: x, keep=None):
    def wrapped(*args, **kwargs):
      if keep:
        seen[keep] = args[0]
      t0 = time.perf_counter()
      result = sync(fn(*args, **kwargs))
      cur[name] = cur.get(name, 0.0) + time.perf_counter() - t0
      return result
    return wrapped

  def run(side, fn):
    cur.clear()
    t0 = time.perf_counter()
    fn()
    total = time.perf_counter() - t0
    parts[side].append(dict(text_encode=cur["encode"], denoise=total - cur["encode"] - cur["decode"],
                            vae_decode=cur["decode"]))

  def vidgen_call():
    out["vidgen"] = gen.generate([PROMPT], noise=vnoise, progress=False)

  def diffusers_call():
    out["diffusers"] = pipe(prompt=PROMPT, negative_prompt=s.negative_prompt, height=d.height, width=d.width,
                            num_frames=d.num_frames, num_inference_steps=s.steps, guidance_scale=s.cfg_scale,
                            latents=torch.from_numpy(noise.copy()), output_type="np",
                            max_sequence_length=TEXT_LEN).frames

  decode = gen.decode
  warmup = {}
  with mock.patch.object(gen, "encode_prompts", timed("encode", gen.encode_prompts, jax.block_until_ready)), \
       mock.patch.object(gen, "decode", timed("decode", gen.decode, keep="vidgen_latents")), \
       mock.patch.object(pipe, "encode_prompt", timed("encode", pipe.encode_prompt)), \
       mock.patch.object(pipe.vae, "decode", timed("decode", pipe.vae.decode, keep="diffusers_z")):
    times = _median_times({"vidgen": lambda: run("vidgen", vidgen_call),
                           "diffusers": lambda: run("diffusers", diffusers_call)}, rounds, warmup)

  want = out["diffusers"][0]  # [F, H, W, 3] in [0, 1]
  frames = np.clip(decode(seen["vidgen_latents"], as_uint8=False)[0] * 0.5 + 0.5, 0.0, 1.0)
  z = np.asarray(seen["vidgen_latents"] * gen.latent_std + gen.latent_mean)
  assert out["vidgen"].shape == (1, *frames.shape) == (1, *want.shape), (out["vidgen"].shape, want.shape)
  medians = {side: {k: statistics.median(p[k] for p in runs[1:]) for k in runs[0]}  # [0]: the warm-up
             for side, runs in parts.items()}
  n = _n_params([gen.params, gen.vae_params])
  t = pipe.transformer.config
  return dict(part=f"pipeline_{s.steps}_steps",
              shape=f"{d.width}x{d.height}x{d.num_frames} (latent {latent}), cfg {s.cfg_scale:g}, DiT {t.num_layers} "
                    f"blk d{t.num_attention_heads * t.attention_head_dim}, UMT5 "
                    f"{pipe.text_encoder.config.num_layers} layers d{pipe.text_encoder.config.d_model}, "
                    f"VAE base_dim {pipe.vae.config.base_dim}",
              n_params=n, compile_s=warmup["vidgen"] - statistics.median(times["vidgen"]), times=times,
              max_rel_err=_rel_err(np.moveaxis(z, -1, 1), seen["diffusers_z"].numpy()),
              frames_max_abs=float(np.abs(frames - want).max()),
              uint8_max_abs=int(np.abs(out["vidgen"][0].astype(int) - np.round(want * 255.0)).max()),
              frames_inside=float(np.mean((want > 0.0) & (want < 1.0))), part_s=medians)


def main(argv):
  del argv
  import jax
  import torch
  import diffusers

  match = re.fullmatch(r"(\d+)x(\d+)", _PIPELINE_SIZE.value)
  size = (int(match[1]), int(match[2])) if match else (0, 0)  # (W, H)
  if (_UMT5.value or _PIPELINE.value) and (not all(size) or size[0] % 16 or size[1] % 16
                                           or _PIPELINE_FRAMES.value < 1 or (_PIPELINE_FRAMES.value - 1) % 4):
    raise app.UsageError(f"--pipeline_size={_PIPELINE_SIZE.value} --pipeline_frames={_PIPELINE_FRAMES.value}: "
                         "need WxH multiples of 16 (VAE 8 x patch 2) and 1 + 4 k frames")
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
    print(f"vae decode done, {time.perf_counter() - wall0:.1f} s", flush=True)
  if _UMT5.value or _PIPELINE.value:
    built = None  # the DiT parts' models: memory for the checkpoint's
    with contextlib.ExitStack() as stack:
      folder = _PIPELINE_DIR.value or stack.enter_context(tempfile.TemporaryDirectory(prefix="benchmark_wan_"))
      pipeline_folder(folder, _BLOCKS.value, _UMT5_LAYERS.value, _PIPELINE_WIDTHS.value, _SHIFT.value)
      gc.collect()  # the built torch modules (and the DiT parts'), before both frameworks load the folder
      gen, pipe = load_pipelines(folder, size, _PIPELINE_FRAMES.value, _PIPELINE_STEPS.value, _CFG.value,
                                 _SHIFT.value)
      if _UMT5.value:
        results.append(bench_umt5(gen, pipe, _ROUNDS.value))
        print(f"umt5 encode done, {time.perf_counter() - wall0:.1f} s", flush=True)
      if _PIPELINE.value:
        results.append(bench_pipeline(gen, pipe, _ROUNDS.value))
        print(f"pipeline done, {time.perf_counter() - wall0:.1f} s", flush=True)
      del gen, pipe
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
    if "part_s" in r:
      print(f"  frames max abs diff {r['frames_max_abs']:.2e} (uint8: {r['uint8_max_abs']} levels), "
            f"{r['frames_inside']:.0%} of the reference's values inside (0, 1); seconds per part (medians): "
            + "; ".join(f"{side} " + ", ".join(f"{k} {v:.3f}" for k, v in p.items())
                        for side, p in r["part_s"].items()))
  wall = time.perf_counter() - wall0
  print(f"wall {wall:.1f} s")
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      json.dump(dict(env=env, rounds=_ROUNDS.value, results=results, wall_s=wall), f, indent=2)


if __name__ == "__main__":
  app.run(main)
