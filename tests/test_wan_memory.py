"""experiments/wan_memory.py as its docstring runs it: Wan 2.1 14B on fsdp=8 (faked CPU devices), compile only."""
import json
import os
import subprocess
import sys

from tests import helpers


def test_wan_14b_parameters_split_8_ways_and_the_step_memory_is_the_attention_scores(tmp_path):
  out = tmp_path / "wan_memory.json"
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # the script fakes its own 8 devices
  run = subprocess.run([sys.executable, "experiments/wan_memory.py", "--frames=17", f"--out={out}"], cwd=helpers.ROOT,
                       env=env, capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  assert "| dit_bfloat16 |" in run.stdout and "Sampling step per device" in run.stdout
  r = json.loads(out.read_text())
  assert r["mesh"] == {"data": 1, "fsdp": 8, "context": 1, "tensor": 1}
  p = r["params"]
  assert 14.0e9 < p["dit_float32"]["params"] < 14.5e9 and 5.6e9 < p["umt5_float32"]["params"] < 5.8e9
  for tree in p.values():
    assert tree["ratio"] <= 1.05 and tree["meets_target"], tree
  # bfloat16 storage keeps norms, modulation and the time embedding float32: a little over half the f32 bytes.
  assert 0.5 < p["dit_bfloat16"]["total_bytes"] / p["dit_float32"]["total_bytes"] < 0.51
  (step,) = r["step"]
  assert step["latent_grid"] == [5, 60, 104] and step["tokens"] == 7800 and step["attention"] == "xla"
  assert step["compute_dtype"] == "bfloat16" and step["examples_per_device"] == 1
  # Arguments are the bf16 parameter shard (+ the small inputs); temporaries are led by the [1, 40, L, L] scores.
  assert 0 <= step["argument_size_in_bytes"] - p["dit_bfloat16"]["per_device_bytes"] < 32 * 2**20
  assert step["largest_buffers"][0]["bytes"] == step["self_attention_scores_per_device_bytes"]
  assert 2 * step["self_attention_scores_per_device_bytes"] <= step["temp_size_in_bytes"]
