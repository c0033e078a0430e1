"""Per-device bytes of a DiT train step under a given mesh, from XLA's memory_analysis (compile only).

A benchmark helper (experiments/benchmark_dit.py --memory_check, tests/test_fsdp_memory.py) that checks FSDP
really splits the step: parameters, gradients and AdamW moments, and the temporaries of the backward pass, should
all shrink with the fsdp axis.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vidgen.diffusion import flow
from vidgen.parallel import mesh as mesh_lib
from vidgen.parallel import rules
from vidgen.train import loop
from vidgen.train import state as state_lib

_FIELDS = ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes", "alias_size_in_bytes",
           "generated_code_size_in_bytes")


def compiled_bytes(compiled) -> dict:
  """A compiled step's memory_analysis() fields (bytes per device) plus `total`: arguments + outputs +
  temporaries - aliased (the donated state, counted once). Generated code is listed, not added."""
  mem = compiled.memory_analysis()
  out = {f: int(getattr(mem, f)) for f in _FIELDS}
  out["total"] = (out["argument_size_in_bytes"] + out["output_size_in_bytes"] + out["temp_size_in_bytes"]
                  - out["alias_size_in_bytes"])
  return out


def train_step_bytes(model: nn.Module, latent: jax.ShapeDtypeStruct, context: jax.ShapeDtypeStruct,
                     mesh_config: dict) -> dict:
  """Compile (never run) one rectified-flow AdamW step of `model` (a vidgen DiT) on `mesh_config`.

  Returns memory_analysis() fields plus `total` (arguments + outputs + temporaries - donated) and
  `state` (the arguments: parameters, AdamW moments and the step counter).
  """
  mesh = mesh_lib.create_mesh(ml_collections.ConfigDict(mesh_config))
  tx = state_lib.make_optimizer(1e-4, 1000, 10)
  b = latent.shape[0]
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules.DIT_RULES):
    create = lambda r: state_lib.TrainState.create(
        model.init(r, jnp.zeros(latent.shape), jnp.zeros((b,)), jnp.zeros(context.shape))["params"], tx)
    abstract, shardings = loop.abstract_state(create, jax.random.key(0), mesh, rules.DIT_RULES)
    batch = mesh_lib.batch_sharding(mesh)

    def step(state, x0, ctx):
      loss_fn = lambda p: flow.flow_loss(lambda x_t, t: model.apply({"params": p}, x_t, t, ctx), x0,
                                         jax.random.key(0))
      return state.apply_gradients(jax.grad(loss_fn)(state.params))

    compiled = jax.jit(step, in_shardings=(shardings, batch, batch), out_shardings=shardings,
                       donate_argnums=0).lower(abstract, latent, context).compile()
  out = compiled_bytes(compiled)
  out["state"] = out["argument_size_in_bytes"]
  out["params"] = sum(a.size for a in jax.tree_util.tree_leaves(abstract.params))
  return out
