"""Dense products with a backward pass that XLA lays out well.

`jax.grad` of `x @ kernel` computes the kernel's gradient as an einsum
contracted over all the token dims ([batch, length]). XLA's CPU backend
rewrites a product with several contracting dims by first transposing an
operand into [features, tokens], and fuses that transpose into the
elementwise op that made the operand (a LayerNorm, a dropout's backward),
where the strided writes run several times slower than a plain copy.
`linear` flattens the tokens into one axis, so the kernel gradient is a
single-contraction product that XLA runs on the operands as they are. GPUs
and TPUs take either form without copies, so there it changes nothing.

`bias_add` sums its bias gradient over the tokens as a product with ones,
which XLA CPU runs much faster than its reduction of a major axis. The
README's speed section has the measurements.

`Dense` is `flax.linen.Dense` (same parameters, names and initializers)
computed with `linear` and `bias_add`.
"""

from typing import Any, Callable

import flax.linen as nn
import jax
from jax.ad_checkpoint import checkpoint_name
import jax.numpy as jnp

Array = jax.Array


# The name remat policies use to keep these products' outputs: the custom
# VJP hides the `dot_general` from `checkpoint_dots` and the like.
CHECKPOINT_NAME = "linear"


def linear(x: Array, kernel: Array) -> Array:
  """`x [..., in] @ kernel [in, *out] -> [..., *out]`.

  A kernel may have several output axes (e.g. [hidden, 3, heads, head_dim]
  for a fused query/key/value product), so that each keeps its sharding.
  """
  return checkpoint_name(_linear(x, kernel), CHECKPOINT_NAME)


def _out(kernel: Array) -> str:
  """Einsum letters of a kernel's output axes."""
  return "opqrs"[:kernel.ndim - 1]


@jax.custom_vjp
def _linear(x: Array, kernel: Array) -> Array:
  o = _out(kernel)
  return jnp.einsum(f"...i,i{o}->...{o}", x, kernel)


def _linear_fwd(x: Array, kernel: Array):
  return _linear(x, kernel), (x, kernel)


def _linear_bwd(residuals, g: Array):
  x, kernel = residuals
  o = _out(kernel)
  dx = jnp.einsum(f"...{o},i{o}->...i", g, kernel)
  # The tokens flattened into one axis (XLA CPU transposes an operand of a
  # product with several contracting dims; see the module docstring); the
  # output axes kept apart, so that each keeps its sharding.
  x2 = x.reshape(-1, x.shape[-1])
  g2 = g.reshape(x2.shape[0], *kernel.shape[1:])
  dkernel = jnp.einsum(f"ti,t{o}->i{o}", x2, g2)
  return dx, dkernel


_linear.defvjp(_linear_fwd, _linear_bwd)


@jax.custom_vjp
def bias_add(y: Array, bias: Array) -> Array:
  """`y [..., *n] + bias [*n]` (of one dtype, at most 8 leading axes),
  whose bias gradient is a product with ones.

  The gradient is the sum of `g` over its leading (token) axes, which XLA
  CPU computes far faster as a vector-matrix product than as a reduction of
  a major axis of a row-major array.
  """
  return y + bias


def _bias_add_fwd(y: Array, bias: Array):
  return bias_add(y, bias), bias


def _bias_add_bwd(bias: Array, g: Array):
  lead = "abcdefgh"[:g.ndim - bias.ndim]
  n = "opqrs"[:bias.ndim]
  ones = jnp.ones(g.shape[:len(lead)], g.dtype)
  dbias = jnp.einsum(f"{lead},{lead}{n}->{n}", ones, g,
                     preferred_element_type=jnp.float32)
  return g, dbias.astype(bias.dtype)


bias_add.defvjp(_bias_add_fwd, _bias_add_bwd)


class Dense(nn.Module):
  """`nn.Dense` over the last axis, through `linear` and `bias_add`."""

  features: int
  dtype: Any = None
  param_dtype: Any = jnp.float32
  kernel_init: Callable[..., Array] = nn.initializers.lecun_normal()
  bias_init: Callable[..., Array] = nn.initializers.zeros

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kernel = self.param("kernel", self.kernel_init,
                        (x.shape[-1], self.features), self.param_dtype)
    bias = self.param("bias", self.bias_init, (self.features,),
                      self.param_dtype)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias,
                                              dtype=self.dtype)
    return bias_add(linear(x, kernel), bias)
