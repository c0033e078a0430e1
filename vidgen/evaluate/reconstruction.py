"""How well the VAE reconstructs clips it never trained on: PSNR, the Shapes judge on the reconstructions, and
the flicker of real vs reconstructed."""
from __future__ import annotations

from absl import logging
import numpy as np
import tqdm

from vidgen.data import datasets
from vidgen.evaluate import shapes_judge
from vidgen.evaluate import video_metrics
from vidgen.models import vae_codec


def evaluate_reconstruction(config, workdir: str, params, split: str = "heldout", progress: bool = True) -> dict:
  """PSNR (dB) of VAE reconstructions of held-out clips (training clips for media, which have no held-out
  split), and the background flicker of the real and the reconstructed clips. On Shapes, 'judged' holds the
  judge's rates on the same reconstructions under the clips' captions: PSNR measures sharpness, the judge
  whether color, shape and direction survive the VAE (the ceiling of every generated set)."""
  split = split if config.data.name == "shapes" else "train"
  recon_fn = vae_codec.reconstruct_fn(config)
  psnrs, flicker_real, flicker_recon, recons = [], [], [], []
  batches = datasets.clip_batches(config.data, workdir, config.eval.num_recon, 16, split=split)
  for videos in tqdm.tqdm(batches, desc="VAE reconstruction", disable=not progress, leave=False):
    recon = vae_codec.to_uint8(recon_fn(params, videos))
    psnrs.extend(video_metrics.psnr(a, b) for a, b in zip(videos, recon))
    flicker_real.extend(video_metrics.background_flicker(v) for v in videos)
    flicker_recon.extend(video_metrics.background_flicker(v) for v in recon)
    if config.data.name == "shapes":
      recons.extend(np.asarray(recon))
  num = len(psnrs)
  logging.info("VAE reconstruction PSNR on %d %s clips: %.2f dB", num, split, np.mean(psnrs))
  result = {"psnr_db": float(np.mean(psnrs)), "num_clips": num,
            "flicker_real": float(np.mean(flicker_real)), "flicker_recon": float(np.mean(flicker_recon))}
  if recons:  # clip_batches reads a Shapes split in order: recons[i] is clip i
    source = datasets.source(config.data, workdir, split)
    captions = [source[i]["caption"] for i in range(num)]
    result["judged"] = shapes_judge.summary(
        shapes_judge.judge_batch(recons, captions, datasets.shapes_spec(config.data)))
    logging.info("VAE reconstructions judged all-correct: %.1f%%", 100 * result["judged"]["all_correct_rate"])
  return result
