"""Tests for `electra_jax.optimizer`: schedules, mask and update arithmetic."""

import math
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import flax  # pylint: disable=g-import-not-at-top
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from electra_jax import defaults
from electra_jax import optimizer
from electra_jax import train


def _config(**opt_overrides):
  """Returns the default config with `config.optimizer` fields overridden."""
  config = defaults.get_config()
  config.num_train_steps = opt_overrides.pop("num_train_steps", 100)
  for key, value in opt_overrides.items():
    setattr(config.optimizer, key, value)
  return config


def _schedule(name, peak=1e-3, warmup=10, total=100, power=1.0):
  config = _config(
      schedule=name,
      learning_rate=peak,
      num_warmup_steps=warmup,
      lr_decay_power=power,
      num_train_steps=total,
  )
  return optimizer.learning_rate_schedule(
      train.optimizer_config(config), config.num_train_steps
  )


def _create(config, **kwargs):
  return optimizer.create_optimizer(train.optimizer_config(config),
                                    config.num_train_steps, **kwargs)


def _run(tx, params, grads_list):
  """Applies `tx` once per gradient tree (jitted); returns params and state."""
  state = tx.init(params)

  @jax.jit
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  for grads in grads_list:
    params, state = step(params, state, grads)
  return params, state


# --- Schedules ---------------------------------------------------------------


@pytest.mark.parametrize(
    "step,expected",
    [
        (0, 0.0),
        (5, 0.5e-3 * 0.95),
        (10, 1e-3 * 0.9),
        (50, 1e-3 * 0.5),
        (100, 0.0),
        (150, 0.0),
    ],
)
def test_reference_schedule_linear(step, expected):
  schedule = _schedule("reference")
  np.testing.assert_allclose(schedule(step), expected, rtol=1e-6, atol=1e-12)


def test_reference_schedule_power_half():
  schedule = _schedule("reference", power=0.5)
  for step, expected in [
      (0, 0.0),
      (5, 0.5e-3 * math.sqrt(0.95)),
      (10, 1e-3 * math.sqrt(0.9)),
      (64, 1e-3 * 0.6),
      (100, 0.0),
      (1000, 0.0),
  ]:
    np.testing.assert_allclose(schedule(step), expected, rtol=1e-6, atol=1e-12)


def test_reference_schedule_no_warmup():
  schedule = _schedule("reference", warmup=0)
  np.testing.assert_allclose(schedule(0), 1e-3, rtol=1e-6)
  np.testing.assert_allclose(schedule(25), 0.75e-3, rtol=1e-6)


def test_reference_schedule_accepts_traced_int32_count():
  schedule = _schedule("reference")
  value = jax.jit(schedule)(jnp.asarray(5, jnp.int32))
  assert value.dtype == jnp.float32
  np.testing.assert_allclose(value, 0.5e-3 * 0.95, rtol=1e-6)


def test_warmup_cosine_schedule():
  schedule = _schedule("warmup_cosine", warmup=10, total=110)
  for step, expected in [
      (0, 0.0),
      (5, 0.5e-3),
      (10, 1e-3),
      (35, 1e-3 * 0.5 * (1 + math.cos(math.pi * 0.25))),
      (60, 0.5e-3),
      (110, 0.0),
      (200, 0.0),
  ]:
    np.testing.assert_allclose(schedule(step), expected, rtol=1e-5, atol=1e-10)


def test_constant_schedule():
  schedule = _schedule("constant", warmup=4)
  for step, expected in [(0, 0.0), (1, 0.25e-3), (4, 1e-3), (10**6, 1e-3)]:
    np.testing.assert_allclose(schedule(step), expected, rtol=1e-6)
  np.testing.assert_allclose(_schedule("constant", warmup=0)(0), 1e-3)


def test_unknown_schedule_lists_valid_names():
  with pytest.raises(ValueError, match="reference, warmup_cosine, constant"):
    _schedule("linear")


# --- Weight-decay mask --------------------------------------------------------


def _electra_like_params():
  ones = lambda *shape: jnp.ones(shape, jnp.float32)
  return {
      "discriminator": {
          "encoder": {
              "layer_0": {
                  "attention": {
                      "query": {"kernel": ones(4, 4), "bias": ones(4)},
                  },
                  "LayerNorm": {"scale": ones(4), "bias": ones(4)},
              },
          },
      },
      "embeddings": {"word_embeddings": {"embedding": ones(10, 4)}},
      "generator": {"generator_predictions": {"output_bias": ones(10)}},
  }


_EXPECTED_MASK = {
    "discriminator": {
        "encoder": {
            "layer_0": {
                "attention": {"query": {"kernel": True, "bias": False}},
                "LayerNorm": {"scale": False, "bias": False},
            },
        },
    },
    "embeddings": {"word_embeddings": {"embedding": True}},
    "generator": {"generator_predictions": {"output_bias": False}},
}


def test_weight_decay_mask_leaves():
  assert optimizer.weight_decay_mask(_electra_like_params()) == _EXPECTED_MASK


def test_weight_decay_mask_frozen_dict_and_layer_norm_spelling():
  params = flax.core.freeze({
      "layer_norm_out": {"gamma": jnp.ones(3)},  # Module name rule.
      "dense": {"kernel": jnp.ones((3, 3))},
  })
  mask = optimizer.weight_decay_mask(params)
  assert jax.tree.structure(mask) == jax.tree.structure(params)
  assert flax.core.unfreeze(mask) == {
      "layer_norm_out": {"gamma": False},
      "dense": {"kernel": True},
  }


def test_zero_grads_move_only_decayed_params():
  lr, wd = 0.1, 0.5
  config = _config(
      schedule="constant",
      learning_rate=lr,
      num_warmup_steps=0,
      weight_decay_rate=wd,
  )
  tx, _ = _create(config)
  params = _electra_like_params()
  grads = jax.tree.map(jnp.zeros_like, params)
  new_params, _ = _run(tx, params, [grads])
  jax.tree.map(
      lambda decayed, old, new: np.testing.assert_allclose(
          new, old * (1 - lr * wd) if decayed else old, rtol=1e-6
      ),
      _EXPECTED_MASK,
      params,
      new_params,
  )


# --- Update arithmetic --------------------------------------------------------


_B1, _B2, _EPS, _WD, _PEAK, _TOTAL = 0.9, 0.999, 1e-6, 0.01, 0.1, 10
_PARAMS = {
    "dense": {
        "kernel": np.array([[0.5, -1.0], [2.0, 0.25]], np.float32),
        "bias": np.array([0.1, -0.2], np.float32),
    }
}
_GRADS = [
    {
        "dense": {
            "kernel": np.array([[0.1, -0.2], [0.3, 0.05]], np.float32),
            "bias": np.array([0.01, -0.02], np.float32),
        }
    },
    {
        "dense": {
            "kernel": np.array([[-0.4, 0.1], [0.2, 0.0]], np.float32),
            "bias": np.array([0.03, 0.5], np.float32),
        }
    },
    {
        "dense": {
            "kernel": np.array([[0.2, 0.2], [-0.1, 0.3]], np.float32),
            "bias": np.array([-0.05, 0.0], np.float32),
        }
    },
]


def _adamw_config(**overrides):
  fields = dict(
      optimizer="adamw",
      schedule="reference",
      learning_rate=_PEAK,
      num_warmup_steps=0,
      lr_decay_power=1.0,
      num_train_steps=_TOTAL,
      adam_b1=_B1,
      adam_b2=_B2,
      adam_eps=_EPS,
      weight_decay_rate=_WD,
      max_grad_norm=1e6,  # Large enough never to clip these gradients.
  )
  fields.update(overrides)
  return _config(**fields)


def _reference_numpy(params, grads_list):
  """The reference AdamWeightDecayOptimizer, step by step in float64."""
  params = {k: v.astype(np.float64) for k, v in params["dense"].items()}
  m = {k: np.zeros_like(v) for k, v in params.items()}
  v = {k: np.zeros_like(x) for k, x in params.items()}
  for step, grads in enumerate(grads_list):
    lr = _PEAK * (1 - min(step, _TOTAL) / _TOTAL)  # No warmup; count = step.
    for name, g in grads["dense"].items():
      m[name] = _B1 * m[name] + (1 - _B1) * g
      v[name] = _B2 * v[name] + (1 - _B2) * g * g
      update = m[name] / (np.sqrt(v[name]) + _EPS)
      if name == "kernel":  # Biases get no weight decay.
        update = update + _WD * params[name]
      params[name] = params[name] - lr * update
  return {"dense": params}


@pytest.mark.parametrize("num_steps", [1, 3])
def test_reference_adamw_matches_hand_computation(num_steps):
  tx, _ = _create(_adamw_config())
  new_params, _ = _run(tx, _PARAMS, _GRADS[:num_steps])
  expected = _reference_numpy(_PARAMS, _GRADS[:num_steps])
  jax.tree.map(
      lambda got, want: np.testing.assert_allclose(got, want, rtol=1e-5),
      new_params,
      expected,
  )


def test_bias_correction_differs_from_reference_and_equals_optax_adamw():
  config = _adamw_config(bias_correction=True)
  tx, schedule = _create(config)
  reference_tx, _ = _create(_adamw_config())

  one_step, _ = _run(tx, _PARAMS, _GRADS[:1])
  reference_one_step, _ = _run(reference_tx, _PARAMS, _GRADS[:1])
  assert not np.allclose(
      one_step["dense"]["kernel"], reference_one_step["dense"]["kernel"]
  )

  adamw = optax.adamw(
      schedule,
      b1=_B1,
      b2=_B2,
      eps=_EPS,
      weight_decay=_WD,
      mask=optimizer.weight_decay_mask,
  )
  got, _ = _run(tx, _PARAMS, _GRADS)
  want, _ = _run(adamw, _PARAMS, _GRADS)
  jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), got, want
  )


def _first_moment(opt_state):
  assert isinstance(opt_state, optimizer.AdamWState)
  return opt_state.mu


def test_clipping_scales_grads_to_global_norm_one():
  grads = jax.tree.map(lambda g: 10.0 * g, _GRADS[1])
  norm = optax.tree.norm(grads)
  assert norm > 1.0  # So that clipping at 1.0 does something.

  tx, _ = _create(_adamw_config(max_grad_norm=1.0))
  _, state = _run(tx, _PARAMS, [grads])
  # After one step the first moment is (1 - b1) * the clipped gradient.
  clipped = jax.tree.map(lambda m: m / (1 - _B1), _first_moment(state))
  np.testing.assert_allclose(optax.tree.norm(clipped), 1.0, rtol=1e-5)
  jax.tree.map(
      lambda c, g: np.testing.assert_allclose(c, g / norm, rtol=1e-5),
      clipped,
      grads,
  )

  tx, _ = _create(_adamw_config(max_grad_norm=0.0))
  _, state = _run(tx, _PARAMS, [grads])
  unclipped = jax.tree.map(lambda m: m / (1 - _B1), _first_moment(state))
  np.testing.assert_allclose(optax.tree.norm(unclipped), norm, rtol=1e-5)


def test_lamb_one_step_changes_params_finitely():
  tx, _ = _create(_adamw_config(optimizer="lamb"))
  new_params, _ = _run(tx, _PARAMS, _GRADS[:1])
  for old, new in zip(jax.tree.leaves(_PARAMS), jax.tree.leaves(new_params)):
    assert np.all(np.isfinite(new))
    assert not np.allclose(old, new)


def test_unknown_optimizer_lists_valid_names():
  with pytest.raises(ValueError, match="adamw, lamb"):
    _create(_adamw_config(optimizer="sgd"))


def test_grad_accum_steps_must_be_positive():
  with pytest.raises(ValueError, match="grad_accum_steps"):
    _create(_adamw_config(grad_accum_steps=0))
  tx, _ = _create(_adamw_config(grad_accum_steps=4))
  assert isinstance(tx, optax.GradientTransformation)


def _optax_chain(schedule, *, bias_correction, max_grad_norm):
  """The optax chain that `optimizer.adamw` fuses, for comparison."""
  parts = [optax.clip_by_global_norm(max_grad_norm)] if max_grad_norm else []
  adam = optax.scale_by_adam(b1=_B1, b2=_B2, eps=_EPS)
  if not bias_correction:  # Same state, update m / (sqrt(v) + eps).
    adam = optax.GradientTransformation(adam.init, _no_bias_correction_update)
  parts += [adam,
            optax.add_decayed_weights(_WD, optimizer.weight_decay_mask),
            optax.scale_by_learning_rate(schedule)]
  return optax.chain(*parts)


def _no_bias_correction_update(updates, state, params=None):
  """`optax.scale_by_adam`'s update without its bias correction."""
  del params
  mu = jax.tree.map(lambda m, g: _B1 * m + (1 - _B1) * g, state.mu, updates)
  nu = jax.tree.map(lambda v, g: _B2 * v + (1 - _B2) * g * g, state.nu,
                    updates)
  out = jax.tree.map(lambda m, v: m / (jnp.sqrt(v) + _EPS), mu, nu)
  return out, state._replace(count=state.count + 1, mu=mu, nu=nu)


@pytest.mark.parametrize("bias_correction", [False, True])
@pytest.mark.parametrize("max_grad_norm", [0.0, 0.3])
@pytest.mark.parametrize("flat_norm", [False, True])
def test_fused_adamw_equals_the_optax_chain(bias_correction, max_grad_norm,
                                            flat_norm):
  config = _adamw_config(bias_correction=bias_correction,
                         max_grad_norm=max_grad_norm, num_warmup_steps=2)
  tx, schedule = _create(config, flat_norm=flat_norm)
  chain = _optax_chain(schedule, bias_correction=bias_correction,
                       max_grad_norm=max_grad_norm)
  got, state = _run(tx, _PARAMS, _GRADS)
  want, _ = _run(chain, _PARAMS, _GRADS)
  jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9),
      got, want)
  assert int(state.count) == len(_GRADS)
  assert not np.allclose(got["dense"]["kernel"], _PARAMS["dense"]["kernel"])


def test_global_norm_flat_equals_per_leaf():
  tree = {"a": jnp.arange(12.0).reshape(3, 4), "b": {"c": -jnp.ones(5)},
          "d": jnp.array([3.0], jnp.bfloat16)}
  want = np.sqrt(sum(np.sum(np.square(np.asarray(x, np.float64)))
                     for x in jax.tree.leaves(tree)))
  for flat in (False, True):
    got = jax.jit(lambda t, f=flat: optimizer.global_norm(t, flat=f))(tree)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=1e-6)
  assert float(optimizer.global_norm({})) == 0.0


def test_adamw_needs_params():
  tx, _ = _create(_adamw_config())
  grads = _GRADS[0]
  with pytest.raises(ValueError, match="needs the params"):
    tx.update(grads, tx.init(_PARAMS))


def test_lamb_clips_with_the_flat_norm_too():
  config = _adamw_config(optimizer="lamb", max_grad_norm=0.1)
  got, _ = _run(_create(config, flat_norm=True)[0],
                _PARAMS, _GRADS)
  want, _ = _run(_create(config)[0], _PARAMS, _GRADS)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
               got, want)
