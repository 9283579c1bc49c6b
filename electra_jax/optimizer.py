"""Optimizer: the optax chain, learning-rate schedules and weight-decay mask.

By default this reproduces google-research/electra `model/optimization.py`:
`AdamWeightDecayOptimizer` (Adam without bias correction, decoupled weight
decay that skips LayerNorm parameters and biases), global-norm clipping at 1.0
and a linear warmup multiplied into a polynomial decay to 0.

The chain, in order:

  clip_by_global_norm(max_grad_norm)       # Skipped when max_grad_norm == 0.
  adam scaling                             # Reference (no bias correction),
                                           # or optax's bias-corrected Adam.
  add_decayed_weights(rate, mask)          # update += rate * param (masked).
  [scale_by_trust_ratio()]                 # LAMB only.
  scale_by_learning_rate(schedule)         # update *= -lr(count).

Gradient accumulation happens in `train.py` (a scan over micro-batches inside
the step), so one optimizer update always sees the gradient of a full batch;
this module only validates `grad_accum_steps`.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

SCHEDULES = ("reference", "warmup_cosine", "constant")
OPTIMIZERS = ("adamw", "lamb")

# Leaf names that never get weight decay. The reference excludes any variable
# whose name contains "bias", "LayerNorm" or "layer_norm"; in our Flax trees
# LayerNorm params are `scale`/`bias` under a `LayerNorm` module, dense biases
# are `bias` and the generator's output bias is `output_bias`.
_NO_DECAY_LEAVES = frozenset({"bias", "scale", "output_bias"})
_NO_DECAY_MODULES = ("LayerNorm", "layer_norm")


def _warmup_factor(step: jax.Array, num_warmup_steps: int) -> jax.Array:
  """Returns `min(1, step / num_warmup_steps)`, or 1 without warmup."""
  if num_warmup_steps == 0:
    return jnp.ones_like(step)
  return jnp.minimum(1.0, step / num_warmup_steps)


def learning_rate_schedule(
    opt_config: ml_collections.ConfigDict, num_train_steps: int
) -> optax.Schedule:
  """Builds the learning-rate schedule named by `opt_config.schedule`.

  Every schedule takes optax's update count: 0 for the first update, i.e. the
  number of updates already applied. This is the reference's `global_step` as
  read by `apply_gradients` before it increments it, so with warmup the first
  update uses a learning rate of exactly 0, as in the reference.

  Schedules, with `w = num_warmup_steps`, `T = num_train_steps` and
  `warm(step) = min(1, step / w)` (1 when `w == 0`):

  * "reference": `peak * warm(step) * (1 - min(step, T) / T) ** lr_decay_power`.
    The warmup multiplies a decay that already starts at step 0, so the peak
    value itself is never reached when `w > 0`.
  * "warmup_cosine": `peak * warm(step)` up to step `w`, then
    `peak * 0.5 * (1 + cos(pi * (step - w) / (T - w)))`, reaching 0 at `T`.
  * "constant": `peak * warm(step)`.

  Args:
    opt_config: the `config.optimizer` sub-dict; reads `schedule`,
      `learning_rate`, `num_warmup_steps` and `lr_decay_power`.
    num_train_steps: total number of optimizer updates, `T`.

  Returns:
    A schedule mapping the integer update count to a float32 learning rate.

  Raises:
    ValueError: on an unknown schedule name or invalid step counts.
  """
  name = opt_config.schedule
  peak = opt_config.learning_rate
  warmup = opt_config.num_warmup_steps
  power = opt_config.lr_decay_power
  if name not in SCHEDULES:
    raise ValueError(
        f"Unknown learning-rate schedule {name!r}; expected one of "
        f"{', '.join(SCHEDULES)}."
    )
  if warmup < 0:
    raise ValueError(f"num_warmup_steps must be >= 0, got {warmup}.")
  if num_train_steps <= 0:
    raise ValueError(f"num_train_steps must be > 0, got {num_train_steps}.")

  if name == "reference":

    def schedule(count):
      step = jnp.asarray(count, jnp.float32)
      decay = (1.0 - jnp.minimum(step, num_train_steps) / num_train_steps)
      return peak * _warmup_factor(step, warmup) * decay**power

  elif name == "warmup_cosine":
    if warmup >= num_train_steps:
      raise ValueError(
          "warmup_cosine needs num_warmup_steps < num_train_steps, got "
          f"{warmup} >= {num_train_steps}."
      )

    def schedule(count):
      step = jnp.asarray(count, jnp.float32)
      # 0 during warmup, so the cosine factor is 1 there.
      progress = jnp.clip((step - warmup) / (num_train_steps - warmup), 0, 1)
      cosine = 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
      return peak * _warmup_factor(step, warmup) * cosine

  else:  # constant

    def schedule(count):
      step = jnp.asarray(count, jnp.float32)
      return peak * _warmup_factor(step, warmup)

  return schedule


def _key_name(key: Any) -> str:
  """Returns the name of one `jax.tree_util` path entry."""
  for attr in ("key", "name", "idx"):  # DictKey, GetAttrKey, SequenceKey.
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def _decays(path: tuple[Any, ...]) -> bool:
  """Whether the leaf at `path` gets weight decay."""
  names = [_key_name(k) for k in path]
  if names and names[-1] in _NO_DECAY_LEAVES:
    return False
  return not any(m in n for n in names for m in _NO_DECAY_MODULES)


def weight_decay_mask(params: Any) -> Any:
  """Marks which parameters get weight decay.

  A leaf is decayed unless its own name is `bias`, `scale` or `output_bias`,
  or some component of its path contains `LayerNorm` or `layer_norm`. So
  kernels and embeddings are decayed; LayerNorm params and all biases are not.

  Args:
    params: a parameter pytree (nested dicts or FrozenDicts; leaves may be
      arrays or `jax.ShapeDtypeStruct`s).

  Returns:
    A pytree with the structure of `params` and Python bool leaves, True where
    the parameter gets weight decay.
  """
  return jax.tree_util.tree_map_with_path(lambda p, _: _decays(p), params)


class ScaleByAdamNoBiasCorrectionState(NamedTuple):
  """State of `scale_by_adam_no_bias_correction`."""

  mu: optax.Updates  # First moment; same tree as the params.
  nu: optax.Updates  # Second moment; same tree as the params.


def scale_by_adam_no_bias_correction(
    b1: float = 0.9, b2: float = 0.999, eps: float = 1e-6
) -> optax.GradientTransformation:
  """Adam scaling without bias correction, as the reference ELECTRA optimizer.

  For each leaf, with gradient `g`:

    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g**2
    update = m / (sqrt(v) + eps)

  optax 0.2.8's `scale_by_adam` always bias-corrects, hence this transform.

  Args:
    b1: decay rate of the first moment.
    b2: decay rate of the second moment.
    eps: added to `sqrt(v)` in the denominator.

  Returns:
    An `optax.GradientTransformation`.
  """

  def init_fn(params):
    return ScaleByAdamNoBiasCorrectionState(
        mu=jax.tree.map(jnp.zeros_like, params),
        nu=jax.tree.map(jnp.zeros_like, params),
    )

  def update_fn(updates, state, params=None):
    del params
    mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, updates)
    nu = jax.tree.map(
        lambda v, g: b2 * v + (1 - b2) * jnp.square(g), state.nu, updates
    )
    updates = jax.tree.map(lambda m, v: m / (jnp.sqrt(v) + eps), mu, nu)
    return updates, ScaleByAdamNoBiasCorrectionState(mu=mu, nu=nu)

  return optax.GradientTransformation(init_fn, update_fn)


def _adam_scaling(
    opt_config: ml_collections.ConfigDict, bias_correction: bool
) -> optax.GradientTransformation:
  """Returns the reference or the bias-corrected Adam scaling."""
  b1, b2, eps = opt_config.adam_b1, opt_config.adam_b2, opt_config.adam_eps
  if bias_correction:
    return optax.scale_by_adam(b1=b1, b2=b2, eps=eps)
  return scale_by_adam_no_bias_correction(b1=b1, b2=b2, eps=eps)


def create_optimizer(
    config: ml_collections.ConfigDict,
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Builds the optimizer and its learning-rate schedule from the config.

  Optimizers (`config.optimizer.optimizer`):

  * "adamw": the reference `AdamWeightDecayOptimizer`; Adam without bias
    correction unless `bias_correction` is True, in which case the chain
    equals `optax.adamw(schedule, b1, b2, eps, weight_decay, mask)`.
  * "lamb": `optax.lamb`'s chain (bias-corrected Adam, masked weight decay,
    layer-wise trust ratio) with our mask and schedule. LAMB always
    bias-corrects, as in its paper; `bias_correction` only affects "adamw".

  Both are preceded by global-norm clipping unless `max_grad_norm` is 0.

  Args:
    config: the full config; reads `config.optimizer.*` and
      `config.num_train_steps`.

  Returns:
    `(tx, schedule)`: the gradient transformation, and the learning-rate
    schedule it uses (for logging `train/learning_rate` at an update count).

  Raises:
    ValueError: on an unknown optimizer or schedule, a negative
      `max_grad_norm`, or `grad_accum_steps < 1`.
  """
  opt = config.optimizer
  if opt.optimizer not in OPTIMIZERS:
    raise ValueError(
        f"Unknown optimizer {opt.optimizer!r}; expected one of "
        f"{', '.join(OPTIMIZERS)}."
    )
  if opt.max_grad_norm < 0:
    raise ValueError(f"max_grad_norm must be >= 0, got {opt.max_grad_norm}.")
  # Accumulation itself lives in train.py; an update is one full batch.
  if opt.grad_accum_steps < 1:
    raise ValueError(
        f"grad_accum_steps must be >= 1, got {opt.grad_accum_steps}."
    )
  schedule = learning_rate_schedule(opt, config.num_train_steps)

  parts = []
  if opt.max_grad_norm > 0:
    parts.append(optax.clip_by_global_norm(opt.max_grad_norm))
  # LAMB always bias-corrects, as optax.lamb and the LAMB paper do.
  bias_correction = opt.bias_correction or opt.optimizer == "lamb"
  parts.append(_adam_scaling(opt, bias_correction))
  parts.append(
      optax.add_decayed_weights(opt.weight_decay_rate, weight_decay_mask)
  )
  if opt.optimizer == "lamb":
    parts.append(optax.scale_by_trust_ratio())
  parts.append(optax.scale_by_learning_rate(schedule))
  return optax.chain(*parts), schedule
