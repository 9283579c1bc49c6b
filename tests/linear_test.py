"""`linear` and `Dense`: autodiff's values, nn.Dense's params, and a
kernel gradient that XLA computes without transposing an operand."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from electra_jax.nn import linear as linear_lib
from electra_jax.nn import stack


def _reference(x, kernel):
  return jnp.tensordot(x, kernel, axes=1)


@pytest.mark.parametrize("n_in,out", [(8, (24,)), (24, (8,)), (16, (16,)),
                                      (8, (3, 2, 4)), (30, (2, 3))])
def test_gradients_equal_autodiff(n_in, out):
  kx, kk, kg = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(kx, (2, 5, n_in))
  kernel = jax.random.normal(kk, (n_in, *out))
  g = jax.random.normal(kg, (2, 5, *out))
  y, vjp = jax.vjp(linear_lib.linear, x, kernel)
  y_ref, vjp_ref = jax.vjp(_reference, x, kernel)
  np.testing.assert_allclose(y, y_ref, rtol=1e-6)
  for got, want in zip(vjp(g), vjp_ref(g)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n_in,n_out", [(8, 32), (32, 8)])
def test_kernel_gradient_transposes_no_operand(n_in, n_out):
  # Autodiff's einsum contracts [batch, length] together; XLA CPU then
  # copies an operand into [features, batch, length] (or [features,
  # tokens]) first. `linear`'s one-axis product needs no such copy.
  x, kernel = jnp.ones((4, 6, n_in)), jnp.ones((n_in, n_out))
  grad = jax.jit(jax.grad(
      lambda x, k: (linear_lib.linear(2.0 * x, k) ** 2).sum(), argnums=1))
  hlo = grad.lower(x, kernel).compile().as_text()
  transposed = re.findall(
      rf"f32\[(?:{n_in}|{n_out}),(?:4,6|24)\]", hlo)
  assert not transposed, transposed


def test_dense_matches_flax_dense():
  x = jax.random.normal(jax.random.key(1), (3, 7, 12))
  kwargs = dict(features=5, dtype=jnp.float32,
                kernel_init=nn.initializers.normal(0.2),
                bias_init=nn.initializers.normal(0.2))
  ours, theirs = linear_lib.Dense(**kwargs), nn.Dense(**kwargs)
  params = ours.init(jax.random.key(2), x)
  ref_params = theirs.init(jax.random.key(2), x)
  jax.tree.map(np.testing.assert_array_equal, params, ref_params)
  np.testing.assert_allclose(ours.apply(params, x), theirs.apply(params, x),
                             rtol=1e-6)
  grads = jax.grad(lambda p: (ours.apply(p, x) ** 2).sum())(params)
  ref = jax.grad(lambda p: (theirs.apply(p, x) ** 2).sum())(params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5),
               grads, ref)


@pytest.mark.parametrize("policy", ["dots", "dots_no_batch"])
def test_dot_remat_policies_keep_linear_outputs(policy, capsys):
  x, k1, k2 = jnp.ones((4, 8)), jnp.ones((8, 16)), jnp.ones((16, 8))

  def f(x, k1, k2):
    h = jnp.tanh(linear_lib.linear(x, k1))
    return jnp.tanh(linear_lib.linear(h, k2)).sum()

  jax.ad_checkpoint.print_saved_residuals(
      jax.checkpoint(f, policy=stack.REMAT_POLICIES[policy]), x, k1, k2)
  kept = sorted(line.split()[0] for line in capsys.readouterr().out.splitlines()
                if "named 'linear'" in line)
  assert kept == ["f32[4,16]", "f32[4,8]"]


@pytest.mark.parametrize("dtype,bias_shape", [(jnp.float32, (6,)),
                                              (jnp.bfloat16, (6,)),
                                              (jnp.float32, (4, 6))])
def test_bias_add_gradients_equal_autodiff(dtype, bias_shape):
  ky, kb, kg = jax.random.split(jax.random.key(3), 3)
  y = jax.random.normal(ky, (2, 3, 4, 6)).astype(dtype)
  bias = jax.random.normal(kb, bias_shape).astype(dtype)
  g = jax.random.normal(kg, (2, 3, 4, 6)).astype(dtype)
  out, vjp = jax.vjp(linear_lib.bias_add, y, bias)
  ref_out, ref_vjp = jax.vjp(lambda y, b: y + b, y, bias)
  np.testing.assert_array_equal(out, ref_out)
  (dy, dbias), (ref_dy, ref_dbias) = vjp(g), ref_vjp(g)
  np.testing.assert_array_equal(dy, ref_dy)
  assert dbias.dtype == dtype
  lead = tuple(range(g.ndim - bias.ndim))
  np.testing.assert_allclose(np.float32(dbias), np.float32(g).sum(lead),
                             rtol=1e-2 if dtype == jnp.bfloat16 else 1e-5,
                             atol=1e-2 if dtype == jnp.bfloat16 else 1e-5)
