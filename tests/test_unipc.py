"""solver='unipc' against diffusers' UniPCMultistepScheduler with Wan 2.1's scheduler config, through the fixture
tests/fixtures/wan/make_sampler.py writes (no torch here): the schedule, every step's state, cfg, partial
trajectories."""
import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from vidgen.diffusion import sampling

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "wan", "sampler")


def _load():
  path = os.path.join(FIXTURE, "unipc.npz")
  if not os.path.exists(path):
    pytest.fail(f"{path} missing: run /tmp/refenv/bin/python tests/fixtures/wan/make_sampler.py")
  with open(os.path.join(FIXTURE, "meta.json")) as f:
    meta = json.load(f)
  with np.load(path) as data:
    return dict(data), meta["cases"]


DATA, CASES = _load()


def field(x, t, a, b):
  """The fixture's velocity field (make_sampler.field), in numpy or jax."""
  flat = x.reshape(x.shape[0], -1)
  return ((0.7 + 0.5 * np.cos(3.0 * t)) * (flat @ a.T) + (1.0 - 0.8 * t) * b).reshape(x.shape)


def cond_uncond(x, t):
  return field(x, t, DATA["A"], DATA["b"]), field(x, t, DATA["A_u"], DATA["b_u"])


def run(name, dtype=None):
  """vidgen's unipc on a fixture case: the state after every step (the state each later velocity call sees, then
  the output), and the number of velocity calls."""
  case = CASES[name]
  seen = []
  combined = sampling.guided(cond_uncond, case["cfg"]) if case["cfg"] is not None else (
      lambda x, t: cond_uncond(x, t)[0])

  def velocity(x, t):
    seen.append(np.asarray(x, np.float64))
    return combined(x, t)

  x = DATA[f"{name}__x_init"]
  if dtype is not None:
    x = jnp.asarray(x, dtype)
  out = sampling.sample(velocity, x, num_steps=case["steps"], solver="unipc", shift=case["shift"],
                        t_start=case["t_start"], progress=False, integer_timesteps=case["model_t"] == "int")
  return seen[1:] + [np.asarray(out, np.float64)], len(seen)


def max_rel_errors(states, ref):
  return [float(np.abs(s - r).max() / np.abs(r).max()) for s, r in zip(states, ref)]


@pytest.mark.parametrize("name", sorted(CASES))
def test_schedule_is_diffusers_sigmas(name):
  case = CASES[name]
  ts = sampling.timesteps(case["steps"], case["shift"], case["t_start"], solver="unipc")
  ref = DATA[f"{name}__sigmas"]
  assert ts.shape == ref.shape and ts[-1] == 0.0
  np.testing.assert_allclose(ts, ref, rtol=0, atol=1e-6)
  model_t = sampling.unipc_model_times(case["steps"], case["shift"], case["t_start"])
  np.testing.assert_array_equal(np.round(model_t * 1000).astype(np.int64), DATA[f"{name}__timesteps"])


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_step_matches_diffusers(name):
  states, calls = run(name)
  ref = DATA[f"{name}__states"]
  assert calls == CASES[name]["steps"] == len(ref)  # one velocity call per step
  errs = max_rel_errors(states, ref)
  assert max(errs) < 1e-5, f"{name}: max relative error per step {errs}"


def test_velocity_time_convention_is_visible_in_the_fixture():
  """Evaluating the velocity at t instead of Wan's integer timestep moves the result well past the tolerance, so
  the fixture pins the convention."""
  name = "int_n10_s3"
  case = CASES[name]
  out = sampling.sample(lambda x, t: cond_uncond(x, t)[0], DATA[f"{name}__x_init"], num_steps=case["steps"],
                        solver="unipc", shift=case["shift"], progress=False, integer_timesteps=False)
  assert max_rel_errors([out], DATA[f"{name}__states"][-1:])[0] > 1e-4


def test_cfg_through_guided_in_jax_float32():
  name = "int_n20_s5_cfg5"
  states, _ = run(name, jnp.float32)
  errs = max_rel_errors(states, DATA[f"{name}__states"])
  assert max(errs) < 1e-4, errs


def test_partial_trajectory_starts_at_t_start_and_transports_a_straight_flow():
  ts = sampling.timesteps(12, 3.0, 0.6, solver="unipc")
  assert ts[0] == pytest.approx(0.6, abs=1e-7) and ts[-1] == 0 and np.all(np.diff(ts) < 0)
  x0 = jnp.array([[0.5, -1.0]])
  noised = 0.4 * x0 + 0.6 * jnp.array([[2.0, 3.0]])
  out = sampling.sample(lambda x, t: (x - x0) / t, noised, num_steps=12, solver="unipc", shift=3.0, t_start=0.6,
                        progress=False, integer_timesteps=False)
  np.testing.assert_allclose(out, x0, atol=1e-5)


def test_other_solvers_keep_their_schedule():
  np.testing.assert_array_equal(sampling.timesteps(8, 2.0, 0.7), sampling.timesteps(8, 2.0, 0.7, solver="ab2"))
  assert sampling.timesteps(4, 1.0)[0] == 1.0  # no diffusers nudge outside unipc
  np.testing.assert_allclose(sampling.timesteps(4, 1.0), [1.0, 0.75, 0.5, 0.25, 0.0])


def test_bad_solver_names_and_arguments():
  for bad in ("UniPC", "unipc2", "dpm++"):
    with pytest.raises(ValueError, match=r"sample\.solver=.*allowed \('euler', 'heun', 'ab2', 'unipc'\)"):
      sampling.sample(lambda x, t: x, np.zeros(2), num_steps=2, solver=bad, progress=False)
    with pytest.raises(ValueError, match="sample.solver"):
      sampling.timesteps(4, 3.0, solver=bad)
  with pytest.raises(ValueError, match="sample.steps"):
    sampling.timesteps(0, 3.0, solver="unipc")
  with pytest.raises(ValueError, match="t_start"):
    sampling.sample(lambda x, t: x, np.zeros(2), num_steps=2, solver="unipc", t_start=1.5, progress=False)
