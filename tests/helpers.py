"""Shared test utilities: the tiny 'test' preset, loaded the way the CLI loads it."""
import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(preset: str = "test", **overrides):
  spec = importlib.util.spec_from_file_location("shapes_config", os.path.join(ROOT, "configs", "shapes.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(preset)
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
