"""Shardings of boxed parameters (nn.Partitioned leaves) that respect each array's shape.

`nn.logical_to_mesh_sharding(nn.get_partition_spec(tree), mesh, rules)` maps logical axis names to mesh axes
without looking at shapes, and jit refuses a NamedSharding whose mesh axes do not divide the dimension they split
(a VAE head conv with 3 output channels on fsdp=8, say). `logical_shardings` resolves the rules the same way
(rules in order of precedence, each mesh axis used at most once per array) but skips a rule whose mesh axes do not
divide that dimension, so a later rule for another dimension can take the mesh axis (VAE_RULES: "conv_out", then
"conv_in"), and a dimension nothing divides stays replicated. Where everything divides it equals flax's result.
"""
from __future__ import annotations

import collections
import math
from typing import Any, Sequence

from flax.core import meta
import flax.linen as nn
import jax
from jax.sharding import NamedSharding, PartitionSpec as P

_UNASSIGNED = object()


def _mesh_axes(assignment) -> tuple:
  """The mesh axis names in a rule's (or a resolved dimension's) assignment: str, tuple of str or None."""
  if isinstance(assignment, str):
    return (assignment,)
  if isinstance(assignment, (tuple, list)):
    return tuple(a for a in assignment if isinstance(a, str))
  return ()


def logical_to_mesh_spec(names: Sequence[Any], shape: Sequence[int], mesh_shape, rules) -> P:
  """The PartitionSpec of an array of `shape` whose axes are named `names` (logical names or None), under
  `rules` ((logical name, mesh axis | tuple of mesh axes | None), in order of precedence) on a mesh of
  `mesh_shape` (axis name -> size): flax's resolution, skipping rules that would split a dimension unevenly."""
  names = tuple(names)
  if len(names) != len(shape):
    raise ValueError(f"logical axis names {names} do not match the array shape {tuple(shape)}")
  dups = [n for n, k in collections.Counter(names).items() if k > 1 and isinstance(n, str)]
  if dups:
    raise ValueError(f"logical axis names {tuple(dups)} occur more than once in {names}")
  result = [_UNASSIGNED if isinstance(n, str) else n for n in names]
  for logical, rule_mesh in rules:
    if logical not in names:
      continue
    pos = names.index(logical)
    axes = _mesh_axes(rule_mesh)
    used = {a for r in result if r is not _UNASSIGNED for a in _mesh_axes(r)}
    if result[pos] is not _UNASSIGNED or used & set(axes):
      continue
    if shape[pos] % math.prod(mesh_shape.get(a, 1) for a in axes):
      continue  # these mesh axes would split the dimension unevenly: leave the dimension to a later rule
    result[pos] = rule_mesh
  return P(*(None if r is _UNASSIGNED else r for r in result))


def logical_shardings(tree: Any, mesh, rules=None) -> Any:
  """NamedShardings for every array leaf of `tree` (a pytree of arrays / ShapeDtypeStructs, some boxed in
  nn.Partitioned with logical axis names, e.g. `jax.eval_shape` of a TrainState.create): boxed leaves by
  `logical_to_mesh_spec`, unboxed arrays replicated. A drop-in for
  `nn.logical_to_mesh_sharding(nn.get_partition_spec(tree), mesh, rules)` (same tree structure, the same
  shardings wherever the mesh axes divide). `rules=None`: the rules in context (nn.logical_axis_rules)."""
  rules = nn.get_logical_axis_rules() if rules is None else rules
  mesh_shape = dict(mesh.shape)

  def leaf(x):
    if isinstance(x, nn.Partitioned):
      if not hasattr(x.value, "shape"):  # an empty subtree in a box, e.g. optax.MaskedNode in a masked state
        return x.value
      return NamedSharding(mesh, logical_to_mesh_spec(x.names, x.value.shape, mesh_shape, rules))
    if hasattr(x, "get_partition_spec"):  # other axis metadata: flax's own resolution
      return NamedSharding(mesh, nn.logical_to_mesh_axes(x.get_partition_spec(), rules))
    if hasattr(x, "shape"):
      return NamedSharding(mesh, P())
    return None

  return jax.tree_util.tree_map(leaf, tree, is_leaf=lambda x: isinstance(x, meta.AxisMetadata))
