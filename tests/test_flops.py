"""The analytic DiT FLOP count (the numerator of MFU) agrees with XLA's cost analysis."""
import jax
import jax.numpy as jnp
import numpy as np
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


def test_dit_train_step_flops_count_what_runs():
  """The trainer's count (text encoder with its summary token, DiT, and the frozen VAE's encode of the masked
  clip for frame conditioning) against XLA's cost analysis of the real loss's gradient, blocks unrolled."""
  from tests import helpers
  from vidgen.models import build
  from vidgen.train import dit_trainer
  config = helpers.load_config(**{"dit.dim": 256, "dit.ffn_dim": 1024, "dit.num_heads": 4, "dit.depth": 2,
                                  "dit.scan_blocks": False, "text.width": 128, "text.depth": 2,
                                  "vae.dim": 32, "train_dit.batch_size": 2})
  b, f, h, w = 2, config.data.num_frames, config.data.height, config.data.width
  grid = build.latent_grid(config)
  vae = build.vae(config)
  vae_params = jax.eval_shape(lambda: vae.init({"params": jax.random.key(0), "sample": jax.random.key(1)},
                                               build.vae_init_input(config))["params"])
  model = build.denoiser(config)
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), *build.denoiser_init_inputs(config))["params"])
  z = config.vae.z_dim
  latent = jax.ShapeDtypeStruct((b, *grid, z), jnp.float32)
  batch = {"mean": latent, "std": latent, "ids": jax.ShapeDtypeStruct((b, config.text.max_length), jnp.int32),
           "video": jax.ShapeDtypeStruct((b, f, h, w, 3), jnp.uint8)}
  loss = dit_trainer.dit_loss(model, config, np.zeros(z), np.ones(z))
  grad = lambda p, batch, frozen: jax.grad(lambda p: loss(p, batch, jax.random.key(0), frozen)[0])(p)
  measured = _xla_flops(grad, params, batch, vae_params)
  counted = dit_trainer.step_flops(config, vae_params)(batch)
  assert counted == pytest.approx(measured, rel=0.05)
  without_vae = flops.train_step_flops(flops.denoiser_forward_flops(config, grid), b)
  assert counted - without_vae > 0.02 * counted  # the VAE encode is a real share at this size


def test_traced_flops_count_convs_matmuls_and_every_scan_iteration():
  """Against XLA's count of the same program unrolled (XLA counts a scanned body once). Convs use VALID
  padding here: XLA leaves out the multiply-adds with padding, the traced count (like the closed forms) does not."""
  x = jnp.zeros((2, 16, 16, 8))
  kernel = jnp.zeros((3, 3, 8, 32))
  dense = jnp.zeros((32, 32))
  conv = lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))

  def unrolled(x, k, d):
    h = conv(x, k)
    for _ in range(3):
      h = jnp.tanh(h @ d)
    return h

  def scanned(x, k, d):
    h, _ = jax.lax.scan(lambda h, _: (jnp.tanh(h @ d), None), conv(x, k), None, length=3)
    return h
  expected = 2 * 2 * 14 * 14 * 32 * (3 * 3 * 8) + 3 * 2 * 2 * 14 * 14 * 32 * 32
  assert flops.traced_matmul_flops(scanned, x, kernel, dense) == expected
  assert _xla_flops(unrolled, x, kernel, dense) == pytest.approx(expected, rel=0.02)
