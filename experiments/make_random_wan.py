r"""A Wan 2.1 T2V checkpoint folder at the published shapes with random weights, written by the reference libraries
in the diffusers layout, so vidgen's loader and CLI can be run at full size without a download (memory, time):

  /tmp/refenv/bin/python experiments/make_random_wan.py --out=/tmp/wan_1_3b_random [--preset=t2v_1_3b]
  python -m vidgen.main --config=configs/wan.py:t2v_1_3b --config.weights=/tmp/wan_1_3b_random \
      --config.dit.dtype=bfloat16 --workdir=/tmp/wan_smoke --mode=generate --prompt "a corgi" \
      --size=160x96 --frames=5 --config.sample.steps=2

Needs the reference extra (torch, diffusers, transformers). The components are those of the Wan-AI
Wan2.1-T2V-*-Diffusers repositories: WanTransformer3DModel (float32, sharded safetensors with an index), the
default AutoencoderKLWan (Wan 2.1's VAE, float32), UMT5EncoderModel at umt5-xxl's config (bfloat16, sharded), the
UniPC scheduler; each built with the library's own random init and written one at a time, so host memory stays
that of the largest. The tokenizer is the small UMT5-style one of the test fixtures (the real one is a download):
its ids are a subset of umt5-xxl's vocabulary, so prompts tokenize, only to other words.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time

from absl import app
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_OUT = flags.DEFINE_string("out", None, "The folder to write (must not exist).", required=True)
_PRESET = flags.DEFINE_enum("preset", "t2v_1_3b", ["t2v_1_3b", "t2v_14b"], "Published DiT shapes to use.")
_SHARD = flags.DEFINE_string("max_shard_size", "2GB", "save_pretrained's shard size.")

# Wan 2.1's DiT configs (diffusers' names), and google/umt5-xxl's encoder config.
DIT = {"t2v_1_3b": dict(num_attention_heads=12, attention_head_dim=128, ffn_dim=8960, num_layers=30),
       "t2v_14b": dict(num_attention_heads=40, attention_head_dim=128, ffn_dim=13824, num_layers=40)}
DIT_COMMON = dict(patch_size=(1, 2, 2), in_channels=16, out_channels=16, text_dim=4096, freq_dim=256,
                  cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)
UMT5_XXL = dict(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_heads=64, num_layers=24,
                relative_attention_num_buckets=32, relative_attention_max_distance=128, layer_norm_epsilon=1e-6,
                feed_forward_proj="gated-gelu", dropout_rate=0.0, tie_word_embeddings=False)
TOKENIZER = os.path.join(ROOT, "tests", "fixtures", "wan", "umt5", "tokenizer")
SCHEDULER = dict(num_train_timesteps=1000, solver_order=2, prediction_type="flow_prediction", use_flow_sigmas=True,
                 flow_shift=5.0)


def _save(name: str, build, out: str):
  import gc
  t0 = time.perf_counter()
  model = build()
  model.save_pretrained(os.path.join(out, name), safe_serialization=True, max_shard_size=_SHARD.value)
  count = sum(p.numel() for p in model.parameters())
  del model
  gc.collect()
  print(f"{name}: {count / 1e9:.3f}B parameters in {time.perf_counter() - t0:.0f} s", flush=True)


def _built_in(dtype, build):
  import torch
  default = torch.get_default_dtype()
  torch.set_default_dtype(dtype)
  try:
    return build().eval()
  finally:
    torch.set_default_dtype(default)


def main(argv):
  del argv
  import torch
  from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel
  from transformers import UMT5Config, UMT5EncoderModel

  out = _OUT.value
  if os.path.exists(out):
    raise SystemExit(f"--out={out} exists: give a new folder")
  partial = out + ".partial"
  shutil.rmtree(partial, ignore_errors=True)
  os.makedirs(partial)
  torch.manual_seed(0)
  _save("transformer", lambda: WanTransformer3DModel(**DIT_COMMON, **DIT[_PRESET.value]).float().eval(), partial)
  _save("vae", lambda: AutoencoderKLWan().float().eval(), partial)
  _save("text_encoder", lambda: _built_in(torch.bfloat16, lambda: UMT5EncoderModel(UMT5Config(**UMT5_XXL))),
        partial)  # built in bfloat16: 11 GiB, where float32 would not fit a 24 GiB machine
  shutil.copytree(TOKENIZER, os.path.join(partial, "tokenizer"))
  UniPCMultistepScheduler(**SCHEDULER).save_pretrained(os.path.join(partial, "scheduler"))
  index = {"_class_name": "WanPipeline", "scheduler": ["diffusers", "UniPCMultistepScheduler"],
           "text_encoder": ["transformers", "UMT5EncoderModel"], "tokenizer": ["transformers", "T5Tokenizer"],
           "transformer": ["diffusers", "WanTransformer3DModel"], "vae": ["diffusers", "AutoencoderKLWan"]}
  with open(os.path.join(partial, "model_index.json"), "w") as f:
    json.dump(index, f, indent=1)
  os.replace(partial, out)  # whole or not at all
  print(f"wrote {out}")


if __name__ == "__main__":
  sys.path.insert(0, ROOT)
  app.run(main)
