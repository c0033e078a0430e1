"""experiments/preset_memory.py: the loop's VAE and DiT train steps compile from shapes alone, and their
per-device bytes grow with the batch (compile only, the 'test' preset)."""
import pytest

from experiments import preset_memory
from tests import helpers


@pytest.mark.parametrize("step", preset_memory.STEPS)
def test_step_bytes_are_positive_and_grow_with_the_batch(step):
  config = helpers.load_config()
  small, large = (preset_memory.step_memory(config, step, b) for b in (2, 8))
  for r in (small, large):
    assert r["devices"] == 1
    assert r["argument_size_in_bytes"] > 0 and r["temp_size_in_bytes"] > 0 and r["total"] > 0
    assert r["xla_flops"] > 0
  assert large["temp_size_in_bytes"] > small["temp_size_in_bytes"]
  assert large["total"] > small["total"]
  # The state (parameters, AdamW moments, the DiT's EMA) does not depend on the batch; the batch itself does.
  assert large["params"] == small["params"] > 0
  assert large["argument_size_in_bytes"] > small["argument_size_in_bytes"]
  if step == "dit":  # frame conditioning: the step reads the clips and the frozen VAE's params
    assert "video" in small["inputs"] and small["analytic_flops"] > 0


def test_largest_fit_extrapolates_a_straight_line():
  rows = [{"batch": 4, "total": 10}, {"batch": 8, "total": 18}, {"batch": 16, "skipped": "slow"}]
  fit = preset_memory.largest_fit(rows, limit=30)
  assert (fit["measured"], fit["linear"], fit["bytes_per_example"]) == (8, 14, 2)
  # One measured batch: the temporaries grow in proportion to it, the rest stays.
  fit = preset_memory.largest_fit([{"batch": 4, "total": 10, "temp_size_in_bytes": 8}], limit=30)
  assert (fit["measured"], fit["linear"], fit["bytes_per_example"]) == (4, 14, 2)
