"""Fine-tuning: the sharded train/eval steps, epochs, trials and predict mode.

  python -m electra_jax.finetune --config=configs/finetune.py:task=sst2 \
      --workdir=runs/sst2 --config.init_from=PATH

Per trial (seed `config.seed + k`): the task model is built sharded (shapes
-> shardings -> jitted init that copies the pretrained encoder in), trained
for `num_train_epochs` with the pretraining optimizer plus layer-wise LR
decay on the reference's summed loss, evaluated after every epoch, and its
final params checkpointed. As in the reference, a trial scores its final
model: `results.json` headlines the final epoch's dev metrics (and their
mean/median/std over trials), the best epoch beside them. Predict mode
uses the final params of the trial that scored highest.
"""

import dataclasses
import functools
import json
import math
from typing import Any, Callable

from absl import logging
from etils import epath
import flax.linen as nn
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp

from electra_jax import checkpointing
from electra_jax import errors
from electra_jax import objective
from electra_jax import optimizer
from electra_jax import reporting
from electra_jax import sharding
from electra_jax import train as train_lib
from electra_jax.finetune import data as data_lib
from electra_jax.finetune import features
from electra_jax.finetune import heads
from electra_jax.finetune import lr_decay
from electra_jax.finetune import qa_head
from electra_jax.finetune import restore
from electra_jax.finetune import tasks

Batch = dict[str, jax.Array]


def task_loss(kind: str, outputs: Any, batch: Batch,
              qa: qa_head.QAConfig | None = None):
  """(sum of per-example losses, number of scored examples or tokens).

  Classification and tagging: cross-entropy (tagging over labelled tokens);
  regression: squared error; qa: `qa_head.loss` of the `qa` head, per
  window. Rows with `weight` 0 do not count.
  """
  w = batch["weight"]
  if kind == "regression":
    return jnp.sum(jnp.square(outputs - batch["label"]) * w), jnp.sum(w)
  if kind == "classification":
    logp = jax.nn.log_softmax(outputs)
    nll = -jnp.take_along_axis(logp, batch["label"][:, None], -1)[:, 0]
    return jnp.sum(nll * w), jnp.sum(w)
  if kind == "tagging":
    labels = batch["labels"]  # [B, T], -1 where not scored.
    valid = (labels >= 0) * w[:, None]
    logp = jax.nn.log_softmax(outputs)
    nll = -jnp.take_along_axis(logp, jnp.maximum(labels, 0)[..., None],
                               -1)[..., 0]
    return jnp.sum(nll * valid), jnp.sum(valid)
  return qa_head.loss(qa, outputs, batch)


LOSS_REDUCTIONS = ("sum", "mean")


def train_step(state: train_lib.TrainState, batch: Batch, rng: jax.Array, *,
               model: heads.TaskModel, schedule: optax.Schedule,
               loss_reduction: str, flat_norm: bool = False):
  """One optimizer step; dropout keys come from `fold_in(rng, step)`.

  `loss_reduction` "sum" differentiates the per-example losses (tagging:
  summed over labelled tokens) summed over the global batch, as the
  reference, so the global-norm clip acts on most steps; "mean" divides by
  the count of scored examples (tokens). The logged loss is that mean.
  `flat_norm`: the logged gradient norm over the concatenated leaves, as
  the optimizer's clipping computes it for unsharded params.
  """
  dropout_rng = jax.random.fold_in(rng, state.step)

  def loss_fn(params):
    out = model.apply({"params": params}, batch["input_ids"],
                      batch["input_mask"], batch["segment_ids"],
                      deterministic=False, rngs={"dropout": dropout_rng},
                      # QA's end logits are conditioned on the gold start.
                      start_positions=batch.get("start_positions"))
    total, count = task_loss(model.kind, out, batch, model.qa)
    if loss_reduction == "sum":
      return total, (total, count)
    return total / jnp.maximum(count, 1e-6), (total, count)

  grads, (total, count) = jax.grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
  one = jnp.ones((), jnp.float32)
  metrics = {"loss": (total, count),
             "learning_rate": (schedule(state.step).astype(jnp.float32), one),
             "grad_norm": (optimizer.global_norm(grads, flat=flat_norm), one)}
  return state.replace(step=state.step + 1,
                       params=optax.apply_updates(state.params, updates),
                       opt_state=opt_state), metrics


def eval_step(params: Any, batch: Batch, *, model: heads.TaskModel):
  """Task outputs without dropout, float32."""
  return model.apply({"params": params}, batch["input_ids"],
                     batch["input_mask"], batch["segment_ids"])


@dataclasses.dataclass
class Steps:
  """The sharded initial-state builder and the jitted steps."""

  init: Callable[..., train_lib.TrainState] | None
  train: Callable[..., Any] | None
  eval: Callable[..., jax.Array]
  param_shardings: Any
  abstract_params: Any


def _init_params(rng, *, model, length):
  ids = jnp.ones((1, length), jnp.int32)
  return model.init(rng, ids, ids, ids)["params"]


def _create_state(rng, pretrained, *, model, length, tx,
                  fresh=()) -> train_lib.TrainState:
  params = nn.unbox(_init_params(rng, model=model, length=length))
  if pretrained is not None:
    pretrained = jax.tree.map(lambda new, old: old.astype(new.dtype),
                              {k: params[k] for k in pretrained}, pretrained)
    params = heads.merge_pretrained(params, pretrained, fresh)
  return train_lib.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                              opt_state=tx.init(params), tx=tx)


def pretraining_style_optimizer(
    config: ml_collections.ConfigDict,
    num_train_steps: int) -> optimizer.OptimizerConfig:
  """The pretraining `OptimizerConfig` of a fine-tuning config.

  Warmup is a proportion of training here, as in the reference's
  fine-tuning (`warmup_steps = num_train_steps * warmup_proportion`, kept
  fractional as there); the schedule is otherwise the pretraining one.
  """
  opt = config.optimizer
  return optimizer.OptimizerConfig(
      **{k: opt[k] for k in (
          "optimizer", "learning_rate", "lr_decay_power", "schedule",
          "weight_decay_rate", "adam_b1", "adam_b2", "adam_eps",
          "bias_correction", "max_grad_norm")},
      num_warmup_steps=num_train_steps * opt.warmup_proportion,
      grad_accum_steps=1)  # The fine-tuning step does not split.


def build_steps(task: restore.Task, mesh, rules,
                num_train_steps: int | None) -> Steps:
  """Shardings from shapes alone, then the jitted init, train and eval.

  With `num_train_steps` None only the eval step is built (predict mode).
  Call under `sharding.use(mesh, rules)`.
  """
  model, length = task.model, task.config.max_seq_length
  init = functools.partial(_init_params, model=model, length=length)
  boxed = jax.eval_shape(init, jax.random.key(0))
  param_sh = sharding.tree_shardings(boxed, mesh, rules)
  abstract = jax.eval_shape(lambda r: nn.unbox(init(r)), jax.random.key(0))
  replicated = NamedSharding(mesh, P())
  batch_sh = sharding.batch_sharding(mesh)
  p_eval = jax.jit(functools.partial(eval_step, model=model),
                   in_shardings=(param_sh, batch_sh), out_shardings=batch_sh)
  if num_train_steps is None:
    return Steps(None, None, p_eval, param_sh, abstract)
  flat_norm = sharding.fully_replicated(param_sh)
  opt = task.config.optimizer
  tx, schedule = lr_decay.create_optimizer(
      pretraining_style_optimizer(task.config, num_train_steps),
      num_train_steps, abstract, task.cfg.num_hidden_layers,
      decay=opt.layerwise_lr_decay, compat=opt.layerwise_lr_decay_compat,
      flat_norm=flat_norm)
  create = functools.partial(_create_state, model=model, length=length, tx=tx,
                             fresh=task.fresh)
  state_sh = train_lib.shard_state(
      jax.eval_shape(create, jax.random.key(0), None), param_sh, mesh)
  pre_sh = None
  if task.pretrained is not None:
    heads.check_compatible(abstract, task.pretrained)
    pre_sh = {k: param_sh[k] for k in task.pretrained}
  p_init = jax.jit(create, in_shardings=(replicated, pre_sh),
                   out_shardings=state_sh)
  p_train = jax.jit(
      functools.partial(train_step, model=model, schedule=schedule,
                        flat_norm=flat_norm,
                        loss_reduction=task.config.loss_reduction),
      in_shardings=(state_sh, batch_sh, replicated),
      out_shardings=(state_sh, replicated), donate_argnums=0)
  return Steps(p_init, p_train, p_eval, param_sh, abstract)


def _place(tree: Any, shardings: Any) -> Any:
  """Host (numpy) arrays -> global arrays; works on any number of hosts."""
  def one(x, sh):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sh, lambda idx: x[idx])
  return jax.tree.map(one, tree, shardings)


def _device_batch(batch: dict[str, np.ndarray], kind: str, mesh) -> Batch:
  local = features.local_slice(
      {k: batch[k] for k in data_lib.device_keys(kind)},
      jax.process_index(), jax.process_count())
  return sharding.global_batch(local, mesh)


def run_outputs(steps: Steps, params: Any, split: data_lib.Split, kind: str,
                batch_size: int, mesh) -> Any:
  """Task outputs (an array, or QA's dict of arrays) for every row of
  `split`, gathered on every host."""
  outs = []
  for batch in features.eval_batches(split.arrays, batch_size):
    out = steps.eval(params, _device_batch(batch, kind, mesh))
    outs.append(jax.tree.map(np.asarray, multihost_utils.process_allgather(
        out, tiled=True)))
  return jax.tree.map(lambda *x: np.concatenate(x)[:split.num_rows], *outs)


def evaluate(task: restore.Task, steps: Steps, params: Any,
             split: data_lib.Split,
             mesh) -> tuple[dict[str, float], list[dict[str, Any]]]:
  """(metrics, prediction records) on a labelled split."""
  outputs = run_outputs(steps, params, split, task.spec.kind,
                        task.config.eval_batch_size, mesh)
  records = data_lib.predict(qa_head.QAConfig(**task.config.qa), task.spec,
                             task.labels, split, outputs)
  return data_lib.score(task.spec, task.labels, split, records), records


def num_train_steps(config: ml_collections.ConfigDict, num_rows: int) -> int:
  """`num_train_epochs` (may be fractional) of `batch_size` batches."""
  per_epoch = features.steps_per_epoch(num_rows, config.batch_size)
  return max(1, math.ceil(config.num_train_epochs * per_epoch))


def _host_metrics(history) -> dict[str, float]:
  total = jax.tree.map(lambda *x: sum(x), *jax.device_get(history))
  return objective.reduce_metrics(total)


def run_trial(trial: int, task: restore.Task, steps: Steps,
              train: data_lib.Split, dev: data_lib.Split, workdir: str,
              mesh) -> dict[str, Any]:
  """Trains one seed; checkpoints its final params."""
  config, kind = task.config, task.spec.kind
  main = task.spec.metrics[0]
  seed = config.seed + trial
  init_rng, dropout_rng = jax.random.split(jax.random.key(seed))
  pretrained = (None if task.pretrained is None else
                _place(task.pretrained,
                       {k: steps.param_shardings[k] for k in task.pretrained}))
  state = steps.init(init_rng, pretrained)
  if trial == 0:
    reporting.log_parameter_overview(state.params)
  trial_dir = str(epath.Path(workdir) / f"trial_{trial}")
  writer = reporting.MetricWriter(trial_dir)
  total = num_train_steps(config, train.num_rows)
  evals, history, step, epoch = [], [], 0, 0
  while step < total:
    for batch in features.train_batches(train.arrays, config.batch_size, seed,
                                        epoch):
      state, metrics = steps.train(state, _device_batch(batch, kind, mesh),
                                   dropout_rng)
      history.append(metrics)
      step += 1
      if step % config.log_every_steps == 0 or step == total:
        scalars = {f"train/{k}": v for k, v in _host_metrics(history).items()}
        history = []
        if not np.isfinite(scalars["train/loss"]):
          raise FloatingPointError(f"Non-finite loss at step {step}; lower "
                                   "optimizer.learning_rate.")
        writer.write_scalars(step, scalars)
        logging.info("trial %d step %d/%d: loss %.4f, lr %.2e", trial, step,
                     total, scalars["train/loss"],
                     scalars["train/learning_rate"])
      if step == total:
        break
    epoch += 1
    scores, _ = evaluate(task, steps, state.params, dev, mesh)
    writer.write_scalars(step, {f"eval/{k}": v for k, v in scores.items()})
    logging.info("trial %d epoch %d step %d: %s", trial, epoch, step,
                 ", ".join(f"{k} {v:.4f}" for k, v in sorted(scores.items())))
    evals.append({"epoch": epoch, "step": step, **scores})
  writer.close()
  save_params(trial_dir, step, state.params, scores)
  return data_lib.trial_results(trial, seed, main, evals)


def _manager(trial_dir: str) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      checkpointing.checkpoint_dir(trial_dir),
      options=ocp.CheckpointManagerOptions(max_to_keep=1))


def save_params(trial_dir: str, step: int, params: Any,
                scores: dict[str, float]) -> None:
  """Checkpoints a trial's params (Orbax, all processes take part)."""
  manager = _manager(trial_dir)
  manager.save(step, args=ocp.args.StandardSave(params), metrics=scores)
  manager.wait_until_finished()
  manager.close()


def restore_params(steps: Steps, trial_dir: str, step: int | None = None):
  """Params of a trial's latest (or given) checkpointed step."""
  manager = _manager(trial_dir)
  step = manager.latest_step() if step is None else step
  if step is None:
    raise errors.MissingFile(f"No checkpoint under {trial_dir}.")
  target = jax.tree.map(
      lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh),
      steps.abstract_params, steps.param_shardings)
  params = manager.restore(step, args=ocp.args.StandardRestore(target))
  manager.close()
  return params


def _mesh(config):
  mesh, rules = train_lib.mesh_and_rules(config)
  for size in (config.batch_size, config.eval_batch_size):
    sharding.check_batch_size(size, mesh)
  return mesh, rules


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict[str, Any]:
  """Fine-tunes `config.num_trials` seeds; returns (and writes) results."""
  if (epath.Path(workdir) / restore.TASK_FILE).exists():
    raise errors.UserError(f"{workdir} already holds a fine-tuning run; pass "
                           "a new --workdir (runs are not resumed).")
  if config.loss_reduction not in LOSS_REDUCTIONS:
    raise errors.UserError(
        f"loss_reduction={config.loss_reduction!r}; set "
        f"--config.loss_reduction to one of {', '.join(LOSS_REDUCTIONS)}.")
  spec = tasks.get_task(config.task)
  data = data_lib.DataConfig(**config.data)
  train_examples = data_lib.read_examples(data, spec, "train")
  dev_examples = data_lib.read_examples(data, spec, "eval")
  task = restore.resolve(config, train_examples)
  config = task.config
  train = data_lib.featurize(data, config.max_seq_length, spec, task.labels,
                             task.tokenizer, train_examples, training=True)
  dev = data_lib.featurize(data, config.max_seq_length, spec, task.labels,
                           task.tokenizer, dev_examples, training=False)
  # Written once the config and data are known good, so that a mistake
  # leaves the workdir free for the corrected command.
  reporting.write_config(json.loads(config.to_json()), workdir)
  if jax.process_index() == 0:
    restore.save_task(workdir, task)
  logging.info("%s: %d train rows, %d eval rows.", config.task,
               train.num_rows, dev.num_rows)
  if train.qa is not None and train.qa.skipped:
    logging.warning("%d training questions skipped: answer not found in "
                    "the context.", train.qa.skipped)
  total = num_train_steps(config, train.num_rows)
  mesh, rules = _mesh(config)
  with sharding.use(mesh, rules):
    steps = build_steps(task, mesh, rules, total)
    trials = [run_trial(k, task, steps, train, dev, workdir, mesh)
              for k in range(config.num_trials)]
  summary = data_lib.summarize_trials(trials)
  main = spec.metrics[0]
  results = {"task": config.task, "main_metric": main,
             # The reported score: the final model's, over trials.
             "headline": {"metric": main, "epoch": "final",
                          **summary["final"][main]},
             "num_train_steps": total, "trials": trials, "summary": summary}
  if jax.process_index() == 0:
    (epath.Path(workdir) / "results.json").write_text(
        json.dumps(results, indent=2))
    writer = reporting.MetricWriter(workdir)
    writer.write_scalars(total, {
        f"summary/{which}_{name}_{stat}": value
        for which in ("final", "best")
        for name, stats in summary[which].items()
        for stat, value in stats.items() if stat in ("mean", "median", "std")})
    writer.close()
  logging.info("Results (final epoch): %s; best epoch: %s",
               json.dumps(summary["final"]), json.dumps(summary["best"]))
  if config.data.predict_file or config.data.predict_split:
    predict(config, workdir)
  return results


def best_trial(workdir: str) -> dict[str, Any]:
  """The trial whose final model scored highest on the main metric."""
  results = json.loads((epath.Path(workdir) / "results.json").read_text())
  main = results["main_metric"]
  return max(results["trials"], key=lambda t: t["final"][main])


def predict(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Writes `workdir/predictions.jsonl` for the unlabeled predict data with
  the final params (the reference predicts with the final model) of the
  trial with the highest final score; returns its path."""
  task = restore.load_task(config, workdir)
  config, spec = task.config, task.spec
  data = data_lib.DataConfig(**config.data)
  examples = data_lib.read_examples(data, spec, "predict")
  split = data_lib.featurize(data, config.max_seq_length, spec, task.labels,
                             task.tokenizer, examples, training=False)
  trial = best_trial(workdir)
  mesh, rules = _mesh(config)
  with sharding.use(mesh, rules):
    steps = build_steps(task, mesh, rules, None)
    params = restore_params(  # The trial's one (final) checkpoint.
        steps, str(epath.Path(workdir) / f"trial_{trial['trial']}"))
    outputs = run_outputs(steps, params, split, spec.kind,
                          config.eval_batch_size, mesh)
  records = data_lib.predict(qa_head.QAConfig(**config.qa), spec,
                             task.labels, split, outputs)
  path = str(epath.Path(workdir) / "predictions.jsonl")
  if jax.process_index() == 0:
    data_lib.write_predictions(path, records)
  logging.info("Wrote %d predictions to %s.", len(records), path)
  return path


def run(config: ml_collections.ConfigDict, workdir: str) -> Any:
  """Dispatches on `config.mode`: "train" or "predict"."""
  if config.mode == "train":
    return train_and_evaluate(config, workdir)
  if config.mode == "predict":
    return predict(config, workdir)
  raise errors.UserError(f"config.mode must be train or predict, not "
                   f"{config.mode!r}.")
