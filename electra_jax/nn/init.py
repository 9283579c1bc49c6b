"""Parameter initializers beyond flax's own."""

import flax.linen as nn
import jax.numpy as jnp

# The reference's `tf.layers.dense` with no initializer: TF's default.
tf_dense = nn.initializers.glorot_uniform()


def sinusoidal(stddev: float):
  """The Transformer's sinusoids (Vaswani et al.) as the starting value of a
  learned [positions, width] table, scaled to `stddev` per entry.

  Position i+k is then a fixed rotation of position i in every frequency
  pair, so one linear map of the query and key can score "k tokens away"
  from the first step; from a random table that relation must be learned
  first. The table stays a plain learned embedding: only its start differs,
  and a transformers export is unchanged.
  """
  def init(key, shape, dtype=jnp.float32):
    del key  # Deterministic.
    num, width = shape
    pos = jnp.arange(num, dtype=jnp.float32)[:, None]
    freq = jnp.exp(-jnp.log(10000.0) * jnp.arange(0, width, 2,
                                                   dtype=jnp.float32) / width)
    table = jnp.zeros(shape, jnp.float32)
    table = table.at[:, 0::2].set(jnp.sin(pos * freq))
    table = table.at[:, 1::2].set(jnp.cos(pos * freq[:width // 2]))
    # sin^2 + cos^2 = 1 per pair: each entry has mean square 1/2.
    return (table * (stddev * jnp.sqrt(2.0))).astype(dtype)
  return init
