"""Samplers for rectified flow with classifier-free guidance, from t = 1 (noise) to t = 0 (data).

Each solver is a Python loop over one jitted guided-velocity call, so a progress bar can follow the
steps and a solver is a few lines: Euler (1st order), Heun (2nd order, two calls per step),
a 2nd-order Adams-Bashforth multistep ('ab2', one call per step, reuses the previous velocity) and
'unipc', Wan 2.1's default sampler: the flow-matching UniPC multistep predictor-corrector (Zhao et al. 2023,
arXiv 2302.04867) on diffusers' UniPCMultistepScheduler schedule, one call per step.

UniPC ('unipc') works on the data prediction x0 = x - t v in log-SNR time lambda = log((1 - t) / t). Each step
first corrects the state that the previous step predicted (UniC, with the velocity just evaluated there, so it
costs no extra call), then predicts the next one (UniP, B(h) = expm1(-h), 'bh2') from the last two x0
predictions; the first step and the last are 1st order (warm-up and `lower_order_final`), and the last lands on
t = 0, i.e. returns the last x0 prediction. It reproduces diffusers' UniPCMultistepScheduler configured as the
Wan 2.1 diffusers checkpoints are (prediction_type='flow_prediction', use_flow_sigmas=True, flow_shift=shift,
solver_order=2, solver_type='bh2', predict_x0=True, lower_order_final=True, final_sigmas_type='zero',
timestep_spacing='linspace', no thresholding, corrector on at every step), including the velocity being
evaluated at Wan's integer timestep floor(1000 t) / 1000 while the update uses t itself
(tests/fixtures/wan/make_sampler.py).
"""
from __future__ import annotations

import math
from typing import Callable

import jax.numpy as jnp
import numpy as np
import tqdm

from vidgen.diffusion import flow

SOLVERS = ("euler", "heun", "ab2", "unipc")
NUM_TRAIN_TIMESTEPS = 1000  # Wan's (and diffusers') timestep scale: timestep = 1000 t


def _check(num_steps: int, t_start: float, solver: str):
  if solver not in SOLVERS:
    raise ValueError(f"sample.solver={solver!r}: allowed {SOLVERS}")
  if num_steps < 1:
    raise ValueError(f"sample.steps={num_steps}: must be >= 1")
  if not 0.0 < t_start <= 1.0:
    raise ValueError(f"t_start={t_start}: must be in (0, 1]")


def timesteps(num_steps: int, shift: float = 1.0, t_start: float = 1.0, solver: str = "euler") -> np.ndarray:
  """num_steps + 1 times from t_start down to 0, evenly spaced before the `shift` bend (like the
  training distribution), so a partial trajectory (editing) spends all its steps below t_start.

  For solver='unipc' these are diffusers' flow sigmas (UniPCMultistepScheduler with use_flow_sigmas=True,
  flow_shift=shift, scheduler.sigmas after set_timesteps(num_steps)): before the bend, num_steps points evenly
  spaced from 1 to 1/1000 (the last 1/1000 short of the next point), the first one nudged down by 1e-6 when it
  is within 1e-6 of 1 (diffusers does so to keep log(1 - t) finite), rounded to float32, then a final 0.
  With t_start < 1 the same unbent grid is scaled by the unbent t_start, so the schedule starts at t_start."""
  _check(num_steps, t_start, solver)
  if solver == "unipc":
    return np.concatenate([_unipc_times(num_steps, shift, t_start), [0.0]]).astype(np.float32).astype(np.float64)
  u_start = t_start / (shift - (shift - 1.0) * t_start)  # the inverse of flow.shift_time
  return np.asarray(flow.shift_time(np.linspace(u_start, 0.0, num_steps + 1), shift), np.float64)


def _unipc_times(num_steps: int, shift: float, t_start: float) -> np.ndarray:
  """The num_steps nonzero times of the unipc schedule in float64, before diffusers' float32 rounding (its integer
  timesteps are taken from these)."""
  u_start = 1.0 if t_start == 1.0 else t_start / (shift - (shift - 1.0) * t_start)
  u = np.linspace(1.0, 1.0 / NUM_TRAIN_TIMESTEPS, num_steps + 1)[:-1] * u_start
  t = np.asarray(flow.shift_time(u, shift), np.float64)
  if abs(t[0] - 1.0) < 1e-6:
    t[0] -= 1e-6
  return t


def unipc_model_times(num_steps: int, shift: float = 1.0, t_start: float = 1.0) -> np.ndarray:
  """The num_steps times at which 'unipc' evaluates the velocity (with integer_timesteps=True): Wan's and
  diffusers' integer timesteps int(1000 t) / 1000 (truncated, so 999 for the first step from pure noise)."""
  _check(num_steps, t_start, "unipc")
  return (_unipc_times(num_steps, shift, t_start) * NUM_TRAIN_TIMESTEPS).astype(np.int64) / NUM_TRAIN_TIMESTEPS


def sample(velocity_fn: Callable, noise, *, num_steps: int, solver: str = "euler", shift: float = 1.0,
           t_start: float = 1.0, progress: bool = True, desc: str = "sampling", integer_timesteps: bool = True):
  """Integrates dx/dt = v(x, t) from t = t_start (x = noise there: pure noise at 1, a noised latent
  below) to 0. velocity_fn(x [B,...], t float) -> v, already guided.

  integer_timesteps (unipc only): evaluate the velocity at Wan's integer timestep int(1000 t) / 1000 as Wan and
  diffusers do (the update still uses t itself); False evaluates it at t."""
  if solver not in SOLVERS:
    raise ValueError(f"sample.solver={solver!r}: allowed {SOLVERS}")
  ts = timesteps(num_steps, shift, t_start, solver)
  if solver == "unipc":
    model_ts = unipc_model_times(num_steps, shift, t_start) if integer_timesteps else ts[:-1]
    return _sample_unipc(velocity_fn, noise, ts, model_ts, progress=progress, desc=desc)
  x = noise
  prev_v = None
  for i in tqdm.trange(num_steps, desc=desc, disable=not progress, leave=False):
    t, t_next = float(ts[i]), float(ts[i + 1])
    dt = t_next - t
    v = velocity_fn(x, t)
    if solver == "euler" or (solver == "ab2" and prev_v is None):
      x_next = x + dt * v
    elif solver == "ab2":
      # Variable-step Adams-Bashforth 2: extrapolate the velocity from the last two evaluations.
      h_prev = t - float(ts[i - 1])
      r = dt / h_prev
      x_next = x + dt * ((1 + 0.5 * r) * v - 0.5 * r * prev_v)
    else:  # heun
      x_euler = x + dt * v
      if t_next > 0:
        v_next = velocity_fn(x_euler, t_next)
        x_next = x + dt * 0.5 * (v + v_next)
      else:
        x_next = x_euler
    prev_v = v
    x = x_next
  return x


def _sample_unipc(velocity_fn: Callable, x, ts: np.ndarray, model_ts: np.ndarray, *, progress: bool, desc: str):
  """UniPC-2 (bh2, data prediction) over the times ts (ts[-1] = 0), evaluating the velocity at model_ts.

  In lambda = log(alpha / t) with alpha = 1 - t, the exact solution from t_s to t_n (step h = lambda_n - lambda_s)
  is x_n = (t_n / t_s) x_s + alpha_n int e^{-(lambda_n - l)} x0(l) dl, and with x0 taken constant it is
  x_n = (t_n / t_s) x_s - alpha_n expm1(-h) x0_s. Both the predictor and the corrector add to this the linear
  change of x0, from a difference D of x0 predictions divided by its lambda distance in units of h (r), weighted
  by coefficients solved from the phi functions of -h (divided by B(h) = expm1(-h))."""
  n = len(ts) - 1
  ts = [float(t) for t in ts]
  lam = [math.log(1.0 - t) - math.log(t) for t in ts[:-1]]  # the final t = 0 has lambda = +inf
  x0s = []           # the x0 predictions of the last two steps, newest last
  x_in = None        # the state the previous step predicted from (after its correction)
  prev_order = 1
  for i in tqdm.trange(n, desc=desc, disable=not progress, leave=False):
    x0 = x - ts[i] * velocity_fn(x, float(model_ts[i]))
    if i > 0:  # UniC: redo the previous step from x_in, now with this step's x0 as the end point
      x = _unic(x_in, x0s, x0, ts[i - 1], ts[i], lam[i - 2] if i >= 2 else None, lam[i - 1], lam[i], prev_order)
    x0s = (x0s + [x0])[-2:]
    order = 1 if i == 0 or i == n - 1 else 2
    x_in = x
    if ts[i + 1] == 0.0:  # the last step (1st order): all the way to the data, x = x0
      x = x0
    else:
      x = _unip(x, x0s, ts[i], ts[i + 1], lam[i - 1] if order == 2 else None, lam[i], lam[i + 1], order)
    prev_order = order
  return x


def _phi_weights(h: float):
  """(B(h), b1, b2) for a step of h in lambda, B(h) = expm1(-h) ('bh2'): the right-hand sides of UniPC's order
  conditions, b1 = c1 / B(h) and b2 = 2 c2 / B(h) with c1 = expm1(-h) / (-h) - 1 and c2 = c1 / (-h) - 1/2."""
  hh = -h
  e = math.expm1(hh)
  c1 = e / hh - 1.0
  c2 = c1 / hh - 0.5
  return e, c1 / e, 2.0 * c2 / e


def _unip(x, x0s, t_s, t_n, lam_p, lam_s, lam_n, order):
  """Predictor from t_s to t_n with x0s[-1] (at t_s) and, for order 2, x0s[-2] (at lambda lam_p)."""
  h = lam_n - lam_s
  e, _, _ = _phi_weights(h)
  alpha_n = 1.0 - t_n
  out = (t_n / t_s) * x - (alpha_n * e) * x0s[-1]
  if order == 2:
    r = (lam_p - lam_s) / h
    # order-2 UniP uses the fixed weight 1/2 on the (scaled) difference, as diffusers does
    out = out - (alpha_n * e * 0.5 / r) * (x0s[-2] - x0s[-1])
  return out


def _unic(x_in, x0s, x0_n, t_s, t_n, lam_p, lam_s, lam_n, order):
  """Corrector of the step t_s -> t_n, redone from x_in with the x0 prediction x0_n at its end point: x0s is
  [x0 at t_s] for order 1 and [x0 at lambda lam_p, x0 at t_s] for order 2."""
  h = lam_n - lam_s
  e, b1, b2 = _phi_weights(h)
  alpha_n = 1.0 - t_n
  x0_s = x0s[-1]
  out = (t_n / t_s) * x_in - (alpha_n * e) * x0_s
  if order == 1:
    return out - (alpha_n * e * 0.5) * (x0_n - x0_s)
  r = (lam_p - lam_s) / h
  # Solve [[1, 1], [r, 1]] [w_p, w_n] = [b1, b2] for the weights of the two scaled differences.
  w_p = (b1 - b2) / (1.0 - r)
  w_n = b1 - w_p
  return out - (alpha_n * e) * ((w_p / r) * (x0s[-2] - x0_s) + w_n * (x0_n - x0_s))


def replacing(velocity_fn: Callable, known, y, noise) -> Callable:
  """Wraps v(x, t) so the latent frames where `known` ([B, T] bool) is set follow the straight path from `noise`
  to the known latents y ([B, T, h, w, z]): the model sees them at (1 - t) y + t noise, and their velocity is
  noise - y, whose x0 prediction is y at every step. Every solver here is exact for a constant x0 (Euler, AB2
  and Heun for a constant velocity, UniPC's exponential integrator), so from x = noise at t = 1 those frames stay
  on the path and end at y, while the model fills the others in context (conditioning by replacement, for a DiT
  trained without frame conditioning)."""
  k = jnp.asarray(known)[:, :, None, None, None]
  v_known = noise - y
  def fn(x, t):
    x = jnp.where(k, (1.0 - t) * y + t * noise, x)
    return jnp.where(k, v_known, velocity_fn(x, t))
  return fn


def guided(velocity_cond_uncond: Callable, cfg_scale: float) -> Callable:
  """Wraps f(x, t) -> (v_cond, v_uncond) into v_uncond + s (v_cond - v_uncond)."""
  def fn(x, t):
    v_c, v_u = velocity_cond_uncond(x, t)
    return v_u + cfg_scale * (v_c - v_u) if cfg_scale != 1.0 else v_c
  return fn
