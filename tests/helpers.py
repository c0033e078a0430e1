"""Shared test utilities: the tiny 'test' preset, loaded the way the CLI loads it."""
import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(preset: str = "test", config_file: str = "shapes.py", **overrides):
  """A preset of configs/CONFIG_FILE with dotted overrides ('train_dit.steps': 4), loaded as the CLI loads it."""
  spec = importlib.util.spec_from_file_location(f"{config_file[:-3]}_config",
                                                os.path.join(ROOT, "configs", config_file))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return override(module.get_config(preset), **overrides)


def override(config, **overrides):
  for dotted, value in overrides.items():
    node = config
    *parents, leaf = dotted.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def read_metrics(path):
  import json
  with open(path) as f:
    return [json.loads(line) for line in f]
