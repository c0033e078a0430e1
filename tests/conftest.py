"""Test setup: 8 faked CPU devices (set before JAX initialises) and the repo root on sys.path."""
import os
import sys

# The tests are compile-bound on CPU: XLA's backend optimisation level 0 cuts their compile times by about a third.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


import pytest  # noqa: E402  (after the environment above)


def pytest_addoption(parser):
  parser.addoption("--runslow", action="store_true", help="also run the tests marked slow (minutes each)")


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: minutes long; skipped unless pytest is given --runslow")


def pytest_collection_modifyitems(config, items):
  if config.getoption("--runslow"):
    return
  skip = pytest.mark.skip(reason="slow: run with --runslow")
  for item in items:
    if item.get_closest_marker("slow"):
      item.add_marker(skip)


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
  """A workdir with a VAE and DiT trained for a few dozen steps on the 'test' preset, then evaluated
  (shared by the training, generation and notebook tests): (config, workdir, report)."""
  from tests import helpers
  from vidgen import main as main_lib
  workdir = str(tmp_path_factory.mktemp("run"))
  config = helpers.load_config(**{"train_vae.steps": 30, "train_vae.log_every": 5, "train_vae.ckpt_every": 10,
                                  "train_dit.steps": 40, "train_dit.log_every": 5, "train_dit.ckpt_every": 20,
                                  "train_dit.lr": 2e-3, "train_dit.warmup_steps": 5, "train_vae.warmup_steps": 5})
  report = main_lib.run(config, workdir, "all", progress=False)
  return config, workdir, report
