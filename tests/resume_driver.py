"""A tiny model trained by the real `vidgen.train.loop`: the process tests/test_fault_tolerance.py kills.

  python -m tests.resume_driver WORKDIR STEPS CACHE_DIR [COORDINATOR NUM_PROCESSES PROCESS_ID]

Trains (or resumes from WORKDIR/tiny/checkpoints) to STEPS steps, saving every step (every N steps with
RESUME_DRIVER_CKPT_EVERY=N in the environment), then writes every leaf of the final TrainState to
WORKDIR/final.npz. With the last three arguments it is one process of a multi-host job
(tests/test_multihost.py), all of whose devices form the data axis.
"""
import os
import sys

import flax.linen as nn
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np

from vidgen.data import pipeline
from vidgen.parallel import distributed
from vidgen.parallel import mesh as mesh_lib
from vidgen.train import loop

DIM, HIDDEN, BATCH = 16, 64, 8
RULES = (("activation_batch", ("data", "fsdp")), ("embed", "fsdp"), ("mlp", None))


class TinyNet(nn.Module):
  """Two dense layers whose parameters carry logical axes, so the rules shard them over fsdp."""

  @nn.compact
  def __call__(self, x):
    def dense(features, axes):
      return nn.Dense(features, kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), axes),
                      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[1:]))
    hidden = nn.gelu(dense(HIDDEN, ("embed", "mlp"))(x))  # Dense_0: kernel [DIM, HIDDEN]
    return dense(DIM, ("mlp", "embed"))(hidden)


def init_params(rng):
  return TinyNet().init(rng, jnp.zeros((1, DIM)))["params"]


def loss_fn(params, batch, rng):
  noisy = batch["x"] + 0.05 * jax.random.normal(rng, batch["x"].shape)  # uses the step's rng
  loss = jnp.mean(jnp.square(TinyNet().apply({"params": params}, noisy) - batch["y"]))
  return loss, {}


def data_iter(seed: int = 0):
  x = np.random.RandomState(seed).randn(96, DIM).astype(np.float32)  # 12 batches an epoch
  source = pipeline.ArraySource({"x": x, "y": np.sin(3 * x[:, ::-1])})
  return pipeline.batched_iterator(source, BATCH, seed=seed, num_threads=1)


def spec(steps: int) -> loop.TrainSpec:
  return loop.TrainSpec(name="tiny", init_params=init_params, loss_fn=loss_fn, data_iter=data_iter(),
                        steps=steps, batch_size=BATCH, lr=1e-2, warmup_steps=2, weight_decay=1e-4,
                        grad_clip=1.0, log_every=1, ckpt_every=int(os.environ.get("RESUME_DRIVER_CKPT_EVERY", 1)),
                        ema_decay=0.9, rules=RULES)


def main(workdir: str, steps: int, cache_dir: str, *multihost: str):
  if multihost:
    coordinator, num_processes, process_id = multihost
    distributed.initialize(distributed.settings_from("flags", coordinator, int(num_processes), int(process_id)))
  else:
    # Restarts load the compiled step from the cache instead of compiling it again.
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  config = ml_collections.ConfigDict({"checkpoint_keep": 2})
  mesh = mesh_lib.create_mesh(ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1}))
  state = loop.train(spec(steps), workdir=workdir, config=config, mesh=mesh, seed=0, progress=False)
  leaves = jax.tree_util.tree_flatten_with_path(state)[0]
  arrays = {jax.tree_util.keystr(p): np.asarray(multihost_utils.process_allgather(x, tiled=True))
            for p, x in leaves}  # every process takes part in the gather
  if jax.process_index() == 0:
    np.savez(f"{workdir}/final.npz", **arrays)


if __name__ == "__main__":
  main(sys.argv[1], int(sys.argv[2]), *sys.argv[3:])
