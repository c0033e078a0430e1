"""The training loop shared by the VAE and DiT trainers.

Build the abstract state with jax.eval_shape, derive its shardings from the logical axis rules,
create it with jax.jit(out_shardings=...), compile the step ahead of time (logging FLOPs and
memory; once per batch shape when buckets vary it), then step, log, checkpoint, and resume from the
newest checkpoint when one exists.
"""
from __future__ import annotations

import dataclasses
import functools
import signal
import time
from typing import Any, Callable, Iterator

from absl import logging
import flax.linen as nn
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np
import tqdm

from vidgen import atomic_files
from vidgen.parallel import device_peaks
from vidgen.parallel import mesh as mesh_lib
from vidgen.parallel import sharding as sharding_lib
from vidgen.train import metrics as metrics_lib
from vidgen.train import state as state_lib
from vidgen.weights import checkpoint as ckpt_lib


@dataclasses.dataclass
class TrainSpec:
  """What differs between trainers; everything else is this loop."""
  name: str                      # 'vae' or 'dit'; the subdirectory of the workdir
  init_params: Callable          # rng -> boxed params (nn.Partitioned leaves)
  loss_fn: Callable              # (params, batch, rng) -> (loss, metrics dict)
  data_iter: Iterator            # a checkpointable grain iterator of host-local numpy batches
  steps: int
  batch_size: int
  lr: float
  warmup_steps: int
  weight_decay: float
  grad_clip: float
  log_every: int
  ckpt_every: int
  ema_decay: float = 0.0
  rules: tuple = ()
  grad_accum_steps: int = 1      # micro-batches per step; their gradients are averaged
  optimizer: str = "adamw"       # state.OPTIMIZERS
  muon_lr: float = 0.02          # the dense kernels' peak rate with optimizer='muon'
  muon_modules: tuple = ()       # the top-level modules whose kernels Muon takes (all if empty)
  compute_dtype: str = "float32"  # picks the device peak that MFU divides by
  # Matmul FLOPs per step (vidgen/models/flops.py), or a function of the batch when shapes vary by bucket;
  # else XLA's count.
  analytic_flops: float | Callable | None = None
  # Trained elsewhere and only read by the loss (the DiT's VAE): passed to the step as a replicated argument,
  # not baked into it as constants; the loss is then (params, batch, rng, frozen).
  frozen: Any = None


class _Preemption:
  """Turns SIGTERM into a save-and-exit at the next step boundary."""

  def __init__(self):
    self.requested = False
    self._old = None

  def __enter__(self):
    try:
      self._old = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread
      self._old = None
    return self

  def _handle(self, *_):
    self.requested = True

  def __exit__(self, *_):
    if self._old is not None:
      signal.signal(signal.SIGTERM, self._old)


def train(spec: TrainSpec, *, workdir: str, config, mesh, seed: int, progress: bool = True):
  """Runs (or resumes) training to spec.steps; returns the final TrainState."""
  logdir = f"{workdir}/{spec.name}"
  create = state_creator(spec)
  init_rng, step_rng = step_rngs(seed)
  # Before the mesh context: on CPU the peak is a matmul measured on one device.
  peak, peak_source = device_peaks.peak_flops(mesh.devices.flat[0], spec.compute_dtype)

  with jax.set_mesh(mesh), nn.logical_axis_rules(spec.rules):
    abstract, shardings = abstract_state(create, init_rng, mesh, spec.rules)

    checkpointer = ckpt_lib.Checkpointer(f"{logdir}/checkpoints", keep=config.checkpoint_keep)
    start = checkpointer.latest_step()
    if start is not None:  # the newest intact checkpoint: damaged ones are skipped with a warning
      state = checkpointer.restore(ckpt_lib.abstract_like(abstract, shardings), spec.data_iter)
      start = int(state.step)
      tqdm.tqdm.write(f"{spec.name}: resuming from the checkpoint at step {start}")
    else:
      state = jax.jit(lambda r: nn.unbox(create(r)), out_shardings=shardings)(init_rng)
      start = 0
    if start >= spec.steps:
      checkpointer.close()
      return state

    batch_sharding = mesh_lib.batch_sharding(mesh)
    step_fn = make_train_step(spec, mesh, shardings, step_rng)
    frozen = None if spec.frozen is None else jax.device_put(spec.frozen, mesh_lib.replicated(mesh))
    executables, compile_time = {}, [0.0]
    # Shapes and shardings only: later compiles must not touch the (donated) live state.
    state_structs = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                                           state)

    def executable(batch):
      """The step compiled for this batch's shapes (one per bucket) and its FLOPs; logged when first seen."""
      key = tuple((x.shape, str(x.dtype)) for x in jax.tree_util.tree_leaves(batch))
      if key not in executables:
        t0 = time.perf_counter()
        compiled = step_fn.lower(state_structs, batch, frozen).compile()
        xla_flops = metrics_lib.compiled_flops(compiled) * mesh.size  # XLA counts one device's program
        analytic = spec.analytic_flops(batch) if callable(spec.analytic_flops) else spec.analytic_flops
        shapes = ", ".join(f"{k}{tuple(v.shape)}" for k, v in batch.items()) if isinstance(batch, dict) else ""
        tqdm.tqdm.write(f"{spec.name}: step compiled for {shapes} in {time.perf_counter() - t0:.1f}s; FLOPs/step "
                        + (f"{analytic:.3g} analytic (matmuls), " if analytic else "")
                        + f"{xla_flops:.3g} XLA cost analysis (which counts a scanned loop body once); "
                        + "peak per device " + (f"{peak / 1e12:.3g} TFLOP/s ({peak_source})" if peak else peak_source))
        _log_memory(spec.name, compiled)
        executables[key] = compiled, analytic or xla_flops
        compile_time[0] += time.perf_counter() - t0
      return executables[key]

    def global_batch(host_batch):
      return jax.tree_util.tree_map(lambda x: jax.make_array_from_process_local_data(batch_sharding, x), host_batch)

    pending = global_batch(next(spec.data_iter))
    executable(pending)  # compile (and log FLOPs and memory) before step 0

    writer = metrics_lib.MetricWriter(logdir)
    bar = tqdm.tqdm(total=spec.steps, initial=start, desc=f"train {spec.name}", disable=not progress,
                    dynamic_ncols=True)
    last_time, last_step, window_flops, compile_time[0] = time.perf_counter(), start, 0.0, 0.0
    run_flops = 0.0
    # Leaving the block any way (done, SIGTERM, an error) waits for the save in flight to finish.
    with _Preemption() as preempt, checkpointer:
      for step in range(start, spec.steps):
        batch = pending if pending is not None else global_batch(next(spec.data_iter))
        pending = None
        compiled, flops = executable(batch)
        state, aux = compiled(state, batch, frozen)
        window_flops += flops
        run_flops += flops
        done = step + 1
        if done % spec.log_every == 0 or done == spec.steps:
          aux = jax.device_get(aux)
          now = time.perf_counter()
          step_time = (now - last_time - compile_time[0]) / (done - last_step)  # a new bucket's compile excluded
          mean_flops = window_flops / (done - last_step)
          last_time, last_step, window_flops, compile_time[0] = now, done, 0.0, 0.0
          scalars = {k: float(np.asarray(v)) for k, v in aux.items()}
          per_device = mean_flops / step_time / mesh.size
          scalars.update(step_time_s=step_time, examples_per_s=spec.batch_size / step_time,
                         flops_per_step=mean_flops, tflops_per_s_per_device=per_device / 1e12)
          if peak:
            scalars["mfu"] = per_device / peak
          writer.write(done, scalars)
          bar.set_postfix(loss=f"{scalars['loss']:.4f}", s_per_step=f"{step_time:.2f}")
        bar.update(1)
        stop = preempt.requested if jax.process_count() == 1 else _on_any_process(preempt.requested)
        if done % spec.ckpt_every == 0 or done == spec.steps or stop:
          checkpointer.save(done, state, spec.data_iter, config, force=stop)  # async
        if stop:
          checkpointer.wait()
          logging.warning("%s: SIGTERM at step %d: checkpoint saved, exiting", spec.name, done)
          raise SystemExit(143)
    bar.close()
    writer.close()
    if jax.process_index() == 0:
      # Steps before a resume are counted at this run's mean: exact whenever every step has the same shapes.
      atomic_files.write_json(f"{logdir}/training.json", dict(
          steps=spec.steps, flops=run_flops * spec.steps / (spec.steps - start),
          matmul_peak_tflops=peak / 1e12 if peak else None, peak_source=peak_source), indent=1)
  return state


def step_rngs(seed: int):
  """(init_rng, step_rng) of a run with `seed`: the state's initialisation and the base of every step's key."""
  init_rng, step_rng = jax.random.split(jax.random.key(seed))
  return init_rng, step_rng


def state_creator(spec: TrainSpec) -> Callable:
  """rng -> the boxed initial TrainState of `spec`: its parameters, its optimizer's state, its EMA."""
  tx = state_lib.make_optimizer(spec.lr, spec.steps, spec.warmup_steps, spec.weight_decay, spec.grad_clip,
                                spec.optimizer, spec.muon_lr, spec.muon_modules)
  return lambda r: state_lib.TrainState.create(spec.init_params(r), tx, spec.ema_decay)


def make_train_step(spec: TrainSpec, mesh, shardings, step_rng):
  """The jitted step train() runs: (state, batch, frozen) -> (state, aux), the state in `shardings` (from
  abstract_state) and donated, the batch split over data x fsdp, `frozen` (spec.frozen or None) replicated.
  Lowered with ShapeDtypeStructs it compiles without allocating anything (experiments/preset_memory.py)."""
  def train_step(state, batch, frozen):
    r = jax.random.fold_in(step_rng, state.step)
    loss_fn = spec.loss_fn if frozen is None else functools.partial(spec.loss_fn, frozen=frozen)
    (loss, aux), grads = _accumulated_grads(loss_fn, state.params, batch, r, spec.grad_accum_steps)
    new_state = state.apply_gradients(grads)
    aux = dict(aux, loss=loss, grad_norm=_global_norm(grads))
    return new_state, aux

  return jax.jit(train_step, in_shardings=(shardings, mesh_lib.batch_sharding(mesh), mesh_lib.replicated(mesh)),
                 out_shardings=(shardings, mesh_lib.replicated(mesh)), donate_argnums=0)


def _on_any_process(flag: bool) -> bool:
  """Whether `flag` is set on any process; every process must call it at the same step boundary.

  SIGTERM reaches one host at a time, and a host that entered the (collective) checkpoint save alone would
  hang the job, so all hosts agree on the stop step with a one-int all-gather per step: exact, and cheap next
  to a step. Not jax's multihost_utils.reached_preemption_sync_point: its C++ SIGTERM notifier is replaced by
  the Python handler of _Preemption, and it needs the coordination service's preemption support besides.
  """
  return bool(np.max(multihost_utils.process_allgather(np.int32(flag))))


def _accumulated_grads(loss_fn, params, batch, rng, steps: int):
  """((loss, aux), grads) of the batch, computed over `steps` micro-batches and averaged.

  Micro-batch i takes rows i, i + steps, i + 2 steps, ... so every device keeps an equal share of each
  (the batch axis is split over devices in contiguous blocks).
  """
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  if steps == 1:
    return grad_fn(params, batch, rng)

  def micro(x):
    x = x.reshape((x.shape[0] // steps, steps) + x.shape[1:])
    return jnp.moveaxis(x, 1, 0)

  def body(total, inputs):
    i, mb = inputs
    out = grad_fn(params, mb, jax.random.fold_in(rng, i))
    return jax.tree_util.tree_map(jnp.add, total, out), None

  micro_batches = jax.tree_util.tree_map(micro, batch)
  first = jax.tree_util.tree_map(lambda x: x[0], micro_batches)
  zero = jax.tree_util.tree_map(jnp.zeros_like, jax.eval_shape(grad_fn, params, first, rng))
  total, _ = jax.lax.scan(body, zero, (jnp.arange(steps), micro_batches))
  return jax.tree_util.tree_map(lambda x: x / steps, total)


def abstract_state(create: Callable, rng, mesh, rules):
  """(ShapeDtypeStructs of create(rng), their shardings on `mesh` by the logical axis `rules`); nothing is
  allocated. `create` returns a tree with nn.Partitioned leaves (logical axis names); call under the mesh."""
  boxed = jax.eval_shape(create, rng)
  shardings = sharding_lib.logical_shardings(boxed, mesh, rules)  # uneven splits fall back (parallel/sharding.py)
  abstract = jax.tree_util.tree_map(lambda x: x.value if isinstance(x, nn.Partitioned) else x, boxed,
                                    is_leaf=lambda x: isinstance(x, nn.Partitioned))
  return abstract, shardings


def _global_norm(tree):
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree_util.tree_leaves(tree)))


def _log_memory(name: str, compiled: Any):
  try:
    mem = compiled.memory_analysis()
  except Exception:
    mem = None
  if mem is None:
    return
  total = sum(getattr(mem, f, 0) for f in ("argument_size_in_bytes", "output_size_in_bytes",
                                            "temp_size_in_bytes", "generated_code_size_in_bytes"))
  tqdm.tqdm.write(f"{name}: step memory per device {total / 2**20:.1f} MiB (arguments "
                  f"{mem.argument_size_in_bytes / 2**20:.1f}, temporaries {mem.temp_size_in_bytes / 2**20:.1f})")
