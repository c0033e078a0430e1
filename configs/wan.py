"""Wan 2.1 text-to-video from public weights (a downloaded checkpoint folder, either layout).

  python -m vidgen.main --config=configs/wan.py:t2v_1_3b --config.weights=DIR --workdir=W --mode=generate \
      --prompt "a corgi surfing a wave at sunset" --size=832x480 --frames=81
Presets: t2v (every shape from the folder's config files: any Wan-architecture checkpoint), t2v_1_3b and t2v_14b
(the published shapes, for memory planning and benchmarks without weights; a folder that disagrees fails with one
line naming the field). Sampling defaults are the reference pipeline's (Wan 2.1's generate.py and shared config).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (configs are loaded by path, next to common.py)

PRESETS = ("t2v", "t2v_1_3b", "t2v_14b")

# Wan 2.1's shared_config.sample_neg_prompt: its classifier-free guidance is against this, not an empty prompt.
NEGATIVE_PROMPT = ("色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，"
                   "最差质量，低质量，JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，"
                   "画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，"
                   "杂乱的背景，三条腿，背景人很多，倒着走")

# The published DiT shapes (Wan 2.1's t2v_1_3B / t2v_14B configs).
_DIT = {
    "t2v_1_3b": dict(dim=1536, ffn_dim=8960, num_heads=12, depth=30),
    "t2v_14b": dict(dim=5120, ffn_dim=13824, num_heads=40, depth=40),
}


def get_config(preset: str = "t2v"):
  if preset not in PRESETS:
    raise ValueError(f"Unknown preset {preset!r} for configs/wan.py: allowed {PRESETS}")
  c = common.get_base_config()
  c.preset = preset
  c.model = "wan2.1"
  c.weights = ""  # the checkpoint folder (diffusers: model_index.json, transformer/, vae/, text_encoder/, tokenizer/;
  # Wan: config.json, diffusion_pytorch_model*.safetensors, Wan2.1_VAE.safetensors,
  # models_t5_umt5-xxl-enc-bf16.safetensors, google/umt5-xxl/; .pth files convert once: vidgen.weights.convert_pth)

  # The generation shape (--size, --frames override it): 480p, 81 frames at 16 fps.
  c.data.height, c.data.width, c.data.num_frames, c.data.fps = 480, 832, 81, 16

  # Wan 2.1's VAE: 8x8 spatial, 4x temporal compression, 16 latent channels.
  c.vae.dim, c.vae.z_dim, c.vae.dim_mult, c.vae.num_res_blocks = 96, 16, (1, 2, 4, 4), 2
  c.vae.attn_scales, c.vae.temporal_downsample, c.vae.spatial_downsample = (), (False, True, True), (True, True, True)
  c.vae.dtype = "float32"
  c.vae.decoder_level_attention = False  # as diffusers' AutoencoderKLWan reads (moot with attn_scales=())
  c.vae.latent_mean, c.vae.latent_std = (), ()  # () takes the checkpoint's (diffusers' vae/config.json, else Wan 2.1's)

  # UMT5-XXL, Wan's text encoder; text.width is its d_model, which the DiT's text embedding reads.
  c.text.encoder = "umt5"
  c.text.max_length = 512
  c.text.vocab_size, c.text.width, c.text.depth, c.text.num_heads = 256384, 4096, 24, 64
  c.text.d_kv, c.text.d_ff, c.text.num_buckets, c.text.max_distance = 64, 10240, 32, 128

  c.dit.patch_size, c.dit.freq_dim = (1, 2, 2), 256
  c.dit.update(_DIT.get(preset, _DIT["t2v_1_3b"]))
  c.dit.qk_norm, c.dit.cross_attn_norm, c.dit.text_pool, c.dit.frame_conditioning = True, True, False, False
  c.dit.scan_blocks = True
  # auto: bfloat16 on accelerators (norms and modulation kept float32, as the reference keeps them), float32 on CPU.
  c.dit.dtype = "auto"

  c.sample.steps, c.sample.solver, c.sample.cfg_scale, c.sample.shift = 50, "unipc", 5.0, 5.0
  c.sample.negative_prompt = NEGATIVE_PROMPT
  c.sample.batch_size = 1
  c.sample.use_ema = False
  return c
