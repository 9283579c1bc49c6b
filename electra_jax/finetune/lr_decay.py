"""The fine-tuning optimizer: the pretraining chain plus layer-wise LR decay.

Layer-wise learning-rate decay (ELECTRA's fine-tuning recipe) gives layers
closer to the input smaller learning rates. Each parameter gets a
depth and the multiplier `decay ** (max_depth - depth)`:

  depth 0        embeddings/*, encoder/embeddings_project/*
  depth i + 1    encoder/layer_i/*         (i = 0 .. n - 1)
  max_depth      head/*                    (multiplier 1)

What `max_depth` is differs between the intent and the released code
(google-research/electra `model/optimization.py::_get_layer_lrs`, read at
commit ac8d487d; the same lines at 79111328 are quoted in
google-research/electra#51 and #64). The code gives the task head depth
`n + 2`; the authors explain in #51 that the head should count as one layer
on top of the encoder (depth `n + 1`, so the top layer gets `lr * decay`)
and that the extra step is left over from a pooler removed together with
next-sentence prediction. So every non-head parameter of the released code
has one extra factor of `decay`:

              head   layer n-1       layer i            embeddings
  default     1      decay           decay^(n - i)      decay^(n + 1)
  compat      1      decay^2         decay^(n + 1 - i)  decay^(n + 2)

`optimizer.layerwise_lr_decay_compat=True` reproduces the released code
(presumably what produced the published fine-tuning results, so use it for
comparisons with them); the default is the intended scheme from #51.
A decay <= 0 disables the scheme (all multipliers 1), as in the reference.

The multipliers scale the whole update (Adam step and weight decay), as the
reference's per-variable learning rate does.
"""

import re
from typing import Any

import jax
import optax

from electra_jax import optimizer as optimizer_lib

_LAYER = re.compile(r"layer_(\d+)")


def _names(path: tuple[Any, ...]) -> list[str]:
  return [str(getattr(k, "key", getattr(k, "name", k))) for k in path]


def layer_depth(names: list[str], num_layers: int, compat: bool) -> int:
  """Depth of the parameter at `names` in a task model's param tree.

  Args:
    names: the key path, e.g. `["encoder", "layer_3", "query", "kernel"]`.
    num_layers: number of transformer layers `n`.
    compat: give the head depth `n + 2` (released code) instead of `n + 1`.

  Returns:
    The depth; the head has the largest.

  Raises:
    ValueError: for a parameter outside embeddings, encoder and head (the
      reference fails the same way rather than guess a learning rate).
  """
  top = names[0]
  if top == "embeddings":
    return 0
  if top == "head":
    return num_layers + 2 if compat else num_layers + 1
  if top == "encoder" and len(names) > 1:
    if names[1] == "embeddings_project":
      return 0
    match = _LAYER.fullmatch(names[1])
    if match and int(match.group(1)) < num_layers:
      return int(match.group(1)) + 1
  raise ValueError(f"No layer-wise learning rate for parameter "
                   f"{'/'.join(names)}: expected embeddings/*, "
                   "encoder/embeddings_project/*, encoder/layer_<i>/* or "
                   "head/*.")


def lr_multipliers(params: Any, *, num_layers: int, decay: float,
                   compat: bool) -> Any:
  """Per-parameter learning-rate multipliers, a tree of Python floats.

  Args:
    params: the task model's params (arrays or `ShapeDtypeStruct`s) with
      top-level keys `embeddings`, `encoder` and `head`.
    num_layers: number of transformer layers.
    decay: `layerwise_lr_decay`; <= 0 gives 1.0 everywhere.
    compat: reproduce the released code's extra factor (see module doc).

  Returns:
    A tree with the structure of `params` and float leaves.
  """
  max_depth = num_layers + 2 if compat else num_layers + 1

  def one(path, _):
    if decay <= 0:
      return 1.0
    depth = layer_depth(_names(path), num_layers, compat)
    return float(decay ** (max_depth - depth))

  return jax.tree_util.tree_map_with_path(one, params)


def scale_by_multipliers(multipliers: Any) -> optax.GradientTransformation:
  """Multiplies each update by its parameter's fixed multiplier."""

  def scale(updates, params=None):
    del params
    return jax.tree.map(lambda u, m: u * m, updates, multipliers)

  return optax.stateless(scale)


def create_optimizer(
    opt: optimizer_lib.OptimizerConfig, num_train_steps: int, params: Any,
    num_layers: int, *, decay: float, compat: bool = False,
    flat_norm: bool = False,
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The pretraining optimizer chain followed by the layer-wise multipliers.

  Args:
    opt: the optimizer settings (`optimizer.OptimizerConfig`).
    num_train_steps: total updates, for the schedule.
    params: the task params or their shapes (for the multiplier tree).
    num_layers: transformer layers of the model.
    decay: the layer-wise learning-rate decay (see `lr_multipliers`).
    compat: the released code's layer numbering (see `lr_multipliers`).
    flat_norm: clip with the one-kernel norm (`optimizer.global_norm`);
      only for params that are not sharded.

  Returns:
    `(tx, schedule)`; `schedule` is the head's (undecayed) learning rate.
  """
  tx, schedule = optimizer_lib.create_optimizer(opt, num_train_steps,
                                                flat_norm=flat_norm)
  multipliers = lr_multipliers(params, num_layers=num_layers, decay=decay,
                               compat=compat)
  # The learning rate is the chain's last factor, so scaling after it
  # equals a per-parameter learning rate.
  return optax.chain(tx, scale_by_multipliers(multipliers)), schedule
