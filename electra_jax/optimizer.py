"""Optimizer: the update rule, learning-rate schedules and weight-decay mask.

By default this reproduces google-research/electra `model/optimization.py`:
`AdamWeightDecayOptimizer` (Adam without bias correction, decoupled weight
decay that skips LayerNorm parameters and biases), global-norm clipping at 1.0
and a linear warmup multiplied into a polynomial decay to 0.

"adamw" is one fused transformation (`adamw`), per leaf:

  g = g * min(1, max_grad_norm / global_norm(grads))   # Unless 0.
  m = b1 * m + (1 - b1) * g;  v = b2 * v + (1 - b2) * g**2
  u = m / (sqrt(v) + eps)                  # Or bias-corrected m and v.
  u += weight_decay_rate * param           # Decayed leaves only.
  update = -lr(count) * u

It equals the optax chain `clip_by_global_norm, scale_by_adam,
add_decayed_weights, scale_by_learning_rate` (a test checks that), written as
one map over the leaves: XLA then compiles one small loop per leaf output
instead of the chain's separate passes, which took seconds of the step's
compile time. "lamb" is optax's chain with the trust ratio before the
learning rate.

Global norms (for clipping and the `grad_norm` metric) come from
`global_norm`, which can reduce all leaves at once when the leaves are not
sharded (see there).

Gradient accumulation happens in `train.py` (a scan over micro-batches inside
the step), so one optimizer update always sees the gradient of a full batch;
this module only validates `grad_accum_steps`.
"""

import functools
from typing import Any, NamedTuple

import dataclasses

import jax
import jax.numpy as jnp
import optax

SCHEDULES = ("reference", "warmup_cosine", "constant")
OPTIMIZERS = ("adamw", "lamb")

# Leaf names that never get weight decay. The reference excludes any variable
# whose name contains "bias", "LayerNorm" or "layer_norm"; in our Flax trees
# LayerNorm params are `scale`/`bias` under a `LayerNorm` module, dense biases
# are `bias` and the generator's output bias is `output_bias`.
_NO_DECAY_LEAVES = frozenset({"bias", "scale", "output_bias"})
_NO_DECAY_MODULES = ("LayerNorm", "layer_norm")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """The optimizer settings; field for field the run config's `optimizer`
  section (see `defaults.py` for what each means)."""

  optimizer: str = "adamw"
  learning_rate: float = 5e-4
  num_warmup_steps: float = 10_000
  lr_decay_power: float = 1.0
  schedule: str = "reference"
  weight_decay_rate: float = 0.01
  adam_b1: float = 0.9
  adam_b2: float = 0.999
  adam_eps: float = 1e-6
  bias_correction: bool = False
  max_grad_norm: float = 1.0
  grad_accum_steps: int = 1


def _warmup_factor(step: jax.Array, num_warmup_steps: int) -> jax.Array:
  """Returns `min(1, step / num_warmup_steps)`, or 1 without warmup."""
  if num_warmup_steps == 0:
    return jnp.ones_like(step)
  return jnp.minimum(1.0, step / num_warmup_steps)


def learning_rate_schedule(
    opt_config: OptimizerConfig, num_train_steps: int
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
    opt_config: reads `schedule`, `learning_rate`, `num_warmup_steps` and
      `lr_decay_power`.
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


def global_norm(tree: Any, *, flat: bool = False) -> jax.Array:
  """The L2 norm of all leaves of `tree` together, in float32.

  Args:
    tree: a pytree of arrays.
    flat: reduce one concatenation of all leaves instead of each leaf. XLA
      compiles a per-leaf sum of squares into about three kernels per leaf
      (~1,200 for ELECTRA-Small's 402 leaves, seconds of compile time per
      norm); the concatenation is one kernel. Use it only when the leaves
      are not sharded: concatenating sharded leaves would gather them.

  Returns:
    A float32 scalar.
  """
  leaves = [jnp.asarray(x, jnp.float32) for x in jax.tree.leaves(tree)]
  if not leaves:
    return jnp.zeros((), jnp.float32)
  if flat:
    joined = jnp.concatenate([x.ravel() for x in leaves])
    return jnp.sqrt(jnp.sum(jnp.square(joined)))
  return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in leaves))


def _clip_scale(updates: Any, max_norm: float, flat: bool) -> jax.Array:
  """`min(1, max_norm / global_norm)`: the factor of global-norm clipping."""
  norm = global_norm(updates, flat=flat)
  return jnp.where(norm < max_norm, 1.0, max_norm / norm)


def clip_by_global_norm(
    max_norm: float, *, flat: bool = False
) -> optax.GradientTransformation:
  """`optax.clip_by_global_norm` with the norm of `global_norm(flat=...)`."""

  def update_fn(updates, state, params=None):
    del params
    scale = _clip_scale(updates, max_norm, flat)
    return jax.tree.map(lambda g: (g * scale).astype(g.dtype), updates), state

  return optax.GradientTransformation(lambda _: optax.EmptyState(), update_fn)


@functools.partial(jax.jit, static_argnames=(
    "b1", "b2", "eps", "weight_decay", "bias_correction"))
def _adamw_leaf(g, m, v, p, scale, lr, t, *, b1, b2, eps, weight_decay,
                bias_correction):
  """One leaf of `adamw`: returns (update, m, v).

  Jitted so that its trace is reused across leaves of one shape (ELECTRA
  has ~50 shapes for ~400 leaves); XLA inlines it into the step.
  """
  g = g * scale
  m = b1 * m + (1 - b1) * g
  v = b2 * v + (1 - b2) * jnp.square(g)
  if bias_correction:
    u = (m / (1 - b1**t)) / (jnp.sqrt(v / (1 - b2**t)) + eps)
  else:
    u = m / (jnp.sqrt(v) + eps)
  if weight_decay:
    u = u + weight_decay * p
  return (-lr * u).astype(p.dtype), m.astype(p.dtype), v.astype(p.dtype)


class AdamWState(NamedTuple):
  """State of `adamw`."""

  count: jax.Array  # Updates applied so far (int32): the schedule's input.
  mu: optax.Updates  # First moment; same tree as the params.
  nu: optax.Updates  # Second moment; same tree as the params.


def adamw(
    learning_rate: optax.Schedule,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    weight_decay: float = 0.01,
    mask: Any = weight_decay_mask,
    bias_correction: bool = False,
    max_grad_norm: float = 1.0,
    flat_norm: bool = False,
) -> optax.GradientTransformation:
  """Clipped AdamW with decoupled, masked weight decay, as one transform.

  Without bias correction this is the reference `AdamWeightDecayOptimizer`;
  with it, `optax.adamw`. See the module docstring for the update.

  Args:
    learning_rate: schedule of the update count (0 for the first update).
    b1: decay rate of the first moment.
    b2: decay rate of the second moment.
    eps: added to `sqrt(v)` in the denominator.
    weight_decay: decoupled weight-decay rate.
    mask: a tree of bools like the params, or a function of the params that
      returns one: True where a leaf gets weight decay.
    bias_correction: divide the moments by `1 - b**t` (Adam's correction).
    max_grad_norm: clip the gradients to this global norm; 0 disables.
    flat_norm: compute the clipping norm with `global_norm(flat=True)`.

  Returns:
    An `optax.GradientTransformation` whose state is an `AdamWState`.
  """

  def init_fn(params):
    return AdamWState(count=jnp.zeros((), jnp.int32),
                      mu=jax.tree.map(jnp.zeros_like, params),
                      nu=jax.tree.map(jnp.zeros_like, params))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("adamw needs the params for weight decay: call "
                       "tx.update(grads, opt_state, params).")
    decayed = mask(params) if callable(mask) else mask
    treedef = jax.tree.structure(updates)
    leaves = zip(treedef.flatten_up_to(updates),
                 treedef.flatten_up_to(state.mu),
                 treedef.flatten_up_to(state.nu),
                 treedef.flatten_up_to(params),
                 treedef.flatten_up_to(decayed))
    scale = (_clip_scale(updates, max_grad_norm, flat_norm)
             if max_grad_norm > 0 else jnp.ones((), jnp.float32))
    lr = learning_rate(state.count)
    t = (state.count + 1).astype(jnp.float32)
    new_updates, new_mu, new_nu = [], [], []
    for g, m, v, p, decay in leaves:
      u, m, v = _adamw_leaf(
          g, m, v, p, scale, lr, t, b1=b1, b2=b2, eps=eps,
          weight_decay=weight_decay if decay else 0.0,
          bias_correction=bias_correction)
      new_updates.append(u)
      new_mu.append(m)
      new_nu.append(v)
    count = optax.safe_increment(state.count)
    return treedef.unflatten(new_updates), AdamWState(
        count=count, mu=treedef.unflatten(new_mu),
        nu=treedef.unflatten(new_nu))

  return optax.GradientTransformation(init_fn, update_fn)


def create_optimizer(
    opt: OptimizerConfig, num_train_steps: int, *, flat_norm: bool = False
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Builds the optimizer and its learning-rate schedule.

  Optimizers (`opt.optimizer`):

  * "adamw": `adamw` above: the reference `AdamWeightDecayOptimizer` (Adam
    without bias correction) unless `bias_correction` is True, in which case
    it equals `optax.adamw(schedule, b1, b2, eps, weight_decay, mask)`.
  * "lamb": `optax.lamb`'s chain (bias-corrected Adam, masked weight decay,
    layer-wise trust ratio) with our mask and schedule. LAMB always
    bias-corrects, as in its paper; `bias_correction` only affects "adamw".

  Both clip gradients to a global norm first unless `max_grad_norm` is 0.

  Args:
    opt: the optimizer settings.
    num_train_steps: total number of optimizer updates (for the schedule).
    flat_norm: compute the clipping norm over the concatenated leaves
      (`global_norm(flat=True)`); only for params that are not sharded.

  Returns:
    `(tx, schedule)`: the gradient transformation, and the learning-rate
    schedule it uses (for logging `train/learning_rate` at an update count).

  Raises:
    ValueError: on an unknown optimizer or schedule, a negative
      `max_grad_norm`, or `grad_accum_steps < 1`.
  """
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
  schedule = learning_rate_schedule(opt, num_train_steps)
  if opt.optimizer == "adamw":
    tx = adamw(schedule, b1=opt.adam_b1, b2=opt.adam_b2, eps=opt.adam_eps,
               weight_decay=opt.weight_decay_rate, mask=weight_decay_mask,
               bias_correction=opt.bias_correction,
               max_grad_norm=opt.max_grad_norm, flat_norm=flat_norm)
    return tx, schedule

  parts = []
  if opt.max_grad_norm > 0:
    parts.append(clip_by_global_norm(opt.max_grad_norm, flat=flat_norm))
  parts += [
      optax.scale_by_adam(b1=opt.adam_b1, b2=opt.adam_b2, eps=opt.adam_eps),
      optax.add_decayed_weights(opt.weight_decay_rate, weight_decay_mask),
      optax.scale_by_trust_ratio(),
      optax.scale_by_learning_rate(schedule),
  ]
  return optax.chain(*parts), schedule
