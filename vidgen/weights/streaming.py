"""Public checkpoints into a vidgen parameter tree: a key map, one strict check, then tensor by tensor.

A key map (`KeyMap`) says, for every leaf of the model's parameter tree (a path of names), which checkpoint
tensors fill it and how: `Source(keys, permute, squeeze)` with one key per layer for a scanned (stacked) leaf.
`check` compares the map with the checkpoint's headers before a byte of weights is read: every leaf filled, no
tensor left over, every shape equal; otherwise one error naming the first ten missing, unexpected and misshaped
tensors. `load` then streams: each tensor is read, transposed, cast and put on its sharding of the mesh alone,
and a stacked leaf is filled layer by layer in place on the devices, so host memory stays near the largest
tensor (a 14B DiT never sits whole in host memory).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vidgen.weights import safetensors_io

Path = tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Source:
  """The checkpoint tensors of one parameter leaf: `keys` (one, or one per stacked layer), each transposed by
  `permute` (None: as stored) and with `squeeze` dropping size-1 axes (Wan's (C, 1, 1, 1) norm gammas)."""
  keys: tuple[str, ...]
  permute: tuple[int, ...] | None = None
  squeeze: bool = False
  stacked: bool = False  # keys are layers 0..n-1 of a leading axis

  def layer_shape(self, stored: tuple[int, ...]) -> tuple[int, ...]:
    shape = tuple(stored[i] for i in self.permute) if self.permute else tuple(stored)
    return tuple(d for d in shape if d != 1) if self.squeeze else shape

  def transform(self, array: np.ndarray) -> np.ndarray:
    array = np.transpose(array, self.permute) if self.permute else array
    return array.reshape(self.layer_shape(array.shape)) if self.squeeze else array


KeyMap = Mapping[Path, Source]


def _shape_of(target_shape: tuple[int, ...], source: Source) -> tuple[int, ...]:
  """The per-tensor shape a leaf of target_shape wants (squeezed when the source squeezes)."""
  shape = target_shape[1:] if source.stacked else target_shape
  return tuple(d for d in shape if d != 1) if source.squeeze else tuple(shape)


def check(key_map: KeyMap, targets: Mapping[Path, tuple[int, ...]], files: safetensors_io.TensorFiles,
          what: str, hint: str = ""):
  """Raises WeightsError unless the key map fills exactly the target leaves from exactly the file's tensors."""
  missing_leaves = sorted("/".join(p) for p in set(targets) - set(key_map))
  if missing_leaves:  # a key map that does not cover the model: a bug of the mapping, not of the checkpoint
    raise safetensors_io.WeightsError(f"{what}: no mapping for {len(missing_leaves)} parameters, first "
                                      f"{missing_leaves[:10]}")
  wanted = {}
  for path, source in key_map.items():
    if source.stacked and len(source.keys) != targets[path][0]:
      raise safetensors_io.WeightsError(f"{what}: {'/'.join(path)} stacks {targets[path][0]} layers, the mapping "
                                        f"names {len(source.keys)}{hint}")
    for key in source.keys:
      wanted[key] = (path, source)
  present = set(files.keys())
  missing = sorted(set(wanted) - present)
  unexpected = sorted(present - set(wanted))
  misshaped = []
  for key in sorted(set(wanted) & present):
    path, source = wanted[key]
    stored, want = files.shape(key), _shape_of(targets[path], source)
    if source.permute and len(stored) != len(source.permute) or source.layer_shape(stored) != want:
      if source.permute and len(want) == len(source.permute):  # say what is wanted in the stored axis order
        want = tuple(want[source.permute.index(i)] for i in range(len(want)))
      misshaped.append(f"{key} {stored} (the model wants {want} for {'/'.join(path)})")
  problems = [f"{len(items)} {name}: {', '.join(items[:10])}{' ...' if len(items) > 10 else ''}"
              for name, items in (("missing", missing), ("unexpected", unexpected), ("misshaped", misshaped))
              if items]
  if problems:
    raise safetensors_io.WeightsError(f"{what} ({files.path}) does not match the model{hint}: "
                                      + "; ".join(problems))


def load(key_map: KeyMap, abstract: Mapping[Path, jax.ShapeDtypeStruct], files: safetensors_io.TensorFiles,
         dtype_of: Callable[[Path], jnp.dtype] | None = None) -> dict[Path, jax.Array]:
  """{path: array on abstract[path].sharding (when it has one)}: the checked tensors, streamed one at a time and
  cast to dtype_of(path) (default: the abstract dtype)."""
  out = {}
  for path, source in key_map.items():
    target = abstract[path]
    dtype = jnp.dtype(dtype_of(path) if dtype_of else target.dtype)
    sharding = getattr(target, "sharding", None)
    put = (lambda x: jax.device_put(x, sharding)) if sharding is not None else jnp.asarray
    if not source.stacked:
      out[path] = put(source.transform(files.read(source.keys[0])).astype(dtype).reshape(target.shape))
      continue
    buffer = jax.jit(lambda: jnp.zeros(target.shape, dtype), out_shardings=sharding)()
    layer_put = put if sharding is None else (lambda x: jax.device_put(x, _without_leading_axis(sharding)))
    for i, key in enumerate(source.keys):
      layer = source.transform(files.read(key)).astype(dtype).reshape(target.shape[1:])
      buffer = _set_layer(buffer, layer_put(layer), i)
    out[path] = buffer
  return out


def _without_leading_axis(sharding: jax.sharding.NamedSharding) -> jax.sharding.NamedSharding:
  """Where one layer of a stacked leaf lives: the leaf's sharding without its layer axis."""
  return jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec(*tuple(sharding.spec)[1:]))


@functools.partial(jax.jit, donate_argnums=0)
def _set_layer(buffer, layer, i):
  return jax.lax.dynamic_update_index_in_dim(buffer, layer.astype(buffer.dtype), i, 0)


def to_tree(flat: Mapping[Path, jax.Array]) -> dict:
  """{('a', 'b'): x} -> {'a': {'b': x}}: the nested params a module's apply takes."""
  tree = {}
  for path, value in flat.items():
    node = tree
    for name in path[:-1]:
      node = node.setdefault(name, {})
    node[path[-1]] = value
  return tree


def flat_params(tree) -> dict[Path, object]:
  """{path: leaf} of a params tree: boxed (nn.Partitioned, as init returns it) or plain, with or without its
  {'params': ...} level; boxes are opened without sharding constraints (abstract trees have no mesh)."""
  if isinstance(tree, Mapping) and set(tree) == {"params"}:
    tree = tree["params"]
  is_box = lambda x: isinstance(x, nn.meta.AxisMetadata)
  open_box = lambda x: x.value if isinstance(x, nn.Partitioned) else x.unbox() if is_box(x) else x
  return {tuple(str(getattr(k, "key", k)) for k in p): open_box(v)
          for p, v in jax.tree_util.tree_leaves_with_path(tree, is_leaf=is_box)}


def targets(abstract_params, shardings=None) -> dict[Path, jax.ShapeDtypeStruct]:
  """{path: ShapeDtypeStruct} of a params tree (boxed or not), each carrying its NamedSharding from `shardings`
  (a tree of the same structure), else none: the abstract leaves `load` fills."""
  placed = {} if shardings is None else flat_params(shardings)
  return {p: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=placed.get(p))
          for p, a in flat_params(abstract_params).items()}
