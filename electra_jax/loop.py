"""The pretraining loop: data, steps, logging, evaluation and checkpoints.

`train_and_evaluate(config, workdir)` is what `python -m electra_jax.main`
runs. It is built from short helpers; the pure step functions live in
`train.py` and the resume order in `checkpointing.py`.
"""

import functools
import json
import os
import signal
import threading
import time
from typing import Any

from absl import logging
from etils import epath
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np

from electra_jax import checkpointing
from electra_jax import diagnostics
from electra_jax import errors
from electra_jax import flops as flops_lib
from electra_jax import health
from electra_jax import objective
from electra_jax import reporting
from electra_jax import runtime
from electra_jax import sharding
from electra_jax import train as train_lib
from electra_jax.data import frequencies
from electra_jax.data import input_pipeline
from electra_jax.data import spec as data_spec


def prepare_data(config: ml_collections.ConfigDict
                 ) -> tuple[str, data_spec.DataSpec]:
  """The directory of preprocessed data to train on, and its `DataSpec`.

  `config.input.data_dir` if set (it must be complete). Otherwise the
  built-in default corpus (see `data/default_corpus.py`), built once under
  `config.input.default_data_cache` (empty: `$XDG_CACHE_HOME/electra_jax`,
  else `~/.cache/electra_jax`) and reused by every later run. Raises if the
  config does not fit the data: nothing is guessed.
  """
  inp = config.input
  data_dir = inp.data_dir
  if not data_dir:
    # Imported here: only runs without a data_dir need it and its imports.
    # pylint: disable-next=g-import-not-at-top
    from electra_jax.data import default_corpus
    cache = inp.default_data_cache or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
        "electra_jax")
    start = time.time()
    data_dir = default_corpus.build_default_dataset(
        cache, max_seq_length=inp.max_seq_length,
        vocab_size=inp.default_vocab_size, max_bytes=inp.default_corpus_bytes,
        seed=0)
    logging.info("Default corpus data: %s (%.1f s).", data_dir,
                 time.time() - start)
  spec = input_pipeline.load_data_spec(data_dir)
  vocab = config.model.vocab_size
  if vocab and vocab != spec.vocab_size:
    raise errors.UserError(
        f"config.model.vocab_size={vocab} but the tokenizer of {data_dir} "
        f"has {spec.vocab_size} ids; pass --config.model.vocab_size="
        f"{spec.vocab_size} (or 0 to take the tokenizer's).")
  if inp.max_seq_length != spec.max_seq_length:
    raise errors.UserError(
        f"config.input.max_seq_length={inp.max_seq_length} but {data_dir} "
        f"was packed to {spec.max_seq_length} tokens; pass "
        f"--config.input.max_seq_length={spec.max_seq_length} or "
        "preprocess again with --max_seq_length.")
  return data_dir, spec


def run_record(config: ml_collections.ConfigDict,
               spec: data_spec.DataSpec) -> dict[str, Any]:
  """The run's config as saved in `config.json` and in every checkpoint:
  the config with the data's vocabulary size and special ids written in,
  so that a run's record alone describes its model (export, fine-tuning
  and resume read it)."""
  record = json.loads(config.to_json())
  record["model"]["vocab_size"] = spec.vocab_size
  record["input"].update(pad_id=spec.pad_id, cls_id=spec.cls_id,
                         sep_id=spec.sep_id, mask_id=spec.mask_id)
  return record


def _host_metrics(history: list[Any]) -> dict[str, float]:
  """Sums (sum, count) pairs over steps on the host and divides."""
  history = jax.device_get(history)
  total = functools.reduce(
      lambda a, b: jax.tree.map(lambda x, y: x + y, a, b), history)
  return objective.reduce_metrics(total)


def evaluate(p_eval, params, config, data_dir, mesh, rng,
             frequencies) -> dict[str, float]:
  """Held-out metrics (same batches and masks every time), with the AUCs:
  `disc_auc` on the generator's fakes, `disc_auc_unigram` on fakes drawn
  by frequency (see `diagnostics.unigram_fakes`). `frequencies` is
  `unigram_frequencies(...)`."""
  batches = input_pipeline.make_eval_iterator(
      data_dir, batch_size=config.input.batch_size,
      process_index=jax.process_index(), process_count=jax.process_count(),
      max_seq_length=config.input.max_seq_length,
      num_batches=config.eval.num_batches)
  history, scores = [], []
  for i, local in enumerate(batches):
    batch = sharding.global_batch(local, mesh)
    metrics, *disc = p_eval(params, batch, jax.random.fold_in(rng, i),
                            *frequencies)
    history.append(metrics)
    if disc[0] is not None:
      scores.append(multihost_utils.process_allgather(
          (*disc, batch["input_mask"]), tiled=True))
  out = _host_metrics(history)
  if scores:
    probs, labels, uni_probs, uni_labels, mask = (
        np.concatenate(x) for x in zip(*scores))
    out["disc_auc"] = diagnostics.disc_auc(probs, labels, mask)
    out["disc_auc_unigram"] = diagnostics.disc_auc(uni_probs, uni_labels, mask)
  return out


def unigram_frequencies(data_dir, spec) -> tuple[np.ndarray, np.ndarray]:
  """The two word-frequency models of `evaluate`, as [vocab] log-probs.

  The held-out split's, to draw `disc_auc_unigram`'s fakes from tokens of
  that text; and the training split's, add-one smoothed (every ordinary id
  gets a finite cost), as the baseline of `masked_lm_context_gain`: what a
  generator that knew only word frequencies could have learned.
  """
  exclude = (spec.pad_id, *spec.special_ids)
  fakes = frequencies.unigram_log_probs(
      data_dir, spec.vocab_size, spec.max_seq_length, exclude=exclude)
  baseline = frequencies.unigram_log_probs(
      data_dir, spec.vocab_size, spec.max_seq_length, split="train",
      exclude=exclude, add=1.0)
  return fakes, baseline


class PreemptionWatch:
  """Turns SIGTERM/SIGINT into "save at the next step boundary and stop".

  With several processes, all agree on the step: a signal seen by any
  process (or orbax's preemption notice) stops every process at the same
  step, which costs one tiny all-gather per step only in multi-process runs.
  """

  def __init__(self):
    self._flag = threading.Event()
    self._previous = {}
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._handle)

  def _handle(self, signum, frame):
    del frame
    logging.warning("Received %s: saving a checkpoint at the next step, "
                    "then stopping.", signal.Signals(signum).name)
    self._flag.set()

  def should_stop(self, manager, step: int) -> bool:
    stop = self._flag.is_set()
    if jax.process_count() > 1:
      stop = bool(np.any(multihost_utils.process_allgather(np.array(stop))))
      stop = stop or manager.reached_preemption(step)
    return stop

  def close(self):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def _due(step: int, every: int) -> bool:
  return every > 0 and step % every == 0


class SaveTimer:
  """Saves every N steps, and every M minutes (decided on process 0)."""

  def __init__(self, config: ml_collections.ConfigDict):
    self._every_steps = config.checkpoint.every_steps
    self._seconds = config.checkpoint.every_minutes * 60
    self._last = time.monotonic()

  def due(self, step: int) -> bool:
    due = _due(step, self._every_steps)
    if self._seconds > 0:
      late = time.monotonic() - self._last >= self._seconds
      if jax.process_count() > 1:
        late = bool(multihost_utils.broadcast_one_to_all(np.array(late)))
      due = due or late
    return due

  def saved(self) -> None:
    self._last = time.monotonic()


class ProfileWindow:
  """A `jax.profiler` trace of a few steps into `workdir/profile` (view it
  with TensorBoard's profile plugin or Perfetto); process 0 only."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    self._first = config.profile_start_step
    self._last = self._first + config.profile_num_steps - 1
    self._dir = str(epath.Path(workdir) / "profile")
    self._on = False

  def before(self, step: int) -> None:
    if self._first > 0 and step == self._first and jax.process_index() == 0:
      jax.profiler.start_trace(self._dir)
      self._on = True

  def after(self, step: int, outputs: Any) -> None:
    if self._on and step >= self._last:
      jax.block_until_ready(outputs)
      jax.profiler.stop_trace()
      self._on = False
      logging.info("Wrote a profile of steps %d-%d to %s.", self._first,
                   step, self._dir)

  def close(self) -> None:
    """Ends a trace that the run's end (or a preemption) cut short."""
    if self._on:
      jax.profiler.stop_trace()
      self._on = False


def _check_finite(step: int, loss: float) -> None:
  if not np.isfinite(loss):
    raise FloatingPointError(
        f"Non-finite loss {loss} at step {step}. Stopping; the last "
        "checkpoint (if any) holds the last good state. Lower "
        "optimizer.learning_rate or check the data.")


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> train_lib.TrainState:
  """Pretrains ELECTRA as `config` says; logs, events and checkpoints go to
  `workdir`. Resumes from `workdir` if it holds a checkpoint."""
  data_dir, spec = prepare_data(config)
  record = run_record(config, spec)
  mesh, rules = train_lib.mesh_and_rules(config)
  sharding.check_batch_size(config.input.batch_size, mesh)
  logging.info("Mesh %s over %d devices (%s).", dict(mesh.shape),
               jax.device_count(), jax.devices()[0].device_kind)
  init_rng, step_rng, eval_rng = jax.random.split(
      jax.random.key(config.seed), 3)
  c = config.checkpoint
  manager = checkpointing.make_manager(
      workdir, max_to_keep=c.max_to_keep, keep_every_steps=c.keep_every_steps,
      async_save=c.async_save)

  with sharding.use(mesh, rules):
    built = train_lib.build(config, spec, mesh, rules, init_rng)
  # Outside the mesh context: importing transformers weights traces a model
  # on plain host arrays.
  state, input_state = checkpointing.restore_or_initialize(
      manager, record, built.state, built.state_shardings)
  runtime.release_host_memory()
  with sharding.use(mesh, rules):
    # Written only after the compatibility check: a mismatch changes nothing.
    reporting.write_config(record, workdir)
    input_pipeline.save_tokenizer(data_dir, workdir)
    reporting.log_parameter_overview(state.params)
    writer = reporting.MetricWriter(workdir)
    writer.write_hparams(reporting.flat_config(record))
    if config.input.read_threads < 1:
      raise errors.UserError(f"input.read_threads={config.input.read_threads}"
                             "; set --config.input.read_threads to 1 or more.")
    train_iter = input_pipeline.make_train_iterator(
        data_dir, batch_size=config.input.batch_size, seed=config.seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        max_seq_length=config.input.max_seq_length,
        read_threads=config.input.read_threads)
    if input_state is not None:
      train_iter.set_state(input_state)
    try:
      state = _run(config, spec, record, workdir, data_dir, mesh, built,
                   state, train_iter, manager, writer, step_rng, eval_rng)
    finally:
      manager.wait_until_finished()
      manager.close()
      train_iter.close()
      writer.close()
  return state


def _run(config, spec, record, workdir, data_dir, mesh, built, state,
         train_iter, manager, writer, step_rng, eval_rng):
  """The step loop; returns the final (or preempted) state."""
  total = config.num_train_steps
  start = int(state.step)
  if start >= total:
    logging.info("Already at step %d of %d; nothing to do.", start, total)
    return state
  batch = sharding.global_batch(next(train_iter), mesh)
  t0 = time.perf_counter()
  compiled = built.train_step.lower(state, batch, step_rng).compile()
  logging.info("Compiled the train step in %.1fs.", time.perf_counter() - t0)
  runtime.release_host_memory()
  _log_memory(compiled)
  progress = reporting.ProgressReport(
      total,
      tokens_per_step=config.input.batch_size * config.input.max_seq_length,
      flops_per_step=(built.flops_per_sequence["total"]
                      * config.input.batch_size),
      peak_flops_per_device=flops_lib.peak_flops())
  progress.start(start)
  unigram = unigram_frequencies(data_dir, spec)
  timer, watch = SaveTimer(config), PreemptionWatch()
  profile = ProfileWindow(config, workdir)
  history = []
  try:
    for step in range(start + 1, total + 1):
      profile.before(step)
      state, metrics = compiled(state, batch, step_rng)
      profile.after(step, metrics)
      history.append(metrics)
      last = step == total
      input_state = train_iter.get_state()  # Where step + 1 reads from.
      if not last:  # Fetch the next batch while the step runs.
        batch = sharding.global_batch(next(train_iter), mesh)
      if _due(step, config.log_every_steps) or last:
        _log_train(step, total, history, progress, writer)
        history = []
      stop = watch.should_stop(manager, step)
      if timer.due(step) or last or stop:
        loss_sum, count = jax.device_get(metrics["loss"])
        _check_finite(step, loss_sum / count)  # Never save a broken state.
        checkpointing.save(manager, state, input_state, record, force=True)
        timer.saved()
      if _due(step, config.eval.every_steps) or last:
        scalars = evaluate(built.eval_step, state.params, config, data_dir,
                           mesh, eval_rng, unigram)
        _check_health(step, scalars, config)
        writer.write_scalars(step, {f"eval/{k}": v
                                    for k, v in scalars.items()})
        logging.info("eval step %d: %s", step, ", ".join(
            f"{k} {v:.4f}" for k, v in sorted(scalars.items())))
        progress.start(step)  # Eval time is not step time.
        if last and jax.process_index() == 0:
          logging.info(health.summary(scalars))
      if stop:
        logging.warning("Stopped at step %d after saving a checkpoint; "
                        "rerun the same command to resume.", step)
        break
  finally:
    watch.close()
    profile.close()
  return state


def _check_health(step: int, scalars: dict[str, float],
                  config: ml_collections.ConfigDict) -> None:
  """Adds `disc_collapsed` (0/1) to eval `scalars`; warns when it is 1."""
  if "disc_auc" not in scalars:
    return
  warning = health.collapse_warning(
      scalars, step, num_warmup_steps=config.optimizer.num_warmup_steps,
      min_auc=config.eval.collapse_max_auc,
      min_logit_std=config.eval.collapse_min_logit_std)
  scalars["disc_collapsed"] = float(warning is not None)
  if warning and jax.process_index() == 0:
    logging.warning("step %d: %s", step, warning)


def _log_train(step, total, history, progress, writer) -> None:
  scalars = {f"train/{k}": v for k, v in _host_metrics(history).items()}
  _check_finite(step, scalars["train/loss"])
  scalars.update(progress.report(step))
  writer.write_scalars(step, scalars)
  if jax.process_index() == 0:
    logging.info(reporting.format_line(step, total, scalars))


def _log_memory(compiled) -> None:
  try:
    mem = compiled.memory_analysis()
  except (NotImplementedError, RuntimeError):  # Not on every backend.
    return
  if mem is not None:
    logging.info(
        "Train step memory: arguments %.1f MiB, outputs %.1f MiB, temps "
        "%.1f MiB.", mem.argument_size_in_bytes / 2**20,
        mem.output_size_in_bytes / 2**20, mem.temp_size_in_bytes / 2**20)
