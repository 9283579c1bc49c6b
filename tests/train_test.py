"""The sharded train step: equal across meshes, no recompiles, accumulation,
objective variants, and a tiny model that actually learns."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import mini
from electra_jax import sharding
from electra_jax import train
from electra_jax.data import spec as data_spec
from tests import testing

VOCAB, LENGTH, BATCH = 100, 16, 8
CLS, SEP, MASK = 1, 2, 3
SPEC = data_spec.DataSpec(vocab_size=VOCAB, pad_id=0, cls_id=CLS, sep_id=SEP,
                          mask_id=MASK, max_seq_length=LENGTH)


def tiny_config(**mesh):
  config = testing.load_config("tiny")
  config.model.vocab_size = VOCAB
  config.model.max_position_embeddings = 32
  config.input.max_seq_length = LENGTH
  config.input.batch_size = BATCH
  config.optimizer.num_warmup_steps = 2
  config.num_train_steps = 100
  for axis, size in mesh.items():
    setattr(config.sharding, f"mesh_{axis}", size)
  return config


_TEMPLATES = np.random.default_rng(1234).integers(4, VOCAB, (8, 64))


def synthetic_batch(seed, batch=BATCH, length=LENGTH):
  """A learnable corpus: each row is one of 8 fixed random "sentences",
  [CLS] ... [SEP], of random length, with padding and both segments."""
  rng = np.random.default_rng(seed)
  ids = _TEMPLATES[rng.integers(0, len(_TEMPLATES), batch), :length].copy()
  ids[:, 0] = CLS
  lengths = rng.integers(length // 2, length + 1, batch)
  ids[np.arange(batch), lengths - 1] = SEP
  mask = (np.arange(length) < lengths[:, None]).astype(np.int32)
  segments = np.zeros_like(ids)
  segments[:, length // 2:] = 1
  return {"input_ids": (ids * mask).astype(np.int32), "input_mask": mask,
          "segment_ids": (segments * mask).astype(np.int32)}


def run_steps(config, num_steps, devices=None, batches=None):
  """Builds the sharded step on a mesh and runs `num_steps` steps."""
  mesh, rules = train.mesh_and_rules(config, devices)
  with sharding.use(mesh, rules):
    built = train.build(config, SPEC, mesh, rules, jax.random.key(0))
    state, p_train = built.state, built.train_step
    history = []
    for i in range(num_steps):
      batch = (batches or synthetic_batch)(i)
      state, metrics = p_train(state, sharding.global_batch(batch, mesh),
                               jax.random.key(1))
      history.append(jax.device_get(metrics))
  return state, history, p_train


@functools.lru_cache(maxsize=None)
def single_device_run():
  state, history, _ = run_steps(tiny_config(data=1), 5,
                                devices=jax.devices()[:1])
  return jax.device_get(state.params), history


@pytest.mark.parametrize("mesh", [dict(data=8), dict(data=1, fsdp=8),
                                  dict(data=2, fsdp=2, tensor=2)])
def test_sharded_losses_match_one_device(mesh):
  want_params, want = single_device_run()
  state, got, p_train = run_steps(tiny_config(**mesh), 5)
  losses = [float(m["loss"][0]) for m in got]
  np.testing.assert_allclose(losses, [float(m["loss"][0]) for m in want],
                             rtol=1e-5)
  assert losses[-1] != losses[0]  # It trains (dropout and updates act).
  jax.tree.map(functools.partial(np.testing.assert_allclose, atol=2e-5),
               jax.device_get(state.params), want_params)
  assert p_train._cache_size() == 1  # pylint: disable=protected-access


def test_params_are_sharded_as_the_rules_say():
  config = tiny_config(data=2, fsdp=2, tensor=2)
  mesh, rules = train.mesh_and_rules(config)
  with sharding.use(mesh, rules):
    state = train.build(config, SPEC, mesh, rules, jax.random.key(0)).state
  spec = lambda x: tuple(x.sharding.spec)  # pylint: disable=g-long-lambda
  p = state.params
  layer = p["discriminator"]["encoder"]["layer_0"]
  assert spec(p["embeddings"]["word_embeddings"]["embedding"]) == (
      "tensor", "fsdp")
  assert spec(layer["query"]["kernel"]) == ("fsdp", "tensor")
  assert spec(layer["output"]["kernel"]) == ("tensor", "fsdp")
  assert spec(layer["output_LayerNorm"]["scale"]) == ("fsdp",)
  assert spec(p["generator"]["output_bias"]) == ("tensor",)
  shard = layer["intermediate"]["kernel"].addressable_shards[0].data
  assert shard.shape == (64 // 2, 128 // 2)  # Really split, not replicated.
  mu = state.opt_state.mu["discriminator"]["encoder"]["layer_0"]
  assert spec(mu["query"]["kernel"]) == ("fsdp", "tensor")
  assert spec(state.opt_state.count) == ()


def test_gradient_accumulation_equals_the_full_batch():
  def no_dropout(k):
    config = tiny_config(data=2)
    config.model.hidden_dropout_prob = 0.0
    config.model.attention_probs_dropout_prob = 0.0
    config.optimizer.grad_accum_steps = k
    return config
  two = jax.devices()[:2]
  full, full_hist, _ = run_steps(no_dropout(1), 3, devices=two)
  accum, accum_hist, _ = run_steps(no_dropout(4), 3, devices=two)
  for a, b in zip(full_hist, accum_hist):
    np.testing.assert_allclose(a["loss"][0], b["loss"][0], rtol=1e-5)
    np.testing.assert_allclose(a["grad_norm"][0], b["grad_norm"][0],
                               rtol=1e-4)
  jax.tree.map(functools.partial(np.testing.assert_allclose, atol=1e-5),
               jax.device_get(full.params), jax.device_get(accum.params))


@pytest.mark.parametrize("variant", ["mlm_only", "uniform", "untied",
                                     "disallow", "with_replacement"])
def test_objective_variants_run(variant):
  config = tiny_config(data=8)
  if variant == "mlm_only":
    config.objective.electra_objective = False
  elif variant == "uniform":
    config.objective.uniform_generator = True
  elif variant == "untied":
    config.generator.untied_generator_embeddings = True
  elif variant == "with_replacement":
    config.objective.sample_with_replacement = True
    assert train.StepConfig.from_config(config, SPEC).sample_with_replacement
  else:
    config.objective.disallow_correct = True
  state, history, _ = run_steps(config, 2)
  metrics = history[-1]
  assert np.isfinite(metrics["loss"][0])
  assert ("disc_loss" in metrics) == (variant != "mlm_only")
  if variant == "mlm_only":
    assert set(state.params) == {"embeddings", "generator"}
    np.testing.assert_allclose(
        metrics["loss"][0],
        metrics["masked_lm_loss"][0] / metrics["masked_lm_loss"][1],
        rtol=1e-5)
  if variant == "uniform":
    assert "generator" not in state.params
  if variant == "disallow":  # Every sample differs from the original.
    assert metrics["sampled_masked_lm_accuracy"][0] == 0
  if variant != "mlm_only":
    loss = (metrics["masked_lm_loss"][0] / metrics["masked_lm_loss"][1]
            + 50 * metrics["disc_loss"][0] / metrics["disc_loss"][1])
    np.testing.assert_allclose(metrics["loss"][0], loss, rtol=1e-4)


def _train_from(config, num_steps, start=None):
  """Params after `num_steps` steps on one device, from `start(init)`."""
  mesh, rules = train.mesh_and_rules(config, jax.devices()[:1])
  with sharding.use(mesh, rules):
    built = train.build(config, SPEC, mesh, rules, jax.random.key(0))
    state = built.state
    if start is not None:
      state = state.replace(params=jax.device_put(
          start(jax.device_get(state.params)), built.state_shardings.params))
    for i in range(num_steps):
      state, _ = built.train_step(
          state, sharding.global_batch(synthetic_batch(i), mesh),
          jax.random.key(1))
    return jax.device_get(state.params)


@pytest.mark.parametrize("shared", ["nothing", "embeddings", "clip", "mini"])
def test_the_generator_learns_as_the_mlm_only_model_when_nothing_is_shared(
    shared):
  # ELECTRA's generator is trained by its MLM loss alone: with untied
  # embeddings and no gradient clipping, the discriminator beside it must
  # not change one of its weights, step for step, against the MLM-only
  # model of the same shape from the same init on the same masks. Shared
  # embeddings or a shared clipping norm must change them (that is what
  # the comparison can see). "mini" takes both settings from
  # configs/mini.py, whose generator must stay apart to leave the MLM
  # plateau within its hour (README, 'The MLM plateau').
  preset = mini.get_config()
  def config(electra):
    c = tiny_config(data=1)
    # The discriminator's shape as the generator's rule makes it.
    c.model.embedding_size = c.model.hidden_size
    c.model.intermediate_size = 4 * c.model.hidden_size
    c.model.num_attention_heads = max(1, c.model.hidden_size // 64)
    # Dropout draws by module path: "generator_embeddings" is not
    # "embeddings".
    c.model.hidden_dropout_prob = c.model.attention_probs_dropout_prob = 0.0
    c.objective.electra_objective = electra
    c.generator.generator_hidden_size = 1.0
    c.generator.untied_generator_embeddings = shared != "embeddings"
    c.optimizer.max_grad_norm = 0.5 if shared == "clip" else 0.0
    if shared == "mini":
      c.generator.untied_generator_embeddings = (
          preset.generator.untied_generator_embeddings)
      c.optimizer.max_grad_norm = preset.optimizer.max_grad_norm
    return c

  init = _train_from(config(True), 0)
  gen_embeddings = ("generator_embeddings"
                    if config(True).generator.untied_generator_embeddings
                    else "embeddings")
  mlm = _train_from(config(False), 3, start=lambda _: {
      "embeddings": init[gen_embeddings], "generator": init["generator"]})
  electra = _train_from(config(True), 3)
  leaves = jax.tree.leaves(electra["generator"])
  if gen_embeddings == "generator_embeddings":
    leaves += jax.tree.leaves(electra["generator_embeddings"])
  gaps = [float(np.max(np.abs(a - b))) for a, b in zip(
      leaves, jax.tree.leaves((mlm["generator"], mlm["embeddings"])))]
  if shared in ("nothing", "mini"):
    assert max(gaps) < 1e-6, gaps
  else:
    assert max(gaps) > 1e-4, gaps


def test_tiny_model_learns():
  """Loss falls, the generator learns the corpus, and the discriminator
  beats the all-"original" baseline. (The run on real text is reported in
  the README; this is its quick, deterministic cousin.)"""
  config = tiny_config(data=1)
  config.optimizer.num_warmup_steps = 30
  config.num_train_steps = 250
  config.input.batch_size = 32
  batches = functools.partial(synthetic_batch, batch=32)
  _, history, _ = run_steps(config, 250, devices=jax.devices()[:1],
                            batches=batches)

  def avg(ms, name):
    return sum(m[name][0] for m in ms) / sum(m[name][1] for m in ms)
  first, last = history[:20], history[-50:]
  assert avg(last, "loss") < 0.75 * avg(first, "loss")
  assert avg(last, "masked_lm_accuracy") > 2 * avg(first, "masked_lm_accuracy")
  # Always answering "original" scores 1 - (fraction replaced).
  replaced = (sum(m["disc_recall"][1] for m in last)
              / sum(m["disc_accuracy"][1] for m in last))
  baseline = 1 - replaced
  accuracy = avg(last, "disc_accuracy")
  # It fixes a clear share of the baseline's errors, and what it flags as
  # replaced mostly is (accuracy > baseline exactly when precision > 0.5).
  assert accuracy > baseline + 0.05 * replaced, (accuracy, baseline)
  assert avg(last, "disc_precision") > 0.75
  assert avg(last, "disc_recall") > 0.05


@pytest.mark.parametrize("mesh,flat", [(dict(data=8), True),
                                       (dict(data=1, fsdp=8), False)])
def test_norms_concatenate_the_leaves_only_when_params_are_replicated(
    mesh, flat):
  # One concatenation of all leaves is one kernel for the norms; of sharded
  # leaves it would gather every param and gradient onto each device.
  config = tiny_config(**mesh)
  mesh, rules = train.mesh_and_rules(config)
  with sharding.use(mesh, rules):
    built = train.build(config, SPEC, mesh, rules, jax.random.key(0))
    text = built.train_step.lower(
        built.state, sharding.global_batch(synthetic_batch(0), mesh),
        jax.random.key(1)).as_text()
  size = sum(x.size for x in jax.tree.leaves(built.state.params))
  assert (f"tensor<{size}xf32>" in text) == flat


def test_bfloat16_compute_tracks_the_float32_loss():
  """The accelerator default (bfloat16 compute, float32 params and
  optimizer state) follows the float32 run's loss on the same batches."""
  losses = {}
  for dtype in ("float32", "bfloat16"):
    config = tiny_config(data=1)
    config.model.dtype = dtype
    # Batches of 32: with 8, the two runs' window means differed by 0 to 6%
    # depending on the PRNG keys alone (a few steps' fakes); with 32, < 3%.
    config.input.batch_size = 32
    _, history, _ = run_steps(config, 30, devices=jax.devices()[:1],
                              batches=lambda i: synthetic_batch(i, batch=32))
    losses[dtype] = np.array([float(m["loss"][0]) for m in history])
  f32, bf16 = losses["float32"], losses["bfloat16"]
  assert bf16[-5:].mean() < bf16[:5].mean() * 0.9  # It trains.
  # Step by step the sampled fakes differ (the generator's logits are
  # rounded), so compare the loss over windows of ten steps.
  np.testing.assert_allclose(bf16.reshape(3, 10).mean(1),
                             f32.reshape(3, 10).mean(1), rtol=0.05)


def test_auto_dtype_is_bfloat16_on_accelerators_only(monkeypatch):
  assert train.compute_dtype("auto") == jnp.float32  # This CPU.
  for backend, want in (("gpu", jnp.bfloat16), ("tpu", jnp.bfloat16),
                        ("cpu", jnp.float32)):
    monkeypatch.setattr(jax, "default_backend", lambda b=backend: b)
    assert train.compute_dtype("auto") == want
  assert train.compute_dtype("float32") == jnp.float32
  assert testing.load_config("small").model.dtype == "auto"
