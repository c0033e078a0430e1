"""Pins the initial parameters of the `tiny` preset's default run: the denoiser (text encoder + DiT) and the VAE,
initialised as their trainers do, with the keys the training loop draws (loop.train: key(seed) split into
init and step keys; the VAE's seed is config.seed, the DiT's config.seed + 1).

Flax linen draws the keys of a module's own `self.param`s in creation order (submodules by name), so reordering
them changes a default run's init without changing any shape; this test catches that. Per parameter it keeps a
fingerprint (shape, dtype, sum and sum of squares) in tests/fixtures/preset_init/, compared with tolerances that
absorb last-bit float differences between CPUs but not a different draw.

When a change of the default init is intended, rewrite the fixtures and commit them with the change:

  VIDGEN_UPDATE_FIXTURES=1 python -m pytest tests/test_preset_init.py
"""
import json
import math
import os

import flax.linen as nn
from flax import traverse_util
import jax
import numpy as np
import pytest

from tests import helpers
from vidgen.models import build

FIXTURES = os.path.join(helpers.ROOT, "tests", "fixtures", "preset_init")
UPDATE = os.environ.get("VIDGEN_UPDATE_FIXTURES") == "1"
RTOL = 1e-4  # on the sum of squares; the sum's tolerance is RTOL times its bound sqrt(size * sum of squares)


# Jitted as loop.train jits the state's creation (the same values, bit for bit, as its sharded TrainState.create).
# Compiling the ~200 parameter draws is the test's cost; lazy_init on abstract inputs was slower, not faster.


def _init_key(seed: int):
  init_rng, _ = jax.random.split(jax.random.key(seed))  # as loop.train draws it
  return init_rng


def denoiser_params(config):
  """dit_trainer.train_dit's init_params on loop.train's key."""
  model, inputs = build.denoiser(config), build.denoiser_init_inputs(config)
  return jax.jit(lambda r: nn.unbox(model.init(r, *inputs)["params"]))(_init_key(config.seed + 1))


def vae_params(config):
  """vae_trainer.train_vae's init_params on loop.train's key."""
  vae, dummy = build.vae(config), build.vae_init_input(config)
  return jax.jit(lambda r: nn.unbox(vae.init({"params": r, "sample": r}, dummy)["params"]))(_init_key(config.seed))


def fingerprint(params) -> dict:
  """'path/to/param' -> {shape, dtype, sum, sum_sq} (sums in float64, 7 significant digits)."""
  out = {}
  for path, x in sorted(traverse_util.flatten_dict(jax.device_get(params), sep="/").items()):
    x64 = np.asarray(x, np.float64)
    out[path] = {"shape": list(x.shape), "dtype": str(x.dtype), "sum": float(f"{x64.sum():.7g}"),
                 "sum_sq": float(f"{np.square(x64).sum():.7g}")}
  return out


def differences(expected: dict, actual: dict) -> list[str]:
  """One line per parameter whose fingerprint differs beyond the tolerances (or that is missing or new)."""
  lines = [f"{p}: missing" for p in expected if p not in actual]
  lines += [f"{p}: new" for p in actual if p not in expected]
  for p in expected.keys() & actual.keys():
    e, a = expected[p], actual[p]
    if (e["shape"], e["dtype"]) != (a["shape"], a["dtype"]):
      lines.append(f"{p}: {a['dtype']}{a['shape']}, was {e['dtype']}{e['shape']}")
      continue
    sum_tol = RTOL * math.sqrt(math.prod(e["shape"]) * e["sum_sq"]) + 1e-6
    if not (math.isclose(a["sum_sq"], e["sum_sq"], rel_tol=RTOL, abs_tol=1e-6)
            and abs(a["sum"] - e["sum"]) <= sum_tol):
      lines.append(f"{p}: sum {a['sum']:.7g} sum_sq {a['sum_sq']:.7g}, was {e['sum']:.7g} {e['sum_sq']:.7g}")
  return sorted(lines)


def _write(path: str, prints: dict):
  """One parameter a line, so a changed init reads as a diff of the parameters it changed."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    f.write("{\n" + ",\n".join(f" {json.dumps(p)}: {json.dumps(v)}" for p, v in prints.items()) + "\n}\n")


def _check(name: str, params):
  path = os.path.join(FIXTURES, f"{name}.json")
  actual = fingerprint(params)
  if UPDATE:
    _write(path, actual)
  if not os.path.exists(path):
    pytest.fail(f"no fixture {path}: make it with VIDGEN_UPDATE_FIXTURES=1 python -m pytest {__file__}")
  with open(path) as f:
    expected = json.load(f)
  diff = differences(expected, actual)
  assert not diff, (f"the init of the tiny preset's {name} changed ({len(diff)} of {len(expected)} parameters):\n  "
                    + "\n  ".join(diff[:20]) + "\nif intended, rewrite the fixture: "
                    "VIDGEN_UPDATE_FIXTURES=1 python -m pytest tests/test_preset_init.py")


def test_tiny_denoiser_init_is_pinned():
  _check("tiny_denoiser", denoiser_params(helpers.load_config("tiny")))


def test_tiny_vae_init_is_pinned():
  _check("tiny_vae", vae_params(helpers.load_config("tiny")))


def test_the_fingerprint_sees_a_redraw_but_not_last_bit_noise():
  rng = np.random.default_rng(0)
  params = {"a": {"kernel": rng.normal(0, 0.02, (64, 32)).astype(np.float32)}, "b": np.zeros(8, np.float32)}
  base = fingerprint(params)
  last_bit = lambda x: (x * (1 + rng.choice([-2e-7, 2e-7], x.shape))).astype(np.float32)  # about 1 ulp
  noisy = jax.tree_util.tree_map(last_bit, params)
  assert not np.array_equal(noisy["a"]["kernel"], params["a"]["kernel"])
  assert differences(base, fingerprint(noisy)) == []
  redrawn = dict(params, a={"kernel": rng.normal(0, 0.02, (64, 32)).astype(np.float32)})
  assert [line.split(":")[0] for line in differences(base, fingerprint(redrawn))] == ["a/kernel"]
  assert differences(base, fingerprint({"a": params["a"]})) == ["b: missing"]
