"""experiments/time_to_quality.py's bookkeeping on synthetic logs (no training), and the DiT of one checkpoint step
(vidgen.models.load with step=)."""
import json

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from experiments import time_to_quality as ttq
from vidgen.models import load
from vidgen.weights import checkpoint as ckpt_lib

# Logged every 2 steps and at the last: step_time_s and flops_per_step are each interval's per-step means.
VAE_ROWS = [dict(step=2, step_time_s=1.0, flops_per_step=10.0), dict(step=4, step_time_s=2.0, flops_per_step=10.0)]
DIT_ROWS = [dict(step=2, step_time_s=0.5, flops_per_step=100.0), dict(step=4, step_time_s=1.0, flops_per_step=100.0),
            dict(step=5, step_time_s=3.0, flops_per_step=200.0)]


def test_wall_and_flops_at_checkpoint_steps():
  # The logged DiT steps sum to 0, 1, 3, 6 s at steps 0, 2, 4, 5; report.json's 8 s leave 2 s before step 1.
  c = ttq.cost_curve(VAE_ROWS, DIT_ROWS, dict(data=1.0, train_vae=10.0, train_dit=8.0, evaluate=5.0), [3, 5])
  assert c["vae_wall_s"] == 11.0 and c["vae_flops"] == 40.0 and c["dit_overhead_s"] == 2.0
  assert c["wall_s"] == [11.0 + 2.0 + 2.0, 11.0 + 8.0]  # step 3 between the rows of 2 and 4; 5 ends the stage
  assert c["flops"] == [40.0 + 300.0, 40.0 + 400.0 + 200.0]
  assert c["wall_source"] == dict(vae="report", dit="report")


def test_without_report_seconds_the_logged_steps_alone():
  c = ttq.cost_curve(VAE_ROWS, DIT_ROWS, {}, [2, 5])
  assert c["wall_s"] == [6.0 + 1.0, 6.0 + 6.0] and c["dit_overhead_s"] == 0.0
  assert c["wall_source"] == dict(vae="metrics", dit="metrics")
  # A resumed stage's report times its last invocation only, less than its logged steps: those are used.
  c = ttq.cost_curve(VAE_ROWS, DIT_ROWS, dict(data=1.0, train_vae=10.0, train_dit=4.0), [5])
  assert c["wall_s"] == [11.0 + 6.0] and c["wall_source"]["dit"] == "metrics"
  with pytest.raises(ValueError, match="past the last logged step 5"):
    ttq.at_steps(DIT_ROWS, "step_time_s", [6])


def test_a_resumed_run_logs_steps_again_and_the_last_row_counts(tmp_path):
  rows = DIT_ROWS[:2] + [dict(DIT_ROWS[1], step_time_s=9.0)] + DIT_ROWS[2:]  # step 4 logged twice
  path = tmp_path / "metrics.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  read = ttq.read_metrics(str(path))
  assert [r["step"] for r in read] == [2, 4, 5] and read[1]["step_time_s"] == 9.0


def test_load_a_run_judged_before(tmp_path):
  path = tmp_path / "points.json"
  path.write_text(json.dumps(dict(target=0.9, runs=[dict(label="a", points=[1]), dict(label="b", points=[2])])))
  assert ttq.load_run("b", str(path)) == dict(label="b", points=[2])
  with pytest.raises(ttq.app.UsageError, match=r"no run labelled 'c' there, and it holds 2 runs \(a, b\)"):
    ttq.load_run("c", str(path))
  path.write_text(json.dumps(dict(target=0.9, runs=[dict(label="a", points=[1])])))
  assert ttq.load_run("old", str(path)) == dict(label="old", points=[1])  # its only run, relabelled
  assert ttq.parse_run("old:x.json", "load") == ("old", "x.json")
  path.write_text("{not json")
  with pytest.raises(ttq.app.UsageError, match=r"--load=old:.*: not a points JSON this script wrote"):
    ttq.load_run("old", str(path))
  with pytest.raises(ttq.app.UsageError, match=r"--load='x.json': expected LABEL:JSON"):
    ttq.parse_run("x.json", "load")


def test_saved_config_over_todays_preset():
  base = ml_collections.ConfigDict(dict(a=1, dims=(1, 2), sub=dict(x="k", new=3.0)))
  missing = ttq.overlay(base, dict(a=2, dims=[4, 8], sub=dict(x="j"), gone=5))
  assert base.a == 2 and base.dims == (4, 8) and base.sub.x == "j" and base.sub.new == 3.0
  assert missing == ["sub.new"]


def test_denoiser_params_of_one_step(tmp_path):
  workdir = str(tmp_path)
  config = ml_collections.ConfigDict({"checkpoint_keep": 3})
  with ckpt_lib.Checkpointer(load.checkpoint_dir(workdir, "dit"), keep=3) as checkpointer:
    for step in (2, 4):
      state = dict(step=jnp.int32(step), params={"w": jnp.full(3, step, jnp.float32)},
                   ema_params={"w": jnp.full(3, -step, jnp.float32)})
      checkpointer.save(step, state, None, config)
  assert load.checkpoint_steps(workdir, "dit") == [2, 4]
  assert np.array_equal(load.denoiser_params(workdir, use_ema=True, step=2)["w"], [-2, -2, -2])
  assert np.array_equal(load.denoiser_params(workdir, use_ema=False, step=2)["w"], [2, 2, 2])
  assert np.array_equal(load.denoiser_params(workdir, use_ema=True)["w"], [-4, -4, -4])  # the newest
  for step in (1, 3):  # before every kept step, between two
    with pytest.raises(ckpt_lib.CheckpointError, match=rf"step {step} .* missing or damaged \(steps there: \[2, 4\]\)"):
      load.denoiser_params(workdir, use_ema=True, step=step)
  # A damaged step: restore would fall back to step 2; asked for step 4 exactly, it raises instead.
  path = tmp_path / "dit" / "checkpoints" / "4" / "fingerprint" / "metadata"
  record = json.loads(path.read_text())
  record["state"]["ema_params/w"][0] ^= 1
  path.write_text(json.dumps(record))
  with pytest.raises(ckpt_lib.CheckpointError, match=r"step 4 .* missing or damaged"):
    load.denoiser_params(workdir, use_ema=True, step=4)
