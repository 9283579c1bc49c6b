"""Dropout whose keep mask costs a quarter of `jax.random.bernoulli`'s.

One Threefry evaluation gives two 32-bit words, so four 16-bit draws; an
element is kept when its draw is at least `round(rate * 2**16)`. The hash is
written out in `jnp` (not JAX's `threefry2x32` primitive, which lowers to a
loop on CPU) so that XLA fuses it, and the mask is materialized packed, four
bits to a byte: the backward pass keeps only those bits. The mask is a
function of (key, site, element index) alone, so it is the same however the
array is sharded, and several dropouts can share one key as different sites.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array

_THREEFRY_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def threefry2x32(k1: Array, k2: Array, x1: Array, x2: Array
                 ) -> tuple[Array, Array]:
  """Threefry-2x32-20 (Salmon et al., 2011) as plain elementwise ops.

  The same bits as JAX's `threefry2x32` primitive (a test checks), in a form
  XLA fuses into the dropout that uses it.
  """
  ks = (k1, k2, k1 ^ k2 ^ jnp.uint32(0x1BD11BDA))
  x1, x2 = x1 + ks[0], x2 + ks[1]
  for block in range(5):
    for r in _THREEFRY_ROTATIONS[block % 2]:
      x1 = x1 + x2
      x2 = x1 ^ ((x2 << jnp.uint32(r)) | (x2 >> jnp.uint32(32 - r)))
    x1 = x1 + ks[(block + 1) % 3]
    x2 = x2 + ks[(block + 2) % 3] + jnp.uint32(block + 1)
  return x1, x2


# Site ids go into the high bits of the column counter; the columns of one
# array (a quarter of its last dim) must stay below this.
_SITE_SHIFT = 24


def _random_words(rng: Array, lead: tuple[int, ...], cols: int,
                  site: Array) -> tuple[Array, Array]:
  """Two uniform uint32 words per [*lead, cols] element, a function of
  (key, site, index) only: the same however the array is sharded."""
  if str(jax.random.key_impl(rng)) != "threefry2x32":  # e.g. rbg keys.
    words = jax.random.bits(jax.random.fold_in(rng, site), (2, *lead, cols),
                            jnp.uint32)
    return words[0], words[1]
  row = jnp.zeros((*lead, cols), jnp.uint32)
  stride = 1
  for axis in reversed(range(len(lead))):
    row += jax.lax.broadcasted_iota(jnp.uint32, row.shape, axis) * stride
    stride *= lead[axis]
  col = jax.lax.broadcasted_iota(jnp.uint32, row.shape, len(lead))
  col += site.astype(jnp.uint32) << _SITE_SHIFT
  key = jax.random.key_data(rng)
  return threefry2x32(key[0], key[1], row, col)


@functools.partial(jax.jit, static_argnums=(1, 2))
def keep_bits(rng: Array, shape: tuple[int, ...], threshold: int,
              site: Array) -> Array:
  """The packed keep mask of a dropout over `shape`.

  Returns a uint8 array of shape [*shape[:-1], ceil(shape[-1] / 4)] whose
  bit i of element [..., c] keeps element [..., 4c + i]; an element is kept
  when its 16-bit draw is at least `threshold`. The bits are materialized:
  fused into the dropout instead, XLA would evaluate the hash once per
  element, four times over, in the forward and again in the backward pass.
  """
  *lead, last = shape
  cols = -(-last // 4)
  if cols >= 1 << _SITE_SHIFT:
    raise ValueError(f"dropout over a last dim of {last} is not supported "
                     f"(at most {4 << _SITE_SHIFT}).")
  w1, w2 = _random_words(rng, tuple(lead), cols, site)
  t = jnp.uint32(threshold)
  bits = ((w1 & 0xFFFF) >= t).astype(jnp.uint8)
  bits |= ((w1 >> 16) >= t).astype(jnp.uint8) << 1
  bits |= ((w2 & 0xFFFF) >= t).astype(jnp.uint8) << 2
  bits |= ((w2 >> 16) >= t).astype(jnp.uint8) << 3
  # `% 251` is the identity on these 4-bit values, but XLA counts a
  # remainder as expensive and so will not fuse (and repeat) this hash
  # into each consumer; an optimization barrier is removed before fusion.
  return bits % jnp.uint8(251)


def _unpack(bits: Array, last: int) -> Array:
  """[..., cols] packed keep bits -> [..., last] bool."""
  shifts = jnp.arange(4, dtype=jnp.uint8)
  keep = (bits[..., None] >> shifts) & 1
  return keep.reshape(*bits.shape[:-1], -1)[..., :last].astype(jnp.bool_)


def dropout(x: Array, rate: float, rng: Array, site: int = 0) -> Array:
  """Inverted dropout with the keep mask of `keep_bits`.

  The drop rate is `rate` to within 2**-17, and the kept values are scaled
  by the exact inverse keep probability, so the expectation is unchanged.
  `site` tells apart several dropouts that share one key (a layer draws
  one key for its three).
  """
  if rate <= 0.0:
    return x
  if rate >= 1.0:
    return jnp.zeros_like(x)
  threshold = min(round(rate * 65536), 65535)
  bits = keep_bits(rng, x.shape, threshold, jnp.uint32(site))
  return _keep_and_scale(x, bits, 65536.0 / (65536 - threshold))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _keep_and_scale(x: Array, bits: Array, scale: float) -> Array:
  """`where(keep, x * scale, 0)` with `keep` unpacked from `bits`; the
  backward pass keeps only the packed bits."""
  return jnp.where(_unpack(bits, x.shape[-1]), x * jnp.asarray(scale, x.dtype),
                   jnp.zeros((), x.dtype))


def _keep_and_scale_fwd(x, bits, scale):
  return _keep_and_scale(x, bits, scale), bits


def _keep_and_scale_bwd(scale, bits, g):
  return _keep_and_scale(g, bits, scale), None


_keep_and_scale.defvjp(_keep_and_scale_fwd, _keep_and_scale_bwd)


class Dropout(nn.Module):
  """`dropout` with the module's "dropout" RNG stream; no params."""

  rate: float

  @nn.compact
  def __call__(self, x: Array, deterministic: bool) -> Array:
    if deterministic or self.rate <= 0.0:
      return x
    return dropout(x, self.rate, self.make_rng("dropout"))
