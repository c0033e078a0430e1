"""Multi-host start-up: `jax.distributed` from flags or the environment, and host-0-first helpers.

Every process of a multi-host job runs the same command; they find each other through a coordinator
(process 0's host:port). On TPU pods and SLURM/Open MPI clusters JAX discovers everything itself
(`--distributed=auto`); elsewhere give the coordinator, the process count and this process's id, by
flag or by the JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID environment variables.
"""
from __future__ import annotations

import os

import jax
from jax.experimental import multihost_utils

ENV = {"coordinator_address": "JAX_COORDINATOR_ADDRESS", "num_processes": "JAX_NUM_PROCESSES",
       "process_id": "JAX_PROCESS_ID"}


def settings_from(distributed: str, coordinator_address: str | None = None, num_processes: int | None = None,
                  process_id: int | None = None, environ=os.environ) -> dict | None:
  """The keyword arguments for jax.distributed.initialize, or None for a single-process run.

  distributed: 'off' (one process), 'auto' (the cluster tells JAX), or 'flags' (the three values below,
  each falling back to its environment variable).
  """
  if distributed == "off":
    return None
  if distributed == "auto":
    return {}
  if distributed != "flags":
    raise ValueError(f"--distributed={distributed!r}: allowed 'off', 'auto', 'flags'")
  values = {"coordinator_address": coordinator_address, "num_processes": num_processes, "process_id": process_id}
  for name, var in ENV.items():
    if values[name] is None and environ.get(var):
      values[name] = environ[var] if name == "coordinator_address" else int(environ[var])
  missing = [f"--{n} (or {ENV[n]})" for n, v in values.items() if v is None]
  if missing:
    raise ValueError(f"--distributed=flags needs {', '.join(missing)}")
  if not 0 <= values["process_id"] < values["num_processes"]:
    raise ValueError(f"--process_id={values['process_id']} must be in [0, --num_processes="
                     f"{values['num_processes']})")
  return values


def initialize(settings: dict | None) -> None:
  """Joins the job (a no-op for None). CPU processes exchange collectives over gloo."""
  if settings is None:
    return
  jax.config.update("jax_cpu_collectives_implementation", "gloo")  # only affects CPU devices
  jax.distributed.initialize(**settings)


def is_primary() -> bool:
  return jax.process_index() == 0


def primary_first(name: str, fn):
  """Runs fn on process 0, then (after a barrier) on the others: e.g. building a shared dataset once,
  which the others then find ready. Returns fn's result."""
  if jax.process_count() == 1:
    return fn()
  result = fn() if is_primary() else None
  multihost_utils.sync_global_devices(name)
  return result if is_primary() else fn()
