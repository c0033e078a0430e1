"""Real multi-host runs on one machine: 2 processes x 4 CPU devices (gloo collectives) against 1 x 8.

Both read the same global batches (each host its rows) and shard the same way, so their losses agree to
float rounding. The default test drives the real training loop with a small model (tests/resume_driver.py);
the tiny preset's VAE through the CLI takes minutes (gloo all-reduces each of its many small arrays), so
that one is marked slow (run it with --runslow).
"""
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tests import helpers
from vidgen import main as main_lib

STEPS = 20
PREEMPT_STEPS = 120


def _env(devices: int) -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  env["PYTHONPATH"] = helpers.ROOT + os.pathsep + env.get("PYTHONPATH", "")
  return env


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _start_two_processes(command, env=None) -> list[subprocess.Popen]:
  """Starts command(coordinator, process_id) as processes 0 and 1 with 4 devices each (and `env` added)."""
  coordinator = f"127.0.0.1:{_free_port()}"
  return [subprocess.Popen(command(coordinator, i), env={**_env(4), **(env or {})}, cwd=helpers.ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]


def _outputs(procs, timeout) -> list[str]:
  """Their output once both have exited; the test fails if they have not within `timeout` s."""
  deadline = time.monotonic() + timeout
  try:
    return [p.communicate(timeout=max(deadline - time.monotonic(), 0))[0] for p in procs]
  except subprocess.TimeoutExpired:
    for p in procs:
      p.kill()
    pytest.fail(f"still running after {timeout} s: " + "\n".join(p.communicate()[0][-1500:] for p in procs))
  finally:
    for p in procs:
      p.kill()  # only if still running


def _run_two_processes(command, env=None) -> list[str]:
  """Runs command(coordinator, process_id) as processes 0 and 1 with 4 devices each; returns their output."""
  procs = _start_two_processes(command, env)
  outputs = _outputs(procs, 500)
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-3000:]
  return outputs


def _losses(metrics_path) -> np.ndarray:
  rows = helpers.read_metrics(metrics_path)
  assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
  return np.array([r["loss"] for r in rows])


def test_two_processes_train_like_one(tmp_path):
  single, multi = tmp_path / "single", tmp_path / "multi"
  driver = [sys.executable, "-m", "tests.resume_driver"]
  subprocess.run([*driver, str(single), str(STEPS), str(tmp_path / "cache")], env=_env(8), cwd=helpers.ROOT,
                 check=True, capture_output=True)
  _run_two_processes(lambda coordinator, i: [*driver, str(multi), str(STEPS), "-", coordinator, "2", str(i)])

  np.testing.assert_allclose(_losses(multi / "tiny" / "metrics.jsonl"), _losses(single / "tiny" / "metrics.jsonl"),
                             rtol=0, atol=1e-5)
  with np.load(single / "final.npz") as a, np.load(multi / "final.npz") as b:
    assert sorted(a) == sorted(b)
    for key in a:
      np.testing.assert_allclose(b[key], a[key], rtol=0, atol=1e-5, err_msg=key)


def test_sigterm_to_one_process_stops_both_at_the_same_step(tmp_path):
  """SIGTERM reaches process 1 only, mid-run: both save the same step and exit 143; the resumed run ends
  bit-identical to an uninterrupted one."""
  straight, preempted = tmp_path / "straight", tmp_path / "preempted"

  def command(workdir):
    return lambda coordinator, i: [sys.executable, "-m", "tests.resume_driver", str(workdir), str(PREEMPT_STEPS),
                                   "-", coordinator, "2", str(i)]
  env = {"RESUME_DRIVER_CKPT_EVERY": str(10 * PREEMPT_STEPS)}  # saves only the final step (and the stop step)
  _run_two_processes(command(straight), env)

  procs = _start_two_processes(command(preempted), env)
  metrics, deadline = preempted / "tiny" / "metrics.jsonl", time.monotonic() + 120
  while not (metrics.exists() and metrics.read_text().count("\n") >= 3):  # process 0 logs every step
    assert all(p.poll() is None for p in procs) and time.monotonic() < deadline, "no steps logged"
    time.sleep(0.05)
  procs[1].send_signal(signal.SIGTERM)  # a step takes tens of ms: the signal lands well before the last one
  outputs = _outputs(procs, 60)  # before the fix, process 1 entered the save alone and the job hung
  stop = helpers.read_metrics(metrics)[-1]["step"]
  assert 3 <= stop < PREEMPT_STEPS, f"the signal came after the run ended, at step {stop}"
  for p, out in zip(procs, outputs):
    assert p.returncode == 143 and f"SIGTERM at step {stop}: checkpoint saved" in out, out[-3000:]
  assert os.listdir(preempted / "tiny" / "checkpoints") == [str(stop)]

  outputs = _run_two_processes(command(preempted), env)
  assert f"resuming from the checkpoint at step {stop}" in outputs[0], outputs[0][-3000:]
  with np.load(straight / "final.npz") as a, np.load(preempted / "final.npz") as b:
    assert sorted(a) == sorted(b)
    for key in a:
      np.testing.assert_array_equal(b[key], a[key], err_msg=key)


@pytest.mark.slow  # minutes long
def test_tiny_preset_two_processes_train_like_one(tmp_path):
  single, multi = tmp_path / "single", tmp_path / "multi"
  overrides = {"data.num_train": 64, "data.num_heldout": 16, "data.num_val": 16, "train_vae.steps": STEPS,
               "train_vae.log_every": 1, "train_vae.ckpt_every": STEPS}
  config = helpers.load_config("tiny", **overrides)
  main_lib.run(config, str(single), "data", progress=False)  # this process has the 8 (faked) devices
  main_lib.run(config, str(single), "train_vae", progress=False)
  os.makedirs(multi)
  os.symlink(single / "data", multi / "data")  # the same clips

  args = ["--config=configs/shapes.py:tiny", *(f"--config.{k}={v}" for k, v in overrides.items()), "--no_progress"]
  outputs = _run_two_processes(lambda coordinator, i: [
      sys.executable, "-m", "vidgen.main", f"--workdir={multi}", "--mode=train_vae", *args, "--distributed=flags",
      f"--coordinator_address={coordinator}", "--num_processes=2", f"--process_id={i}"])
  assert "8 cpu device(s) over 2 processes" in outputs[0]
  np.testing.assert_allclose(_losses(multi / "vae" / "metrics.jsonl"), _losses(single / "vae" / "metrics.jsonl"),
                             rtol=0, atol=1e-5)
