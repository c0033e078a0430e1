"""Fault tolerance: SIGKILLed runs resume bit-exactly, checkpoints move between meshes, damage is skipped."""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import pytest

from tests import helpers
from tests import resume_driver
from vidgen.weights import checkpoint as ckpt_lib
from vidgen.train import loop
from vidgen.train import state as state_lib

STEPS = 16
KILLS = 3


def _start(workdir, cache_dir, log):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="", PYTHONPATH=helpers.ROOT)  # one CPU device
  return subprocess.Popen([sys.executable, "-m", "tests.resume_driver", workdir, str(STEPS), cache_dir],
                          cwd=helpers.ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def _finish(proc, log_path):
  try:
    assert proc.wait(timeout=120) == 0, open(log_path).read()[-3000:]
  finally:
    proc.kill()  # only if still running


def _kill_while_saving(proc, ckpt_dir, target, delay, log_path):
  """SIGKILLs `proc` `delay` seconds after orbax starts writing step `target` (or a later one)."""
  deadline = time.monotonic() + 120
  try:
    while _saving_step(ckpt_dir) < target:
      assert proc.poll() is None, "the run ended before its kill: " + open(log_path).read()[-3000:]
      assert time.monotonic() < deadline, f"no save of step {target} in 120 s: " + open(log_path).read()[-3000:]
      time.sleep(0.002)
    time.sleep(delay)
  finally:
    proc.kill()  # SIGKILL
  assert proc.wait(timeout=60) == -signal.SIGKILL


def _saving_step(ckpt_dir):
  """The step orbax is writing right now (its temporary directory), or -1."""
  names = os.listdir(ckpt_dir) if os.path.isdir(ckpt_dir) else []
  return max((int(n.split(".")[0]) for n in names if "orbax-checkpoint-tmp" in n), default=-1)


def _finalized(ckpt_dir):
  return sorted(int(n) for n in os.listdir(ckpt_dir) if n.isdigit())


def _losses(workdir):
  """step -> every loss logged for it (a resumed run logs the steps after its checkpoint again)."""
  out = {}
  for m in helpers.read_metrics(os.path.join(workdir, "tiny", "metrics.jsonl")):
    out.setdefault(m["step"], set()).add(m["loss"])
  return out


def test_sigkilled_run_resumes_bit_identical(tmp_path):
  """3 SIGKILLs at seeded random steps (mid-save at least once), then a damaged newest checkpoint."""
  cache = str(tmp_path / "jax_cache")  # restarts load the compiled step instead of compiling it
  straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
  with open(tmp_path / "straight.log", "w") as log:
    _finish(_start(straight, cache, log), tmp_path / "straight.log")

  rng = random.Random(0)
  ckpt_dir = os.path.join(killed, "tiny", "checkpoints")
  last, mid_save_kills = 0, 0
  for kill in range(KILLS):
    # Kill while the save of a seeded step >= last + 2 is in flight, so each run makes progress and
    # ends well before STEPS; odd kills wait a seeded moment more, landing anywhere in the step.
    target, delay = last + rng.randint(2, 3), (rng.uniform(0.0, 0.05) if kill % 2 else 0.0)
    log_path = tmp_path / f"killed{kill}.log"
    with open(log_path, "w") as log:
      _kill_while_saving(_start(killed, cache, log), ckpt_dir, target, delay, log_path)
    mid_save_kills += _saving_step(ckpt_dir) >= target  # a half-written step is left behind
    last = _finalized(ckpt_dir)[-1]
    assert target - 1 <= last < STEPS
  assert mid_save_kills >= 1

  # Damage the newest finalized step too: the resume must fall back to the one before it.
  newest = os.path.join(ckpt_dir, str(last))
  for root, _, files in os.walk(os.path.join(newest, "state")):
    for name in files:
      os.truncate(os.path.join(root, name), 0)
  log_path = tmp_path / "resumed.log"
  with open(log_path, "w") as log:
    _finish(_start(killed, cache, log), log_path)
  output = open(log_path).read()
  assert f"Skipping damaged checkpoint step {last} in {ckpt_dir}: " in output, output[-3000:]
  assert f"resuming from the checkpoint at step {last - 1}" in output, output[-3000:]

  a, b = np.load(os.path.join(straight, "final.npz")), np.load(os.path.join(killed, "final.npz"))
  assert sorted(a.files) == sorted(b.files) and len(a.files) == 19  # step, params, Adam, EMA
  for name in a.files:
    assert np.array_equal(a[name], b[name]), name
  # Every step, replayed or not, saw the same batch and rng: one loss per step, the uninterrupted one's.
  reference = _losses(straight)
  assert _losses(killed) == reference and len(reference) == STEPS


def _abstract_state(mesh):
  """The driver model's TrainState as ShapeDtypeStructs, and its shardings by the driver's rules on `mesh`."""
  tx = state_lib.make_optimizer(1e-2, 10, 1)

  def create(rng):
    return state_lib.TrainState.create(resume_driver.init_params(rng), tx, ema_decay=0.9)

  with jax.set_mesh(mesh), nn.logical_axis_rules(resume_driver.RULES):
    return loop.abstract_state(create, jax.random.key(0), mesh, resume_driver.RULES)


def _random_state(mesh, seed=0):
  """Every leaf random (integers too), placed straight onto its sharding: nothing to compile."""
  abstract, shardings = _abstract_state(mesh)
  rng = np.random.RandomState(seed)
  values = jax.tree_util.tree_map(lambda x: np.asarray(rng.randn(*x.shape) * 100).astype(x.dtype), abstract)
  return jax.device_put(values, shardings)


def _mesh(shape, devices):
  return jax.make_mesh(shape, ("data", "fsdp"), axis_types=(jax.sharding.AxisType.Auto,) * 2, devices=devices)


def _config():
  return ml_collections.ConfigDict({"checkpoint_keep": 3})


def test_checkpoint_moves_between_meshes(tmp_path):
  """Saved on data=8, restored onto (data=2, fsdp=4) and onto one device: the same values."""
  assert len(jax.devices()) == 8
  saved = _random_state(_mesh((8, 1), jax.devices()))
  with ckpt_lib.Checkpointer(str(tmp_path)) as checkpointer:
    checkpointer.save(1, saved, None, _config())
  expected = [np.asarray(x) for x in jax.tree_util.tree_leaves(saved)]
  for shape, devices in (((2, 4), jax.devices()), ((1, 1), jax.devices()[:1])):
    abstract, shardings = _abstract_state(_mesh(shape, devices))
    with ckpt_lib.Checkpointer(str(tmp_path)) as checkpointer:
      restored = checkpointer.restore(ckpt_lib.abstract_like(abstract, shardings))
    for got, want, sharding in zip(jax.tree_util.tree_leaves(restored), expected,
                                   jax.tree_util.tree_leaves(shardings)):
      assert got.sharding.is_equivalent_to(sharding, got.ndim)
      assert np.array_equal(np.asarray(got), want)
    kernel = restored.params["Dense_0"]["kernel"]
    shard = (resume_driver.DIM // shape[1], resume_driver.HIDDEN)  # split over fsdp by the rules
    assert {s.data.shape for s in kernel.addressable_shards} == {shard}
    assert restored.step.sharding.is_fully_replicated


def _damage_state_files(step_dir):
  """Truncates the largest array file: restore raises."""
  files = [os.path.join(r, f) for r, _, fs in os.walk(os.path.join(step_dir, "state")) for f in fs]
  biggest = max(files, key=os.path.getsize)
  os.truncate(biggest, os.path.getsize(biggest) // 2)


def _flip_a_bit(step_dir):
  """Flips one bit mid-way through the array data, which orbax alone restores without complaint."""
  files = [os.path.join(r, f) for r, _, fs in os.walk(os.path.join(step_dir, "state")) for f in fs]
  biggest = max(files, key=os.path.getsize)
  data = bytearray(open(biggest, "rb").read())
  data[len(data) // 2] ^= 1
  open(biggest, "wb").write(bytes(data))


def _damage_fingerprint(step_dir):
  """Alters one stored sum: restore succeeds, the state no longer matches (as after a flipped bit)."""
  path = os.path.join(step_dir, "fingerprint", "metadata")
  record = json.load(open(path))
  record["state"]["params/Dense_0/kernel"][0] ^= 1
  json.dump(record, open(path, "w"))


def _damage_data_position(step_dir):
  """Moves the saved data position: valid JSON, wrong batches; only the fingerprint notices."""
  path = os.path.join(step_dir, "data", "process_0-of-1.json")
  state = json.load(open(path))
  state["next_index"] += 1
  json.dump(state, open(path, "w"))


def _delete_metadata(step_dir):
  os.remove(os.path.join(step_dir, "state", "_METADATA"))


# Orbax leaves the coroutines of a failed read unawaited; harmless here.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("damage", [_damage_state_files, _delete_metadata, _flip_a_bit, _damage_fingerprint,
                                    _damage_data_position])
def test_damaged_latest_checkpoint_falls_back(tmp_path, caplog, damage):
  """Step 3 damaged (and step 4 half-written): step 2 is restored with a warning naming step 3."""
  mesh = _mesh((1, 1), jax.devices()[:1])
  abstract, shardings = _abstract_state(mesh)
  data = resume_driver.data_iter()
  saved = {}
  with ckpt_lib.Checkpointer(str(tmp_path), keep=3) as checkpointer:
    for step in (1, 2, 3):
      next(data)
      state = _random_state(mesh, seed=step)
      checkpointer.save(step, state, data, _config())
      saved[step] = (jax.tree_util.tree_map(np.asarray, state), data.get_state())
  damage(str(tmp_path / "3"))
  shutil.copytree(tmp_path / "3", tmp_path / "4.orbax-checkpoint-tmp")  # as a save killed midway leaves it

  target = resume_driver.data_iter()
  with ckpt_lib.Checkpointer(str(tmp_path), keep=3) as checkpointer:
    assert checkpointer.latest_step() == 3  # the half-written step 4 is invisible
    restored = checkpointer.restore(ckpt_lib.abstract_like(abstract, shardings), target)
    assert f"Skipping damaged checkpoint step 3 in {tmp_path}: " in caplog.text
    for got, want in zip(jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(saved[2][0])):
      assert np.array_equal(np.asarray(got), want)
    assert target.get_state() == saved[2][1]
    # Step 3 is moved aside, so the resumed run can save it again.
    assert checkpointer.latest_step() == 2 and os.path.isdir(tmp_path / "3.damaged")
    checkpointer.save(3, restored, target, _config())
  assert sorted(os.listdir(tmp_path)) == ["1", "2", "3", "3.damaged"]  # the half-written step is cleaned up


def test_all_steps_damaged_is_an_error(tmp_path):
  mesh = _mesh((1, 1), jax.devices()[:1])
  state, (abstract, shardings) = _random_state(mesh), _abstract_state(mesh)
  with ckpt_lib.Checkpointer(str(tmp_path)) as checkpointer:
    for step in (1, 2):
      checkpointer.save(step, state, None, _config())
  for step in (1, 2):
    _damage_fingerprint(str(tmp_path / str(step)))
  with ckpt_lib.Checkpointer(str(tmp_path)) as checkpointer:
    with pytest.raises(ckpt_lib.CheckpointError, match=r"steps \[2, 1\] all fail to restore, the newest with Val"):
      checkpointer.restore(ckpt_lib.abstract_like(abstract, shardings))
  assert sorted(os.listdir(tmp_path)) == ["1", "2"]  # nothing is moved when nothing could be restored
