"""Converts a PyTorch checkpoint (.pth / .pt / .bin) to safetensors once, so that vidgen never unpickles.

  python -m vidgen.weights.convert_pth Wan2.1_VAE.pth [OUT.safetensors]

Needs torch (pip install -e '.[reference]'); loads with weights_only=True, which refuses pickled code. Writes
OUT (default: the input with a .safetensors suffix) whole or not at all, and never over an existing file.
"""
from __future__ import annotations

import os
import sys


def convert(src: str, dst: str | None = None) -> str:
  try:
    import torch
    from safetensors.torch import save_file
  except ImportError:
    raise SystemExit("converting needs torch: pip install -e '.[reference]'") from None
  dst = dst or os.path.splitext(src)[0] + ".safetensors"
  if os.path.exists(dst):
    raise SystemExit(f"{dst} exists: not overwritten (remove it or name another output)")
  state = torch.load(src, map_location="cpu", weights_only=True)
  if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
    state = state["state_dict"]
  tensors = {k: v.contiguous() for k, v in state.items() if isinstance(v, torch.Tensor)}
  skipped = sorted(set(state) - set(tensors))
  if skipped:
    print(f"skipped {len(skipped)} entries that are not tensors, e.g. {skipped[0]!r}", file=sys.stderr)
  save_file(tensors, dst + ".partial")
  os.replace(dst + ".partial", dst)
  return dst


if __name__ == "__main__":
  if len(sys.argv) not in (2, 3):
    raise SystemExit(__doc__.strip().splitlines()[2].strip())
  print(convert(*sys.argv[1:]))
