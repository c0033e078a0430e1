"""Samplers for rectified flow with classifier-free guidance, from t = 1 (noise) to t = 0 (data).

Each solver is a Python loop over one jitted guided-velocity call, so a progress bar can follow the
steps and a solver is a few lines: Euler (1st order), Heun (2nd order, two calls per step) and
a 2nd-order Adams-Bashforth multistep ('ab2', one call per step, reuses the previous velocity).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import tqdm

from vidgen.diffusion import flow

SOLVERS = ("euler", "heun", "ab2")


def timesteps(num_steps: int, shift: float = 1.0, t_start: float = 1.0) -> np.ndarray:
  """num_steps + 1 times from t_start down to 0, evenly spaced before the `shift` bend (like the
  training distribution), so a partial trajectory (editing) spends all its steps below t_start."""
  if num_steps < 1:
    raise ValueError(f"sample.steps={num_steps}: must be >= 1")
  if not 0.0 < t_start <= 1.0:
    raise ValueError(f"t_start={t_start}: must be in (0, 1]")
  u_start = t_start / (shift - (shift - 1.0) * t_start)  # the inverse of flow.shift_time
  return np.asarray(flow.shift_time(np.linspace(u_start, 0.0, num_steps + 1), shift), np.float64)


def sample(velocity_fn: Callable, noise, *, num_steps: int, solver: str = "euler", shift: float = 1.0,
           t_start: float = 1.0, progress: bool = True, desc: str = "sampling"):
  """Integrates dx/dt = v(x, t) from t = t_start (x = noise there: pure noise at 1, a noised latent
  below) to 0. velocity_fn(x [B,...], t float) -> v, already guided."""
  if solver not in SOLVERS:
    raise ValueError(f"sample.solver={solver!r}: allowed {SOLVERS}")
  ts = timesteps(num_steps, shift, t_start)
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


def guided(velocity_cond_uncond: Callable, cfg_scale: float) -> Callable:
  """Wraps f(x, t) -> (v_cond, v_uncond) into v_uncond + s (v_cond - v_uncond)."""
  def fn(x, t):
    v_c, v_u = velocity_cond_uncond(x, t)
    return v_u + cfg_scale * (v_c - v_u) if cfg_scale != 1.0 else v_c
  return fn

