"""The analytic DiT FLOP count (the numerator of MFU) agrees with XLA's cost analysis."""
import jax
import jax.numpy as jnp
import pytest

from vidgen.models import dit as dit_lib
from vidgen.models import flops

# Big enough that matmuls dominate, as at every size worth timing.
SHAPE = dict(dim=256, ffn_dim=1024, depth=2, in_dim=16, out_dim=16, patch_volume=4)
GRID, TEXT_LEN, TEXT_DIM, BATCH = (4, 16, 16), 32, 128, 2


def _xla_flops(fn, *args) -> float:
  cost = jax.jit(fn).lower(*args).compile().cost_analysis()
  return (cost[0] if isinstance(cost, list) else cost)["flops"]


@pytest.fixture(scope="module")
def model_and_inputs():
  model = dit_lib.DiT(patch_size=(1, 2, 2), in_dim=16, out_dim=16, dim=SHAPE["dim"], ffn_dim=SHAPE["ffn_dim"],
                      num_heads=4, depth=SHAPE["depth"])
  x = jnp.zeros((BATCH, *GRID, 16))
  t = jnp.zeros((BATCH,))
  ctx = jnp.zeros((BATCH, TEXT_LEN, TEXT_DIM))
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), x, t, ctx))
  return model, params, (x, t, ctx)


def _analytic_forward() -> float:
  tokens = GRID[0] * (GRID[1] // 2) * (GRID[2] // 2)
  return BATCH * flops.dit_forward_flops(tokens=tokens, text_len=TEXT_LEN, text_dim=TEXT_DIM, **SHAPE)


def test_forward_flops_match_xla(model_and_inputs):
  model, params, inputs = model_and_inputs
  measured = _xla_flops(lambda p: model.apply(p, *inputs), params)
  assert measured == pytest.approx(_analytic_forward(), rel=0.05)


def test_train_step_flops_match_xla(model_and_inputs):
  model, params, inputs = model_and_inputs
  loss = lambda p: jnp.mean(jnp.square(model.apply(p, *inputs)))
  measured = _xla_flops(jax.grad(loss), params)
  assert measured == pytest.approx(flops.train_step_flops(_analytic_forward() / BATCH, BATCH), rel=0.05)
