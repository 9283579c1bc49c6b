"""Train state and the sharded ELECTRA train/eval steps.

Per step (all on device, inside one jitted function):
  mask (objective.mask_tokens) -> generator logits at masked positions ->
  sample (exact, inverse CDF) -> discriminator on the corrupted input ->
  weighted loss (objective.electra_loss) -> grads (summed over
  micro-batches) -> optax update.

`train_step` and `eval_step` are pure; `build` jits them once over a mesh.
This is the one place a run config becomes typed module configs
(`ModelConfig`, `StepConfig`, `OptimizerConfig`, with the data's facts from
a `DataSpec`); the modules below never see a `ConfigDict`. The loop that
drives the steps (data, logging, eval, checkpoints) is `loop.py`.
"""

import dataclasses
import functools
from typing import Any, NamedTuple

import flax.linen as nn
from flax import struct
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import ml_collections
import optax

from electra_jax import diagnostics
from electra_jax import flops
from electra_jax import model as model_lib
from electra_jax import objective
from electra_jax import optimizer
from electra_jax import sharding
from electra_jax.data import spec as data_spec

Batch = dict[str, jax.Array]  # input_ids, input_mask, segment_ids: [B, L].


@dataclasses.dataclass(frozen=True)
class StepConfig:
  """The static (hashable) settings the step needs, read once from config."""

  max_seq_length: int
  max_predictions: int
  mask_prob: float
  mask_token_prob: float
  sample_with_replacement: bool
  mask_id: int
  special_ids: tuple[int, ...]
  vocab_size: int
  temperature: float
  gen_weight: float
  disc_weight: float
  electra_objective: bool
  uniform_generator: bool
  disallow_correct: bool
  grad_accum_steps: int

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict,
                  spec: data_spec.DataSpec) -> "StepConfig":
    obj = config.objective
    return cls(
        max_seq_length=spec.max_seq_length,
        max_predictions=objective.max_predictions_per_seq(
            obj.mask_prob, spec.max_seq_length),
        mask_prob=obj.mask_prob,
        mask_token_prob=obj.mask_token_prob,
        sample_with_replacement=obj.sample_with_replacement,
        mask_id=spec.mask_id,
        special_ids=spec.special_ids,
        vocab_size=spec.vocab_size,
        temperature=obj.temperature,
        gen_weight=obj.gen_weight,
        disc_weight=obj.disc_weight,
        electra_objective=obj.electra_objective,
        uniform_generator=obj.uniform_generator,
        disallow_correct=obj.disallow_correct,
        grad_accum_steps=config.optimizer.grad_accum_steps,
    )


def compute_dtype(name: str) -> jnp.dtype:
  """The compute dtype `model.dtype` names. "auto" is bfloat16 on GPU and
  TPU (params, optimizer state, softmax, losses and sampling stay float32)
  and float32 on CPU, where XLA's bfloat16 products are slower."""
  if name == "auto":
    accelerator = jax.default_backend() in ("gpu", "tpu")
    return jnp.dtype(jnp.bfloat16 if accelerator else jnp.float32)
  return jnp.dtype(name)


def discriminator_config(config: ml_collections.ConfigDict,
                         vocab_size: int) -> model_lib.ModelConfig:
  """The discriminator's `ModelConfig`: the run config's `model` section
  with the tokenizer's vocabulary size."""
  m = config.model
  return model_lib.ModelConfig(
      vocab_size=vocab_size,
      embedding_size=m.embedding_size or m.hidden_size,
      hidden_size=m.hidden_size,
      num_hidden_layers=m.num_hidden_layers,
      num_attention_heads=m.num_attention_heads,
      intermediate_size=m.intermediate_size,
      hidden_dropout_prob=m.hidden_dropout_prob,
      attention_probs_dropout_prob=m.attention_probs_dropout_prob,
      max_position_embeddings=m.max_position_embeddings,
      type_vocab_size=m.type_vocab_size,
      initializer_range=m.initializer_range,
      position_embedding_init=m.position_embedding_init,
      layer_norm_eps=m.layer_norm_eps,
      dtype=compute_dtype(m.dtype),
      param_dtype=jnp.dtype(m.param_dtype),
      attention_impl=m.attention_impl,
      scan_layers=m.scan_layers,
      remat_policy=m.remat_policy,
  )


def generator_config(config: ml_collections.ConfigDict,
                     vocab_size: int) -> model_lib.ModelConfig:
  """The generator's `ModelConfig`, as electra's `get_generator_config`.

  Width and depth are fractions of the discriminator's; heads are
  `max(1, hidden // 64)` and the FFN is `4 * hidden`. The MLM-only baseline
  (`electra_objective=False`) trains a full-size generator, as the reference.
  With untied embeddings the generator's embeddings have its own width.
  """
  disc = discriminator_config(config, vocab_size)
  if not config.objective.electra_objective:
    return disc
  g = config.generator
  hidden = int(round(disc.hidden_size * g.generator_hidden_size))
  layers = int(round(disc.num_hidden_layers * g.generator_layers))
  if hidden < 1 or layers < 1:
    raise ValueError(
        f"generator_hidden_size={g.generator_hidden_size} and "
        f"generator_layers={g.generator_layers} give a generator of width "
        f"{hidden} and depth {layers}; both must be at least 1.")
  return dataclasses.replace(
      disc, hidden_size=hidden, num_hidden_layers=layers,
      embedding_size=(hidden if g.untied_generator_embeddings
                      else disc.embedding_size),
      num_attention_heads=max(1, hidden // 64), intermediate_size=4 * hidden)


def pretraining_model(config: ml_collections.ConfigDict,
                      vocab_size: int) -> model_lib.ElectraPretrainingModel:
  """The `ElectraPretrainingModel` a run config describes."""
  electra = config.objective.electra_objective
  uniform = config.objective.uniform_generator
  if uniform and not electra:
    raise ValueError("uniform_generator needs electra_objective=True: the "
                     "MLM-only baseline trains the generator itself.")
  return model_lib.ElectraPretrainingModel(
      disc_cfg=discriminator_config(config, vocab_size) if electra else None,
      gen_cfg=None if uniform else generator_config(config, vocab_size),
      untied_generator_embeddings=(
          electra and config.generator.untied_generator_embeddings),
  )


@struct.dataclass
class TrainState:
  step: jax.Array
  params: Any  # {"embeddings", "generator", "discriminator"}.
  opt_state: Any
  tx: optax.GradientTransformation = struct.field(pytree_node=False)


def init_params(rng: jax.Array, *, model: nn.Module, sc: StepConfig) -> Any:
  """Boxed (logically partitioned) params of the pretraining model."""
  ids = jnp.zeros((1, sc.max_seq_length), jnp.int32)
  positions = jnp.zeros((1, sc.max_predictions), jnp.int32)
  return model.init(rng, ids, ids, ids, positions)["params"]


def create_train_state(rng: jax.Array, *, model: nn.Module, sc: StepConfig,
                       tx: optax.GradientTransformation) -> TrainState:
  params = nn.unbox(init_params(rng, model=model, sc=sc))
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=tx.init(params), tx=tx)


def shard_state(abstract: TrainState, param_shardings: Any,
                mesh) -> TrainState:
  """Shardings of a `TrainState`'s leaves: the params as given, the
  optimizer state like the params it tracks, everything else replicated."""
  replicated = NamedSharding(mesh, P())
  opt_sh = optax.tree_map_params(
      abstract.tx, lambda _, s: s, abstract.opt_state, param_shardings,
      transform_non_params=lambda _: replicated)
  return TrainState(step=replicated, params=param_shardings,
                    opt_state=opt_sh, tx=abstract.tx)


def state_shardings(rng: jax.Array, *, model: nn.Module, sc: StepConfig,
                    tx: optax.GradientTransformation, mesh, rules) -> Any:
  """Shardings of `TrainState` leaves, from shapes alone (no allocation)."""
  boxed = jax.eval_shape(functools.partial(init_params, model=model, sc=sc),
                         rng)
  abstract = jax.eval_shape(
      functools.partial(create_train_state, model=model, sc=sc, tx=tx), rng)
  return shard_state(abstract, sharding.tree_shardings(boxed, mesh, rules),
                     mesh)


def _sample_per_example(keys, logits, disallow, temperature):
  """Fake-token samples with one key per example, so that the draw of each
  sequence does not depend on how the batch is split into micro-batches."""
  def one(key, lg, dis):
    dis = None if dis is None else dis[None]
    return objective.sample_fake_tokens(key, lg[None], temperature,
                                        disallow=dis)[0]
  return jax.vmap(one)(keys, logits, disallow)


def forward(params, batch: Batch, masked: objective.MaskedInputs,
             sample_keys: jax.Array, dropout_rng: jax.Array, *,
             model: nn.Module, sc: StepConfig, deterministic: bool):
  """Runs generator, sampling and discriminator on one (micro-)batch.

  Returns:
    (metrics, disc_probs_or_None, labels_or_None, generator_logits);
    metrics are (sum, count) pairs, so micro-batches and hosts combine by
    addition.
  """
  variables = {"params": params}
  gen_rng, disc_rng = jax.random.split(dropout_rng)
  input_mask, segment_ids = batch["input_mask"], batch["segment_ids"]
  if sc.uniform_generator:  # [B, N, V]: uniform proposal, no generator.
    logits = jnp.zeros(masked.positions.shape + (sc.vocab_size,),
                       jnp.float32)
  else:
    logits = model.apply(
        variables, masked.input_ids, input_mask, segment_ids,
        masked.positions, deterministic, rngs={"dropout": gen_rng},
        method=model_lib.ElectraPretrainingModel.generator_logits)
  if not sc.electra_objective:
    _, metrics = objective.mlm_loss_and_metrics(
        logits, masked.targets, masked.weights)
    return metrics, None, None, logits
  disallow = masked.targets if sc.disallow_correct else None
  sampled = _sample_per_example(sample_keys, logits, disallow,
                                sc.temperature)
  _, metrics = objective.mlm_loss_and_metrics(
      logits, masked.targets, masked.weights, sampled)
  fake_ids, labels = objective.replace_tokens(
      batch["input_ids"], masked.positions, sampled, masked.weights)
  disc_logits = model.apply(
      variables, fake_ids, input_mask, segment_ids, deterministic,
      rngs={"dropout": disc_rng},
      method=model_lib.ElectraPretrainingModel.discriminator_logits)
  _, disc_metrics = objective.disc_loss_and_metrics(disc_logits, labels,
                                                    input_mask)
  disc_metrics["disc_logit_std"] = diagnostics.disc_logit_spread(
      disc_logits, input_mask)
  return ({**metrics, **disc_metrics}, jax.nn.sigmoid(disc_logits), labels,
          logits)


def _loss(metrics, counts, sc: StepConfig) -> jax.Array:
  return objective.electra_loss(metrics, gen_weight=sc.gen_weight,
                                disc_weight=sc.disc_weight, counts=counts)


def mask_batch(rng, batch: Batch, sc: StepConfig) -> objective.MaskedInputs:
  return objective.mask_tokens(
      rng, batch["input_ids"], batch["input_mask"], mask_prob=sc.mask_prob,
      max_predictions=sc.max_predictions, mask_id=sc.mask_id,
      special_ids=sc.special_ids, mask_token_prob=sc.mask_token_prob,
      with_replacement=sc.sample_with_replacement)


def _split_micro(tree, k: int):
  return jax.tree.map(lambda x: x.reshape((k, x.shape[0] // k) + x.shape[1:]),
                      tree)


def train_step(state: TrainState, batch: Batch, rng: jax.Array, *,
               model: nn.Module, sc: StepConfig, schedule: optax.Schedule,
               flat_norm: bool = False) -> tuple[TrainState, Any]:
  """One optimizer step on a global batch. Pure; jit it once.

  `flat_norm` computes the logged norms over the concatenated leaves
  (`optimizer.global_norm`); set it when the params are not sharded. With
  the same setting as the optimizer's, XLA computes the gradient norm once
  for clipping and for the metric.

  The step's randomness is `fold_in(rng, state.step)`, split into named
  keys for masking, sampling and dropout. Masking runs on the whole batch
  before the micro-batch split, and sampling uses one key per example, so
  `grad_accum_steps` changes memory, not results (up to dropout).
  """
  rng = jax.random.fold_in(rng, state.step)
  mask_rng, sample_rng, dropout_rng = jax.random.split(rng, 3)
  masked = mask_batch(mask_rng, batch, sc)
  counts = (jnp.sum(masked.weights),
            jnp.sum(batch["input_mask"].astype(jnp.float32)))
  sample_keys = jax.random.split(sample_rng, batch["input_ids"].shape[0])

  def loss_fn(params, micro, dropout_key):
    mb, mm, keys = micro
    metrics, *_ = forward(params, mb, mm, keys, dropout_key, model=model,
                           sc=sc, deterministic=False)
    return _loss(metrics, counts, sc), metrics

  grad_fn = jax.grad(loss_fn, has_aux=True)
  k = sc.grad_accum_steps
  if k == 1:
    grads, metrics = grad_fn(state.params, (batch, masked, sample_keys),
                             dropout_rng)
  else:
    micro = _split_micro((batch, masked, sample_keys), k)
    keys = jax.random.split(dropout_rng, k)

    def accumulate(carry, xs):
      g, m = grad_fn(state.params, xs[0], xs[1])
      return jax.tree.map(jnp.add, carry, (g, m)), None

    zeros = jax.eval_shape(grad_fn, state.params,
                           jax.tree.map(lambda x: x[0], micro), keys[0])
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), zeros)
    (grads, metrics), _ = jax.lax.scan(accumulate, zeros, (micro, keys))

  updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  one = jnp.ones((), jnp.float32)
  metrics = {
      **metrics,
      "loss": (_loss(metrics, counts, sc), one),
      "learning_rate": (schedule(state.step).astype(jnp.float32), one),
      "grad_norm": (optimizer.global_norm(grads, flat=flat_norm), one),
      "param_norm": (optimizer.global_norm(params, flat=flat_norm), one),
  }
  new_state = state.replace(step=state.step + 1, params=params,
                            opt_state=opt_state)
  return new_state, metrics


def eval_step(params, batch: Batch, rng: jax.Array,
              unigram_log_probs: jax.Array, baseline_log_probs: jax.Array,
              *, model: nn.Module, sc: StepConfig):
  """Metrics on one held-out batch without dropout, plus the
  discriminator's probabilities and labels for the host-side AUCs: on the
  generator's fakes and on unigram fakes (None for MLM-only runs)."""
  mask_rng, sample_rng, unigram_rng = jax.random.split(rng, 3)
  masked = mask_batch(mask_rng, batch, sc)
  keys = jax.random.split(sample_rng, batch["input_ids"].shape[0])
  metrics, probs, labels, gen_logits = forward(
      params, batch, masked, keys, rng, model=model, sc=sc,
      deterministic=True)
  if not sc.uniform_generator:
    at_mask = objective.gather_positions(
        masked.input_ids, masked.positions) == sc.mask_id
    metrics["masked_lm_context_gain"] = diagnostics.context_gain(
        gen_logits, masked.targets, masked.weights, at_mask,
        baseline_log_probs)
  counts = (jnp.sum(masked.weights),
            jnp.sum(batch["input_mask"].astype(jnp.float32)))
  metrics["loss"] = (_loss(metrics, counts, sc),
                     jnp.ones((), jnp.float32))
  unigram = (None, None)
  if sc.electra_objective:
    unigram = diagnostics.unigram_fakes(params, batch, masked, unigram_rng,
                             unigram_log_probs, model=model)
  return metrics, probs, labels, *unigram


def flops_per_sequence(config: ml_collections.ConfigDict,
                       vocab_size: int) -> dict[str, float]:
  """Analytic training FLOPs per sequence (see `flops.py`)."""
  model = pretraining_model(config, vocab_size)
  length = config.input.max_seq_length
  return flops.train_flops_per_sequence(
      model.gen_cfg, model.disc_cfg, length=length,
      max_predictions=objective.max_predictions_per_seq(
          config.objective.mask_prob, length))


class Built(NamedTuple):
  state: TrainState
  state_shardings: TrainState
  train_step: Any  # (state, batch, rng) -> (state, metrics); donates state.
  # (params, batch, rng, unigram_log_probs, baseline_log_probs) -> (metrics,
  # disc_probs, labels, unigram-fake disc_probs, their labels).
  eval_step: Any
  flops_per_sequence: dict[str, float]  # Analytic, for MFU.


def mesh_and_rules(config: ml_collections.ConfigDict,
                   devices=None) -> tuple[jax.sharding.Mesh, sharding.Rules]:
  """The device mesh and logical axis rules of `config.sharding`."""
  s = config.sharding
  mesh = sharding.make_mesh((s.mesh_data, s.mesh_fsdp, s.mesh_tensor),
                            devices)
  return mesh, sharding.logical_rules(s.logical_axis_rules)


def optimizer_config(
    config: ml_collections.ConfigDict) -> optimizer.OptimizerConfig:
  return optimizer.OptimizerConfig(**config.optimizer.to_dict())


def build(config: ml_collections.ConfigDict, spec: data_spec.DataSpec,
          mesh, rules, rng: jax.Array) -> Built:
  """The sharded initial state and the jitted train and eval steps.

  The one place the run config becomes module configs: `ModelConfig`s,
  `StepConfig` and `OptimizerConfig`, with the data's facts from `spec`.
  Call under `sharding.use(mesh, rules)`. The state is created sharded
  (shapes -> shardings -> jitted init), never whole on one device.

  Returns:
    A `Built` with the state, its shardings and the two jitted steps.
  """
  model = pretraining_model(config, spec.vocab_size)
  sc = StepConfig.from_config(config, spec)
  # Unsharded params (data parallel) take the one-kernel global norms.
  flat_norm = sharding.fully_replicated(sharding.tree_shardings(
      jax.eval_shape(functools.partial(init_params, model=model, sc=sc), rng),
      mesh, rules))
  tx, schedule = optimizer.create_optimizer(
      optimizer_config(config), config.num_train_steps, flat_norm=flat_norm)
  replicated = NamedSharding(mesh, P())
  batch_sh = sharding.batch_sharding(mesh)
  state_sh = state_shardings(rng, model=model, sc=sc, tx=tx, mesh=mesh,
                             rules=rules)
  state = jax.jit(
      functools.partial(create_train_state, model=model, sc=sc, tx=tx),
      out_shardings=state_sh)(rng)
  p_train = jax.jit(
      functools.partial(train_step, model=model, sc=sc, schedule=schedule,
                        flat_norm=flat_norm),
      in_shardings=(state_sh, batch_sh, replicated),
      out_shardings=(state_sh, replicated), donate_argnums=0)
  p_eval = jax.jit(
      functools.partial(eval_step, model=model, sc=sc),
      in_shardings=(state_sh.params, batch_sh, replicated, replicated,
                    replicated),
      out_shardings=(replicated, batch_sh, batch_sh, batch_sh, batch_sh))
  return Built(state, state_sh, p_train, p_eval,
               flops_per_sequence(config, spec.vocab_size))
