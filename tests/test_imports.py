"""The house rules, read off the package's imports (module level and inside functions): arrows point down only,
main -> tasks / generate / evaluate / train -> models, data, diffusion, parallel, weights; and no cycle."""
import ast
import os

import pytest

from tests import helpers

PACKAGE = os.path.join(helpers.ROOT, "vidgen")
LOWER = ("vidgen.models", "vidgen.data", "vidgen.diffusion", "vidgen.parallel", "vidgen.weights")
UPPER = ("vidgen.train", "vidgen.generate", "vidgen.tasks", "vidgen.main", "vidgen.evaluate")


def _modules(root: str) -> dict[str, str]:
  """Module name -> source path of every .py file under root (a package directory named vidgen)."""
  out = {}
  for directory, _, files in os.walk(root):
    for name in files:
      if name.endswith(".py"):
        rel = os.path.relpath(os.path.join(directory, name), os.path.dirname(root))[:-3].replace(os.sep, ".")
        out[rel[: -len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(directory, name)
  return out


def import_graph(root: str) -> dict[str, set[str]]:
  """Module -> the package's modules it imports anywhere in its file (`from vidgen.x import y` imports
  vidgen.x.y when that is a module, else vidgen.x)."""
  modules = _modules(root)
  graph = {}
  for module, path in modules.items():
    with open(path) as f:
      tree = ast.parse(f.read(), path)
    targets = set()
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        targets.update(alias.name for alias in node.names)
      elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        targets.update(f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                       for alias in node.names)
    graph[module] = {t for t in targets if t in modules and t != module}
  return graph


def upward_arrows(graph) -> list[tuple[str, str]]:
  under = lambda module, prefixes: any(module == p or module.startswith(p + ".") for p in prefixes)
  return sorted((a, b) for a, targets in graph.items() for b in targets if under(a, LOWER) and under(b, UPPER))


def cycles(graph) -> list[list[str]]:
  """One cycle per strongly connected component of more than one module (Tarjan)."""
  index, low, stack, on_stack, found = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in graph.get(v, ()):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        found.append(sorted(component))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return found


def test_no_arrow_from_the_lower_layers_up_and_no_cycle():
  graph = import_graph(PACKAGE)
  assert "vidgen.models.build" in graph and "vidgen.tasks" in graph["vidgen.main"]
  assert upward_arrows(graph) == []
  assert cycles(graph) == []
  # weights/ (files <-> parameter trees) sits below models/, which builds the modules and loads into them.
  assert sorted((a, b) for a, bs in graph.items() for b in bs
                if a.startswith("vidgen.weights") and not b.startswith("vidgen.weights")) == []


@pytest.fixture
def fake_package(tmp_path):
  root = tmp_path / "vidgen"
  for sub in ("models", "train"):
    (root / sub).mkdir(parents=True)
    (root / sub / "__init__.py").write_text("")
  (root / "__init__.py").write_text("")
  (root / "generate.py").write_text("from vidgen.models import dit\n")
  (root / "train" / "loop.py").write_text("import numpy\n")
  return root


def test_the_checks_see_arrows_inside_functions_and_cycles(fake_package):
  (fake_package / "models" / "dit.py").write_text("def f():\n  from vidgen.train import loop\n")
  assert upward_arrows(import_graph(str(fake_package))) == [("vidgen.models.dit", "vidgen.train.loop")]
  (fake_package / "models" / "dit.py").write_text("from vidgen import generate\n")
  graph = import_graph(str(fake_package))
  assert cycles(graph) == [["vidgen.generate", "vidgen.models.dit"]]
