"""Train state: step, params, optimizer state and (optionally) an EMA of the params."""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from optax import contrib as optax_contrib


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  ema_params: Any
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
  ema_decay: float = flax.struct.field(pytree_node=False, default=0.0)

  @classmethod
  def create(cls, params, tx, ema_decay: float = 0.0):
    ema = jax.tree_util.tree_map(jnp.copy, params) if ema_decay > 0 else None
    return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
               ema_params=ema, tx=tx, ema_decay=ema_decay)

  def apply_gradients(self, grads):
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
    params = optax.apply_updates(self.params, updates)
    ema = self.ema_params
    if self.ema_decay > 0:
      # Warm-up the EMA so early, still-random weights fade out fast.
      decay = jnp.minimum(self.ema_decay, (1.0 + self.step) / (10.0 + self.step))
      ema = jax.tree_util.tree_map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)
    return self.replace(step=self.step + 1, params=params, opt_state=opt_state, ema_params=ema)


OPTIMIZERS = ("adamw", "muon")


def _muon_dimensions(modules: tuple[str, ...]):
  """params -> where Muon orthogonalises: the hidden dense kernels ([in, out], or [layers, in, out] when
  scanned) under the top-level `modules` (all if empty); embeddings, the output head, convs, norms, biases and
  modulation stay on AdamW (as in the Muon speedruns)."""
  def dims(path, leaf):
    names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
    names = names[:-1] if names[-1] == "value" else names  # a boxed (nn.Partitioned) leaf
    if (names[-1] != "kernel" or any("embedding" in n or "head" in n for n in names)
        or leaf.ndim not in (2, 3) or (modules and names[0] not in modules)):
      return None
    return optax_contrib.MuonDimensionNumbers(leaf.ndim - 2, leaf.ndim - 1)
  return lambda params: jax.tree_util.tree_map_with_path(dims, params)


def make_optimizer(lr: float, steps: int, warmup_steps: int, weight_decay: float = 0.0,
                   grad_clip: float = 0.0, optimizer: str = "adamw", muon_lr: float = 0.02,
                   muon_modules: tuple[str, ...] = ()) -> optax.GradientTransformation:
  """AdamW (or Muon for dense kernels, AdamW at `lr` for the rest) with linear warm-up and cosine decay to 10%
  of the peak rate."""
  def schedule(peak):
    return optax.warmup_cosine_decay_schedule(0.0, peak, max(warmup_steps, 1), max(steps, warmup_steps + 1),
                                              end_value=0.1 * peak)
  parts = [optax.clip_by_global_norm(grad_clip)] if grad_clip > 0 else []
  if optimizer == "adamw":
    parts.append(optax.adamw(schedule(lr), b1=0.9, b2=0.99, weight_decay=weight_decay))
  elif optimizer == "muon":
    parts.append(optax_contrib.muon(
        schedule(muon_lr), weight_decay=weight_decay, adam_b1=0.9, adam_b2=0.99, adam_learning_rate=schedule(lr),
        muon_weight_dimension_numbers=_muon_dimensions(tuple(muon_modules))))
  else:
    raise ValueError(f"optimizer={optimizer!r}: allowed {OPTIMIZERS}")
  return optax.chain(*parts)
