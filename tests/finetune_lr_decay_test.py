"""Layer-wise learning-rate decay: multipliers per parameter against
hand-computed values, with and without the reference-code compat switch,
and their effect on the actual optimizer update."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from electra_jax import model as model_lib
from electra_jax.finetune import heads
from electra_jax.finetune import lr_decay
from electra_jax.finetune import train as ft_train
from tests import testing
from tests.testing import fast_compiles  # pylint: disable=W0611

N_LAYERS = 3


def _params(embedding_size=16):
  cfg = model_lib.ModelConfig(**{**testing.TINY,
                                 "embedding_size": embedding_size,
                                 "num_hidden_layers": N_LAYERS})
  module = heads.TaskModel(cfg, "classification", 2, "transformers")
  ids = jnp.ones((1, 4), jnp.int32)
  return jax.eval_shape(lambda: nn.unbox(module.init(
      jax.random.key(0), ids, ids, ids)))["params"]


def _by_name(tree):
  return {"/".join(str(k.key) for k in path): v
          for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


# Hand-computed for n = 3 layers, decay d = 0.8.
#   default: head 1, layer_2 d, layer_1 d^2, layer_0 d^3, embeddings d^4.
#   compat (google-research/electra _get_layer_lrs): head 1, layer_2 d^2,
#   layer_1 d^3, layer_0 d^4, embeddings and embeddings_project d^5.
EXPECTED = {
    False: {"head": 1.0, "layer_2": 0.8, "layer_1": 0.64, "layer_0": 0.512,
            "embeddings": 0.4096},
    True: {"head": 1.0, "layer_2": 0.64, "layer_1": 0.512, "layer_0": 0.4096,
           "embeddings": 0.32768},
}


def _group(name: str) -> str:
  parts = name.split("/")
  if parts[0] in ("head", "embeddings"):
    return parts[0]
  return "embeddings" if parts[1] == "embeddings_project" else parts[1]


@pytest.mark.parametrize("compat", [False, True])
def test_multipliers_match_hand_computed_values(compat):
  params = _params()
  mults = _by_name(lr_decay.lr_multipliers(params, num_layers=N_LAYERS,
                                           decay=0.8, compat=compat))
  assert len(mults) == len(jax.tree.leaves(params))
  assert "encoder/embeddings_project/kernel" in mults
  assert "head/dense/kernel" in mults and "head/output/bias" in mults
  for name, value in mults.items():
    np.testing.assert_allclose(value, EXPECTED[compat][_group(name)],
                               rtol=1e-12, err_msg=name)


def test_compat_is_one_extra_factor_below_the_head():
  params = _params()
  default = _by_name(lr_decay.lr_multipliers(params, num_layers=N_LAYERS,
                                             decay=0.9, compat=False))
  compat = _by_name(lr_decay.lr_multipliers(params, num_layers=N_LAYERS,
                                            decay=0.9, compat=True))
  for name in default:
    factor = 1.0 if name.startswith("head/") else 0.9
    np.testing.assert_allclose(compat[name], default[name] * factor,
                               err_msg=name)


def test_zero_decay_disables_and_unknown_params_fail():
  params = _params()
  ones = lr_decay.lr_multipliers(params, num_layers=N_LAYERS, decay=0.0,
                                 compat=True)
  assert set(jax.tree.leaves(ones)) == {1.0}
  with pytest.raises(ValueError, match="No layer-wise learning rate"):
    lr_decay.lr_multipliers({"pooler": {"kernel": np.zeros(2)}},
                            num_layers=N_LAYERS, decay=0.8, compat=False)
  with pytest.raises(ValueError, match="encoder/layer_7"):
    lr_decay.lr_multipliers({"encoder": {"layer_7": {"bias": np.zeros(2)}}},
                            num_layers=N_LAYERS, decay=0.8, compat=False)


def test_optimizer_update_is_scaled_per_parameter():
  """One real update with decay equals the undecayed update times the
  hand-computed multiplier (weight decay included), in both modes."""
  config = testing.finetune_config("task=sst2")
  config.optimizer.warmup_proportion = 0.0  # A non-zero first update.
  shapes = _params()
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape),
                                              jnp.float32), shapes)
  grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape),
                                             jnp.float32), params)
  updates = {}
  for decay, compat in ((0.0, False), (0.8, False), (0.8, True)):
    config.optimizer.layerwise_lr_decay = decay
    config.optimizer.layerwise_lr_decay_compat = compat
    tx, schedule = lr_decay.create_optimizer(
        ft_train.pretraining_style_optimizer(config, 10), 10, shapes,
        N_LAYERS, decay=decay, compat=compat)
    step = jax.jit(lambda g, p, tx=tx: tx.update(g, tx.init(p), p)[0])
    updates[decay, compat] = _by_name(step(grads, params))
  assert float(schedule(0)) == pytest.approx(config.optimizer.learning_rate)
  base = updates[0.0, False]
  for compat in (False, True):
    for name, value in updates[0.8, compat].items():
      np.testing.assert_allclose(
          value, base[name] * EXPECTED[compat][_group(name)], rtol=1e-5,
          atol=1e-12, err_msg=name)
