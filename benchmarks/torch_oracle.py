"""A training-dynamics oracle: the electra_jax pretraining run in PyTorch.

  .venv/bin/python benchmarks/torch_oracle.py --config=configs/tiny.py \
      --workdir=/tmp/oracle_run --config.input.data_dir=DATA \
      --config.num_train_steps=2000 [--threads=N]

The flags of `python -m electra_jax.main` (locked config, `--config.a.b=v`
overrides), its data facts (`loop.prepare_data`), the same train batches in
the same order, the same eval batches and the same TensorBoard tags in
`workdir`, so both runs plot together (`python -m electra_jax.plot`). Model:
`torch_baseline.Electra` (transformers generator + discriminator sharing
embeddings); optimizer: `electra_jax.optimizer.adamw` written out in torch.

Supported: ELECTRA, MLM-only (`electra_objective=False`), `uniform_generator`,
`disallow_correct`, `untied_generator_embeddings`, all three schedules, with
or without `bias_correction`. A clear error: `optimizer="lamb"`, `init_from`,
`sample_with_replacement`.
Ignored: sharding, checkpoints/resume, profiling, `model.dtype` (float32
here), `grad_accum_steps` (full batches; in JAX the same up to dropout).

Differences from the JAX step that remain:
  * random streams: masking, sampling (Gumbel-max here, inverse CDF there;
    the same distribution) and dropout draw from torch's generator;
  * init: transformers' normal(0.02), not truncated normal (glorot uniform
    where the reference has no initializer, as in JAX); row 0 of each word
    table starts at 0 (transformers' padding_idx init);
  * masking excludes [CLS]/[SEP] but not [MASK] ids in the input (JAX also
    excludes [MASK]; pretraining data has none);
  * attention masking and GELU/LayerNorm kernels differ in float rounding.
"""

import math
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # JAX only reads data here.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags
import numpy as np
import torch
from transformers.models.electra import modeling_electra

from benchmarks import torch_baseline
from electra_jax import diagnostics
from electra_jax import loop
from electra_jax import objective
from electra_jax import optimizer
from electra_jax import reporting
from electra_jax import train as train_lib
from electra_jax.data import frequencies
from electra_jax.data import input_pipeline
from electra_jax.nn import init as init_lib

FLAGS = flags.FLAGS


def learning_rate(opt, num_train_steps: int, count: int) -> float:
  """`optimizer.learning_rate_schedule` at update count `count` (float32)."""
  step = np.float32(count)
  warm = (np.float32(1.0) if opt.num_warmup_steps == 0 else
          min(np.float32(1.0), step / np.float32(opt.num_warmup_steps)))
  if opt.schedule == "reference":
    decay = 1.0 - min(step, num_train_steps) / np.float32(num_train_steps)
    return float(np.float32(opt.learning_rate * warm
                            * np.float32(decay) ** opt.lr_decay_power))
  if opt.schedule == "warmup_cosine":
    w = opt.num_warmup_steps
    progress = np.clip((step - w) / np.float32(num_train_steps - w), 0, 1)
    return float(np.float32(opt.learning_rate * warm * 0.5
                            * (1.0 + math.cos(math.pi * progress))))
  if opt.schedule == "constant":
    return float(np.float32(opt.learning_rate * warm))
  raise ValueError(f"Unknown schedule {opt.schedule!r}.")


class ReferenceAdamW:
  """`electra_jax.optimizer.adamw` in torch: clip, Adam (bias correction
  optional), decoupled decay except on LayerNorm params and biases."""

  def __init__(self, named_params, opt, num_train_steps: int):
    named = list(named_params)
    self.params = [p for _, p in named]
    self.decay = [not ("LayerNorm" in n or "bias" in n) for n, _ in named]
    self.m = [torch.zeros_like(p) for p in self.params]
    self.v = [torch.zeros_like(p) for p in self.params]
    self.opt, self.total, self.count = opt, num_train_steps, 0

  @torch.no_grad()
  def step(self) -> tuple[float, float]:
    """One update from the params' `.grad`; returns (grad_norm, lr)."""
    o = self.opt
    grads = [torch.zeros_like(p) if p.grad is None else p.grad
             for p in self.params]  # JAX: unused leaves get zero grads.
    norm = torch.sqrt(sum(torch.sum(g.float() ** 2) for g in grads))
    scale = (1.0 if o.max_grad_norm == 0 or norm < o.max_grad_norm
             else o.max_grad_norm / norm)
    lr = learning_rate(o, self.total, self.count)
    t = np.float32(self.count + 1)  # JAX takes b**t in float32.
    c1, c2 = (float(1 - np.float32(b) ** t) for b in (o.adam_b1, o.adam_b2))
    for p, g, m, v, decay in zip(self.params, grads, self.m, self.v,
                                 self.decay):
      g = g * scale
      m.mul_(o.adam_b1).add_(g, alpha=1 - o.adam_b1)
      v.mul_(o.adam_b2).addcmul_(g, g, value=1 - o.adam_b2)
      if o.bias_correction:
        u = (m / c1) / (torch.sqrt(v / c2) + o.adam_eps)
      else:
        u = m / (torch.sqrt(v) + o.adam_eps)
      if decay and o.weight_decay_rate:
        u = u + o.weight_decay_rate * p
      p.sub_(lr * u)
    self.count += 1
    return float(norm), lr


class Oracle(torch_baseline.Electra):
  """`torch_baseline.Electra` with the config's objective variants and a
  forward that returns JAX-style (sum, count) metrics."""

  def __init__(self, config):
    super().__init__(config)
    obj = self.obj
    if obj.uniform_generator and not obj.electra_objective:
      raise ValueError("uniform_generator needs electra_objective=True.")
    if obj.electra_objective and config.generator.untied_generator_embeddings:
      hf = torch_baseline.hf_config(
          train_lib.generator_config(config, config.model.vocab_size))
      emb = modeling_electra.ElectraEmbeddings(hf)
      emb.apply(self.generator._init_weights)  # pylint: disable=protected-access
      self.generator.electra.embeddings = emb
      self.generator.generator_lm_head.weight = emb.word_embeddings.weight
    if not obj.electra_objective:
      del self.discriminator  # The generator (disc-sized) keeps embeddings.
    if obj.uniform_generator:
      del self.generator
    for m in self.modules():  # No pad-row special case, as in JAX.
      if isinstance(m, torch.nn.Embedding):
        m.padding_idx = None
    # TF's default (glorot uniform) where the reference passes no
    # initializer, as model.tf_default_init.
    towers = [getattr(self, n, None) for n in ("generator", "discriminator")]
    for tower in filter(None, towers):
      project = getattr(tower.electra, "embeddings_project", None)
      if project is not None:
        torch.nn.init.xavier_uniform_(project.weight)
    if obj.electra_objective:
      torch.nn.init.xavier_uniform_(
          self.discriminator.discriminator_predictions.dense_prediction.weight)
    if config.model.position_embedding_init == "sinusoidal":
      # The same start as electra_jax's (model.sinusoidal_init), in every
      # position table (shared, or the generator's own when untied).
      for m in self.modules():
        if isinstance(m, modeling_electra.ElectraEmbeddings):
          table = m.position_embeddings.weight
          start = init_lib.sinusoidal(config.model.initializer_range)(
              None, tuple(table.shape))
          with torch.no_grad():
            table.copy_(torch.from_numpy(np.array(start)))
    self.vocab_size = config.model.vocab_size

  def run(self, ids, input_mask, segments, n, unigram=None):
    """Returns (loss, metrics, {auc name: (disc probs, labels)}); with
    `unigram` ([V] log probs) also on unigram fakes (diagnostics.unigram_fakes).
    """
    obj = self.obj
    masked, positions, targets, weights = self.mask(ids, input_mask, n)
    if obj.uniform_generator:
      logits = torch.zeros(positions.shape + (self.vocab_size,))
    else:
      gen = self.generator
      hidden = gen.electra(masked, attention_mask=input_mask,
                           token_type_ids=segments).last_hidden_state
      hidden = hidden.gather(1, positions[..., None].expand(
          -1, -1, hidden.shape[-1]))  # [B, N, H]: head at masked slots only.
      logits = gen.generator_lm_head(gen.generator_predictions(hidden))
    logp = logits.float().log_softmax(-1)  # [B, N, V]
    nll = -logp.gather(-1, targets[..., None])[..., 0]
    count = weights.sum()
    top = logp.max(-1, keepdim=True).values  # Ties score 1/ties, as JAX.
    ties = (logp >= top).float().sum(-1)
    correct = torch.where(-nll >= top[..., 0], 1.0 / ties, 0.0)
    metrics = {"masked_lm_loss": ((nll * weights).sum(), count),
               "masked_lm_accuracy": ((correct * weights).sum(), count)}
    loss = obj.gen_weight * metrics["masked_lm_loss"][0] / (count + 1e-6)
    scores = {}
    if obj.electra_objective:
      with torch.no_grad():
        z = logits.float() / obj.temperature
        if obj.disallow_correct:
          z = z.scatter(-1, targets[..., None], -math.inf)
        u = torch.rand(z.shape)
        sampled = (z - torch.log(-torch.log(u + 1e-9) + 1e-9)).argmax(-1)
        fake = ids.clone()
        fake.scatter_(1, positions, torch.where(weights > 0, sampled, targets))
        labels = (fake != ids).float()
      metrics["sampled_masked_lm_accuracy"] = (
          ((sampled == targets).float() * weights).sum(), count)
      d_logits = self.discriminator(
          fake, attention_mask=input_mask, token_type_ids=segments).logits
      d_logits, mask = d_logits.float(), input_mask.float()
      bce = torch.nn.functional.binary_cross_entropy_with_logits(
          d_logits, labels, reduction="none")
      preds, tokens = (d_logits > 0).float(), mask.sum()
      tp = (preds * labels * mask).sum()
      metrics.update(
          disc_loss=((bce * mask).sum(), tokens),
          disc_accuracy=(((preds == labels).float() * mask).sum(), tokens),
          disc_precision=(tp, (preds * mask).sum()),
          disc_recall=(tp, (labels * mask).sum()))
      rows = mask.sum(-1).clamp(min=1)  # diagnostics.disc_logit_spread:
      mean = (d_logits * mask).sum(-1, keepdim=True) / rows[:, None]
      std = ((mask * (d_logits - mean) ** 2).sum(-1) / rows).sqrt()
      metrics["disc_logit_std"] = (std.sum(), (mask.sum(-1) > 0).sum())
      loss = loss + obj.disc_weight * metrics["disc_loss"][0] / (tokens + 1e-6)
      scores["disc_auc"] = (torch.sigmoid(d_logits), labels)
      if unigram is not None:
        with torch.no_grad():
          draws = torch.multinomial(unigram.exp(), positions.numel(), True)
          fake = ids.clone()
          fake.scatter_(1, positions, torch.where(
              weights > 0, draws.view(positions.shape), targets))
          scores["disc_auc_unigram"] = (torch.sigmoid(self.discriminator(
              fake, attention_mask=input_mask,
              token_type_ids=segments).logits.float()), (fake != ids).float())
    metrics["loss"] = (loss, 1.0)
    return loss, metrics, scores


def _tensors(batch):
  return [torch.from_numpy(batch[k]).long()
          for k in ("input_ids", "input_mask", "segment_ids")]


def _add(total, metrics):
  for k, (s, c) in metrics.items():
    a, b = total.get(k, (0.0, 0.0))
    total[k] = (a + float(torch.as_tensor(s).detach()), b + float(c))
  return total


def _reduce(total):
  return {k: s / c if c else 0.0 for k, (s, c) in total.items()}


def evaluate(model, config, data_dir, n, unigram) -> dict[str, float]:
  """Held-out metrics without dropout; the same masks every call."""
  batches = input_pipeline.make_eval_iterator(
      data_dir, batch_size=config.input.batch_size, process_index=0,
      process_count=1, max_seq_length=config.input.max_seq_length,
      num_batches=config.eval.num_batches)
  model.eval()
  total, scores = {}, {}
  with torch.random.fork_rng(devices=[]), torch.no_grad():
    torch.manual_seed(config.seed + 1)  # Leaves the training stream alone.
    for batch in batches:
      _, metrics, aucs = model.run(*_tensors(batch), n, unigram)
      _add(total, metrics)
      for name, (probs, labels) in aucs.items():
        scores.setdefault(name, []).append(
            (probs.numpy(), labels.numpy(), batch["input_mask"]))
  model.train()
  out = _reduce(total)
  for name, parts in scores.items():
    out[name] = diagnostics.disc_auc(*(np.concatenate(x) for x in zip(*parts)))
  return out


def _due(step: int, every: int) -> bool:  # As loop.py.
  return every > 0 and step % every == 0


def check_supported(config) -> None:
  # Its errors for bad settings.
  optimizer.create_optimizer(train_lib.optimizer_config(config),
                             config.num_train_steps)
  if config.optimizer.optimizer != "adamw":
    raise NotImplementedError(
        f"optimizer.optimizer={config.optimizer.optimizer!r}: the torch "
        "oracle only implements adamw.")
  if config.init_from:
    raise NotImplementedError("init_from is not supported by the oracle.")
  if config.objective.sample_with_replacement:
    raise NotImplementedError(
        "objective.sample_with_replacement is not supported by the oracle.")


def train_and_evaluate(config, workdir: str, threads: int | None = None):
  """The oracle run; returns the final eval metrics."""
  torch.set_num_threads(threads or os.cpu_count())
  data_dir, spec = loop.prepare_data(config)
  # The run's record (the config with the data's vocabulary size and
  # special ids), as the JAX run saves it: the oracle reads ids from it.
  config = ml_collections.ConfigDict(loop.run_record(config, spec))
  check_supported(config)
  torch.manual_seed(config.seed)
  model = Oracle(config).train()
  total_steps = config.num_train_steps
  opt = ReferenceAdamW(model.named_parameters(), config.optimizer,
                       total_steps)
  n = objective.max_predictions_per_seq(config.objective.mask_prob,
                                        config.input.max_seq_length)
  reporting.write_config(config.to_dict(), workdir)
  writer = reporting.MetricWriter(workdir)
  writer.write_hparams(reporting.flat_config(config.to_dict()))
  logging.info("torch %s, %d threads, %s params.", torch.__version__,
               torch.get_num_threads(),
               f"{sum(p.numel() for p in model.parameters()):,}")
  train_iter = input_pipeline.make_train_iterator(
      data_dir, batch_size=config.input.batch_size, seed=config.seed,
      process_index=0, process_count=1,
      max_seq_length=config.input.max_seq_length)
  inp = config.input
  tokens = inp.batch_size * inp.max_seq_length
  unigram = torch.from_numpy(frequencies.unigram_log_probs(
      data_dir, config.model.vocab_size, inp.max_seq_length,
      exclude=(inp.pad_id, inp.cls_id, inp.sep_id, inp.mask_id)))
  history, last_step, last_time, scalars = {}, 0, time.perf_counter(), {}
  try:
    for step in range(1, total_steps + 1):
      for p in model.parameters():
        p.grad = None
      loss, metrics, _ = model.run(*_tensors(next(train_iter)), n)
      loss.backward()
      grad_norm, lr = opt.step()
      metrics.update(learning_rate=(lr, 1.0), grad_norm=(grad_norm, 1.0))
      with torch.no_grad():
        metrics["param_norm"] = (float(torch.sqrt(sum(
            (p.float() ** 2).sum() for p in model.parameters()))), 1.0)
      _add(history, metrics)
      last = step == total_steps
      if _due(step, config.log_every_steps) or last:
        train = {f"train/{k}": v for k, v in _reduce(history).items()}
        if not np.isfinite(train["train/loss"]):
          raise FloatingPointError(f"Non-finite loss at step {step}.")
        now = time.perf_counter()
        rate = (step - last_step) / max(now - last_time, 1e-9)
        train.update({"perf/steps_per_sec": rate,
                      "perf/step_time_seconds": 1 / rate,
                      "perf/tokens_per_sec_per_device": rate * tokens,
                      "perf/eta_seconds": (total_steps - step) / rate})
        writer.write_scalars(step, train)
        logging.info(reporting.format_line(step, total_steps, train))
        history, last_step, last_time = {}, step, now
      if _due(step, config.eval.every_steps) or last:
        scalars = evaluate(model, config, data_dir, n, unigram)
        writer.write_scalars(step, {f"eval/{k}": v
                                    for k, v in scalars.items()})
        logging.info("eval step %d: %s", step, ", ".join(
            f"{k} {v:.4f}" for k, v in sorted(scalars.items())))
        last_time = time.perf_counter()  # Eval time is not step time.
  finally:
    train_iter.close()
    writer.close()
  return scalars


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}.")
  reporting.quiet_library_logs()
  train_and_evaluate(FLAGS.config, FLAGS.workdir, FLAGS.threads)


if __name__ == "__main__":
  flags.DEFINE_string("workdir", None, "Directory for events and config.")
  config_flags.DEFINE_config_file(
      "config", None, "Config file, e.g. configs/tiny.py.", lock_config=True)
  flags.DEFINE_integer("threads", os.cpu_count(), "torch CPU threads.")
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
