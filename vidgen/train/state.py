"""Train state: step, params, optimizer state and (optionally) an EMA of the params."""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax


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


def make_optimizer(lr: float, steps: int, warmup_steps: int, weight_decay: float = 0.0,
                   grad_clip: float = 0.0) -> optax.GradientTransformation:
  """AdamW with linear warm-up and cosine decay to 10% of the peak rate."""
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, lr, max(warmup_steps, 1), max(steps, warmup_steps + 1), end_value=0.1 * lr)
  parts = [optax.clip_by_global_norm(grad_clip)] if grad_clip > 0 else []
  parts.append(optax.adamw(schedule, b1=0.9, b2=0.99, weight_decay=weight_decay))
  return optax.chain(*parts)
