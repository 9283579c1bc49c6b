"""How an encoder applies its stack of layers: one traced layer, run in turn
(unrolled) or as a `lax.scan`, with optional rematerialization.

The params stay per-layer trees (`layer_0`, `layer_1`, ...) whichever way
the stack runs, so checkpoints, export and fine-tuning never see a
difference. `init` must create them through submodules (the encoder does);
`apply_layers` is for every call after.
"""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from electra_jax.nn import linear

Array = jax.Array


def _keep_linear(policy):
  """`policy`, also keeping the outputs of `linear.linear` (the dense
  products, whose custom VJP hides their `dot_general` from `policy`)."""
  return jax.checkpoint_policies.save_from_both_policies(
      policy, jax.checkpoint_policies.save_only_these_names(
          linear.CHECKPOINT_NAME))


# Which activations the backward pass keeps (the rest are recomputed):
# "none" keeps all (no rematerialization), "full" keeps only each layer's
# input, "dots" the matmul outputs, "dots_no_batch" the matmul outputs
# except attention's batched ones (the [B, N, T, T] scores and weights).
REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": _keep_linear(jax.checkpoint_policies.checkpoint_dots),
    "dots_no_batch": _keep_linear(
        jax.checkpoint_policies.dots_with_no_batch_dims_saveable),
}


@functools.lru_cache(maxsize=64)
def _layer_fn(layer: nn.Module, deterministic: bool, remat_policy: str,
              rules: Any, mesh: Any, jitted: bool):
  """`(layer_params, x, mask, key) -> x` for one parentless `layer`.

  Cached per layer config and per sharding context: a traced layer bakes in
  the logical-axis rules (and mesh) current when it was traced, which
  `jax.jit`'s own cache does not key on.
  """
  del rules, mesh  # Cache keys only.

  def apply(layer_params, x, mask, key):
    return layer.apply({"params": layer_params}, x, mask, deterministic, key)

  if remat_policy != "none":
    apply = jax.checkpoint(apply, policy=REMAT_POLICIES[remat_policy],
                           prevent_cse=jitted)
  return jax.jit(apply) if jitted else apply


def apply_layers(layer: nn.Module, params: Sequence[Any], x: Array,
                 mask: Array, *, deterministic: bool, keys: Array | None,
                 scan: bool, remat_policy: str) -> Array:
  """Applies `layer` once per entry of `params`, in order.

  Unrolled (`scan=False`), each layer runs through one jitted function:
  JAX traces, differentiates and lowers the layer once instead of once per
  layer, which takes seconds off compiling a step, and XLA inlines the
  calls, so the compiled program is the plain unrolled one. Eager calls
  reuse the compiled layer. With `scan=True` the params are stacked (one
  copy of the encoder's weights per call) and the layers run as one
  `lax.scan`: XLA compiles one layer instead of all of them, several times
  less compile time for deep models.

  Args:
    layer: a module with no parent, called as
      `layer.apply(variables, x, mask, deterministic, key)`.
    params: one params tree per layer.
    x: [batch, length, hidden] input of the first layer.
    mask: the attention mask every layer takes.
    deterministic: no dropout when True.
    keys: one dropout key per layer ([num_layers] keys), or None.
    scan: scan over stacked params instead of unrolling.
    remat_policy: a key of `REMAT_POLICIES`.

  Returns:
    The last layer's output.
  """
  context = (repr(nn.get_logical_axis_rules()),
             jax.sharding.get_abstract_mesh())
  fn = _layer_fn(layer, deterministic, remat_policy, *context,
                 jitted=not scan)
  if scan:
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *params)

    def body(h, params_and_key):
      return fn(*params_and_key[:1], h, mask, params_and_key[1]), None

    x, _ = jax.lax.scan(body, x, (stacked, keys))
    return x
  for i, layer_params in enumerate(params):
    with jax.named_scope(f"layer_{i}"):  # Names ops in HLO and profiles.
      x = fn(layer_params, x, mask, None if keys is None else keys[i])
  return x
