"""The shared training loop: gradient accumulation is exact, and the step's FLOPs and MFU are logged."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from tests import helpers
from vidgen.data import pipeline
from vidgen.parallel import mesh as mesh_lib
from vidgen.train import loop

BATCH, DIM = 16, 8


def _spec(accum: int, steps: int = 3) -> loop.TrainSpec:
  """A deterministic regression (the loss ignores its rng), so micro-batching changes nothing but rounding."""
  rng = np.random.RandomState(0)
  x = rng.randn(64, DIM).astype(np.float32)
  source = pipeline.ArraySource({"x": x, "y": np.tanh(x @ rng.randn(DIM, DIM).astype(np.float32))})
  model = nn.Dense(DIM, kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), (None, None)))

  def loss_fn(params, batch, rng):
    del rng
    loss = jnp.mean(jnp.square(model.apply({"params": params}, batch["x"]) - batch["y"]))
    return loss, {"rows": jnp.asarray(batch["x"].shape[0], jnp.float32)}

  return loop.TrainSpec(
      name="reg", init_params=lambda r: model.init(r, jnp.zeros((1, DIM)))["params"], loss_fn=loss_fn,
      data_iter=pipeline.batched_iterator(source, BATCH, seed=0, num_threads=1), steps=steps, batch_size=BATCH,
      lr=0.05, warmup_steps=1, weight_decay=0.0, grad_clip=0.0, log_every=1, ckpt_every=100,
      grad_accum_steps=accum, analytic_flops=6.0 * BATCH * DIM * DIM)


def _train(tmp_path, accum):
  config = ml_collections.ConfigDict({"checkpoint_keep": 1})
  mesh = mesh_lib.create_mesh(ml_collections.ConfigDict({"data": 2, "fsdp": 1, "context": 1, "tensor": 1}),
                              jax.devices()[:2])
  state = loop.train(_spec(accum), workdir=str(tmp_path / f"accum{accum}"), config=config, mesh=mesh, seed=0,
                     progress=False)
  return state, helpers.read_metrics(tmp_path / f"accum{accum}" / "reg" / "metrics.jsonl")


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
  whole, whole_log = _train(tmp_path, 1)
  accumulated, accum_log = _train(tmp_path, 4)
  for a, b in zip(jax.tree_util.tree_leaves(whole.params), jax.tree_util.tree_leaves(accumulated.params)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose([m["loss"] for m in accum_log], [m["loss"] for m in whole_log], rtol=1e-5)
  assert [m["rows"] for m in accum_log] == [BATCH / 4] * 3  # aux metrics are averaged over micro-batches


def test_flops_and_mfu_are_logged(tmp_path):
  _, log = _train(tmp_path, 1)
  assert all(m["flops_per_step"] == 6.0 * BATCH * DIM * DIM for m in log)  # the analytic count wins
  assert all(m["tflops_per_s_per_device"] > 0 and 0 < m["mfu"] < 1 for m in log)
