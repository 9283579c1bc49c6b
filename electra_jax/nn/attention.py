"""The attention kernels behind `model.SelfAttention`: scores, softmax and
the weighted sum over [batch, heads, length, head_dim] inputs.

"xla" is plain einsums with the softmax in float32 and dropout on the
weights (the reference numerics, every backend). "cudnn" is
`jax.nn.dot_product_attention`'s fused kernel (flash attention on NVIDIA
GPUs), which has no dropout on the attention weights.
"""

from typing import Any

import jax
import jax.numpy as jnp

from electra_jax.nn import dropout as dropout_lib

Array = jax.Array


def attend(q: Array, k: Array, v: Array, mask: Array, *, impl: str,
           rate: float, dropout_rng: Array | None, dtype: Any) -> Array:
  """Softmax attention; [B, N, T, D] inputs and output.

  Args:
    q, k, v: queries, keys, values, [B, N, T, D] (keys/values [B, N, S, D]).
    mask: [B, 1, 1, S] bool, True where a key may be attended.
    impl: "xla" or "cudnn".
    rate: dropout rate on the attention weights (0 when deterministic).
    dropout_rng: the layer's dropout key (site 0), when `rate > 0`.
    dtype: the compute dtype of the weights after the softmax.
  """
  if impl == "cudnn":
    return _cudnn(q, k, v, mask, rate)
  return _xla(q, k, v, mask, rate, dropout_rng, dtype)


def _xla(q: Array, k: Array, v: Array, mask: Array, rate: float,
         dropout_rng: Array | None, dtype: Any) -> Array:
  logits = jnp.einsum("BNTD,BNSD->BNTS", q, k).astype(jnp.float32)
  logits = jnp.where(mask, logits / jnp.sqrt(jnp.float32(q.shape[-1])),
                     jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1).astype(dtype)
  if rate:
    probs = dropout_lib.dropout(probs, rate, dropout_rng)
  return jnp.einsum("BNTS,BNSD->BNTD", probs, v)


def _cudnn(q: Array, k: Array, v: Array, mask: Array, rate: float) -> Array:
  if rate:
    raise ValueError(
        "attention_impl=cudnn has no attention dropout; set "
        "--config.model.attention_probs_dropout_prob=0.0 or use "
        "attention_impl=xla.")
  if jax.default_backend() != "gpu":
    raise ValueError(
        "attention_impl=cudnn needs an NVIDIA GPU; this run's backend is "
        f"{jax.default_backend()!r}. Use attention_impl=xla.")
  return fused(q, k, v, mask, implementation="cudnn")


def fused(q: Array, k: Array, v: Array, mask: Array, *,
          implementation: str) -> Array:
  """`jax.nn.dot_product_attention` on [B, N, T, D] inputs (which it takes
  as [B, T, N, D])."""
  t = lambda y: jnp.swapaxes(y, 1, 2)  # pylint: disable=g-long-lambda
  # cuDNN takes the mask as a bias whose last two dims are the lengths.
  mask = jnp.broadcast_to(mask, (mask.shape[0], 1, q.shape[2], k.shape[2]))
  return t(jax.nn.dot_product_attention(t(q), t(k), t(v), mask=mask,
                                        implementation=implementation))
