import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vidgen.diffusion import flow
from vidgen.diffusion import sampling


def test_shift_time_endpoints_and_monotone():
  t = np.linspace(0, 1, 11)
  s = flow.shift_time(t, 3.0)
  assert s[0] == 0 and s[-1] == 1 and np.all(np.diff(s) > 0) and np.all(s >= t)
  np.testing.assert_allclose(flow.shift_time(t, 1.0), t)


def test_noisy_and_target_path():
  x0, eps = jnp.ones((2, 3)), jnp.zeros((2, 3))
  x_t, v = flow.noisy_and_target(x0, eps, jnp.array([0.0, 1.0]))
  np.testing.assert_allclose(x_t, [[1, 1, 1], [0, 0, 0]])
  np.testing.assert_allclose(v, -x0)


def test_sample_t_in_unit_interval():
  t = flow.sample_t(jax.random.key(0), 1000, 0.0, 1.0, 3.0)
  assert float(t.min()) > 0 and float(t.max()) < 1 and float(t.mean()) > 0.6


@pytest.mark.parametrize("solver", sampling.SOLVERS)
def test_solvers_transport_exactly_on_a_straight_flow(solver):
  """For data x0 fixed, the true velocity field is v(x, t) = (x - x0) / t; every solver lands on x0 (unipc when
  the velocity is evaluated at the solver's own t, not at Wan's integer timestep)."""
  x0 = jnp.array([[0.5, -1.0]])
  vel = lambda x, t: (x - x0) / t
  kw = dict(integer_timesteps=False) if solver == "unipc" else {}
  out = sampling.sample(vel, jnp.array([[2.0, 3.0]]), num_steps=8, solver=solver, shift=2.0, progress=False, **kw)
  np.testing.assert_allclose(out, x0, atol=1e-5)


def test_higher_order_beats_euler_on_curved_flow():
  """dx/dt = -x from t=1 to 0 has x(0) = x(1) * e; 2nd-order solvers are closer with the same steps."""
  vel = lambda x, t: -x
  exact = np.e
  err = {s: abs(float(sampling.sample(vel, jnp.array(1.0), num_steps=6, solver=s, progress=False)) - exact)
         for s in sampling.SOLVERS}
  assert err["heun"] < err["euler"] / 3 and err["ab2"] < err["euler"] / 2


def test_guidance_combines():
  f = sampling.guided(lambda x, t: (jnp.array(3.0), jnp.array(1.0)), 2.5)
  assert float(f(None, 0.5)) == pytest.approx(1.0 + 2.5 * 2.0)
  with pytest.raises(ValueError, match="sample.steps"):
    sampling.timesteps(0)


@pytest.mark.parametrize("solver", sampling.SOLVERS)
def test_replacing_keeps_known_latent_frames_on_their_path_and_the_model_sees_them(solver):
  """A nonlinear model whose output mixes frames: the known frames still end exactly at y (with unipc at Wan's
  integer timesteps too), the model always sees them at (1 - t) y + t noise, and they change the other frames."""
  keys = jax.random.split(jax.random.key(0), 3)
  noise, y = jax.random.normal(keys[0], (2, 3, 2, 2, 4)), jax.random.normal(keys[1], (2, 3, 2, 2, 4))
  w = jax.random.normal(keys[2], (4, 4))
  known = jnp.array([[True, False, False], [False, False, True]])
  seen = []

  def model(x, t):  # every frame's velocity reads the mean of all frames
    seen.append((x, t))
    return jnp.tanh(x @ w + x.mean(axis=1, keepdims=True)) * (1.0 + t)

  out = sampling.sample(sampling.replacing(model, known, y, noise), noise, num_steps=6, solver=solver, shift=3.0,
                        progress=False)
  k = np.asarray(known)
  np.testing.assert_allclose(np.asarray(out)[k], np.asarray(y)[k], atol=2e-5)
  for x, t in seen:
    np.testing.assert_allclose(np.asarray(x)[k], np.asarray((1 - t) * y + t * noise)[k], atol=1e-6)
  free = sampling.sample(model, noise, num_steps=6, solver=solver, shift=3.0, progress=False)
  assert np.abs(np.asarray(out)[~k] - np.asarray(free)[~k]).max() > 1e-2
