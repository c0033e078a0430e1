"""Small building blocks shared by the text encoder and the DiT, with logical axis names.

Every parameter carries logical axis names (see vidgen/parallel/rules.py) so that one rule table maps
models onto any mesh; activations are constrained with the same vocabulary.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any


def dense(features: int, axes: tuple[str | None, str | None], name: str, *, dtype: Dtype = jnp.float32,
          param_dtype: Dtype = jnp.float32, use_bias: bool = True, zero_init: bool = False) -> nn.Dense:
  """nn.Dense whose kernel and bias carry logical axis names; `zero_init` for adaLN-zero outputs."""
  init = nn.initializers.zeros_init() if zero_init else nn.initializers.xavier_uniform()
  return nn.Dense(
      features, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, name=name,
      kernel_init=nn.with_logical_partitioning(init, axes),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (axes[1],)))


class RMSNorm(nn.Module):
  """x * rsqrt(mean(x^2) + eps) * weight over the last axis (Wan's WanRMSNorm), computed in float32."""
  eps: float = 1e-6
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    weight = self.param("weight", nn.with_logical_partitioning(nn.initializers.ones_init(), ("norm",)),
                        (x.shape[-1],), self.param_dtype)
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
    return (y * weight.astype(jnp.float32)).astype(self.dtype)


class LayerNorm(nn.Module):
  """LayerNorm in float32, with or without affine parameters (Wan uses both kinds)."""
  eps: float = 1e-6
  affine: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
    if self.affine:
      scale = self.param("weight", nn.with_logical_partitioning(nn.initializers.ones_init(), ("norm",)),
                         (x.shape[-1],), self.param_dtype)
      bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros_init(), ("norm",)),
                        (x.shape[-1],), self.param_dtype)
      y = y * scale.astype(jnp.float32) + bias.astype(jnp.float32)
    return y.astype(self.dtype)


class MLP(nn.Module):
  """Linear -> GELU(tanh) -> Linear, Wan's FFN."""
  hidden: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    h = dense(self.hidden, ("embed", "mlp"), "fc1", **kw)(x)
    h = nn.with_logical_constraint(nn.gelu(h, approximate=True), ("activation_batch", "activation_length", "activation_mlp"))
    return dense(x.shape[-1], ("mlp", "embed"), "fc2", **kw)(h)


def sinusoidal_embedding(t: jax.Array, dim: int, max_period: float = 10000.0, precise: bool = False) -> jax.Array:
  """[B] -> [B, dim] as cat(cos, sin), Wan's sinusoidal_embedding_1d.

  In float32 an argument t * freq near t = 1000 is off by up to an ulp of 1000 (6e-5: the rounding of freq,
  scaled by t, and of the product), and so is the result. `precise` matches Wan's float64 reference to ~1e-7
  in float32 arithmetic: t = t_int + t_frac (t_int = round(t), exact) and freq = f_a + f_b (f_a with a 12-bit
  significand, from float64), so a = t_int * f_a is exact for t < 2048 and the small rest
  b = t_int * f_b + t_frac * freq carries a tiny absolute error; then cos(a + b) and sin(a + b) by the
  angle-addition formulas.
  """
  half = dim // 2
  if not precise:
    freqs = jnp.power(max_period, -jnp.arange(half, dtype=jnp.float32) / half)
    args = t.astype(jnp.float32)[:, None] * freqs[None]
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
  f64 = np.power(float(max_period), -np.arange(half, dtype=np.float64) / half)
  mantissa, exponent = np.frexp(f64)
  f_a = np.ldexp(np.round(mantissa * 2.0 ** 12) / 2.0 ** 12, exponent)
  f_b, f_a = jnp.asarray(f64 - f_a, jnp.float32), jnp.asarray(f_a, jnp.float32)
  t = t.astype(jnp.float32)[:, None]
  t_int = jnp.round(t)
  t_frac = t - t_int
  a = t_int * f_a
  b = t_int * f_b + t_frac * (f_a + f_b)
  cos_a, sin_a, cos_b, sin_b = jnp.cos(a), jnp.sin(a), jnp.cos(b), jnp.sin(b)
  return jnp.concatenate([cos_a * cos_b - sin_a * sin_b, sin_a * cos_b + cos_a * sin_b], axis=-1)


def constrain(x, axes: Sequence[str | None]):
  return nn.with_logical_constraint(x, tuple(axes))
