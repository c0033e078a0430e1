"""Metric writers: TensorBoard event files plus a plain JSONL log, and XLA's FLOP count of a step."""
from __future__ import annotations

import json
import os

import jax
import tensorboardX


class MetricWriter:
  """Writes scalars to WORKDIR/<name>/tb (TensorBoard) and WORKDIR/<name>/metrics.jsonl. Host 0 only."""

  def __init__(self, logdir: str):
    self.active = jax.process_index() == 0
    if self.active:
      os.makedirs(logdir, exist_ok=True)
      self._tb = tensorboardX.SummaryWriter(os.path.join(logdir, "tb"))
      self._jsonl = open(os.path.join(logdir, "metrics.jsonl"), "a")

  def write(self, step: int, scalars: dict):
    if not self.active:
      return
    clean = {k: float(v) for k, v in scalars.items()}
    for k, v in clean.items():
      self._tb.add_scalar(k, v, step)
    self._jsonl.write(json.dumps({"step": int(step), **clean}) + "\n")
    self._jsonl.flush()

  def close(self):
    if self.active:
      self._tb.close()
      self._jsonl.close()


def compiled_flops(compiled) -> float:
  """FLOPs of one call of a compiled function per XLA's cost analysis (0 if unavailable)."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # some backends do not implement it
    return 0.0
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return float((cost or {}).get("flops", 0.0))
