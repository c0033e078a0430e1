"""Text-to-video on the built-in Shapes data.

  python -m vidgen.main --config=configs/shapes.py:tiny --workdir=runs/tiny
Presets: tiny (2-core CPU, the whole job in 15 to 25 minutes), small (one GPU), test (seconds, for tests).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (configs are loaded by path, next to common.py)

PRESETS = ("tiny", "small", "test")


def get_config(preset: str = "tiny"):
  c = common.get_base_config()
  c.preset = preset
  if preset == "tiny":
    # Objects of 12-15 px; the VAE keeps an 8x8 latent grid (4x spatial), where a 4x4 grid (8x) lost the shape
    # of 1 in 20 held-out clips; the DiT's 2x2 patch keeps its 48 tokens.
    c.data.min_size = 12.0
    c.data.max_size = 15.0
    # Space-time patchify (4 frames x 2x2 pixels) then one 2x spatial level: every conv runs at the latent
    # frame rate, 2.5x cheaper per step than strided temporal resampling and faster to train (measured).
    # Per-frame 3x3 convs (the 4-frame patch is the temporal receptive field) halve the step time again, and
    # level shortcuts add ~1 dB at equal steps (measured, see experiments/README.md).
    c.vae.dim = 16
    c.vae.dim_mult = (1, 2, 4)
    c.vae.num_res_blocks = 1
    c.vae.temporal_downsample = (False, False)
    c.vae.spatial_downsample = (True, False)
    c.vae.patch_size = 2
    c.vae.temporal_patch_size = 4
    c.vae.temporal_kernel = 1
    c.vae.level_shortcuts = True
    c.train_vae.steps = 1600
    c.train_vae.batch_size = 8
    c.train_vae.lr = 2e-3
    c.train_vae.warmup_steps = 50
    c.train_vae.ckpt_every = 1000
    c.dit.patch_size = (1, 2, 2)
    c.dit.dim = 192
    c.dit.ffn_dim = 768
    c.dit.num_heads = 3
    c.dit.depth = 4
    # An absolute (frame, row, column) embedding: with RoPE alone attention sees only offsets, so the DiT cannot
    # tell where the frame's edges are (a "left" object starts at the right edge) nor which latent frame is
    # frame 0: its objects moved 41% of the real distance, in random directions. On the seed where direction
    # stayed at chance (18.8% held-out) it judged 93.8% by step 1250 (experiments/README.md, "Fifth session").
    c.dit.pos_embed = "sincos"
    # Muon: with AdamW the jointly trained text encoder never told the motion words apart (the same videos for
    # "left" and "right", direction at chance after 2400 steps); with Muon direction is learned by step 2000 in 2
    # of 3 seeds (experiments/README.md: the recipe is not yet robust).
    c.train_dit.optimizer = "muon"
    c.train_dit.steps = 2000
    c.train_dit.lr = 1e-3
    c.train_dit.warmup_steps = 100
    # No EMA: in a 2000-step run the average (0.999, warmed up) lags the weights while direction is still being
    # learned; the raw weights judged 96.9% / 95.3% of held-out prompts where the EMA judged 92.2% / 85.9%.
    c.train_dit.ema_decay = 0.0
    c.train_dit.ckpt_every = 500
  elif preset == "small":
    c.data.height = c.data.width = 64
    c.data.num_frames = 17
    c.data.speed = 2.0
    c.data.min_size = 18.0
    c.data.max_size = 24.0
    c.data.num_train = 16384
    c.vae.dim = 64
    c.vae.dim_mult = (1, 2, 4, 4)
    c.vae.num_res_blocks = 2
    c.vae.temporal_downsample = (False, True, True)
    c.vae.spatial_downsample = (True, True, True)
    c.vae.patch_size = 1
    c.dit.patch_size = (1, 2, 2)
    c.dit.dim = 512
    c.dit.ffn_dim = 2048
    c.dit.num_heads = 8
    c.dit.depth = 12
    # bfloat16 compute, batches sized for one 80 GB GPU from XLA's memory_analysis() (compiled on the CPU, an
    # estimate; experiments/README.md "The small preset's memory"): the VAE step holds ~1.9 GiB per clip, so
    # its batch of 32 runs as two micro-batches of 16 (31 GiB); the DiT at 64 needs ~13 GiB. Not yet run on a GPU.
    c.vae.dtype = "bfloat16"
    c.dit.dtype = "bfloat16"
    c.train_vae.steps = 20000
    c.train_vae.batch_size = 32
    c.train_vae.grad_accum_steps = 2
    c.train_dit.steps = 40000
    c.train_dit.batch_size = 64
    # The speedrun's levers (tiny): with AdamW the text encoder never separated the motion words; without an
    # absolute position embedding the DiT did not know where the frame's edges are. Its objects span 2-3 cells
    # of the 8x8 latent grid, as tiny's do.
    c.train_dit.optimizer = "muon"
    c.dit.pos_embed = "sincos"
  elif preset == "test":
    c.data.num_train = 64
    c.data.num_heldout = 16
    c.data.num_val = 16
    c.vae.dim = 8
    c.vae.z_dim = 4
    c.vae.dim_mult = (1, 2, 2)
    c.vae.num_res_blocks = 1
    c.vae.temporal_downsample = (True, True)
    c.vae.spatial_downsample = (True, True)
    c.vae.patch_size = 2
    c.text.width = 32
    c.text.depth = 1
    c.text.num_heads = 2
    c.dit.patch_size = (1, 1, 1)
    c.dit.dim = 32
    c.dit.ffn_dim = 64
    c.dit.num_heads = 2
    c.dit.depth = 1
    c.dit.freq_dim = 32
    c.train_vae.steps = 4
    c.train_vae.batch_size = 8  # divisible by the 8 faked devices of the tests
    c.train_vae.log_every = 2
    c.train_vae.ckpt_every = 2
    c.train_dit.steps = 4
    c.train_dit.batch_size = 8
    c.train_dit.log_every = 2
    c.train_dit.ckpt_every = 2
    c.sample.steps = 2
    c.sample.batch_size = 8
    c.eval.num_prompts = 4
    c.eval.num_recon = 4
    c.eval.num_two_object = 4
    c.eval.num_paraphrase = 4
  else:
    raise ValueError(f"Unknown preset {preset!r} for configs/shapes.py: allowed {PRESETS}")
  return c
