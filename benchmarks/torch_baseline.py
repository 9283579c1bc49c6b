"""The same ELECTRA train step in PyTorch + transformers, for comparison.

  python benchmarks/torch_baseline.py --config=configs/small.py \
      --batch_size=32 --seq_len=128 --steps=10

`ElectraForMaskedLM` generator and `ElectraForPreTraining` discriminator of
the config's sizes, sharing word/position/type embeddings and the embedding
LayerNorm (as electra_jax and the reference do); the same masking (count-
based, 85% [MASK]), generator head only at masked positions, Gumbel
sampling, `gen_weight * MLM + disc_weight * RTD`, global-norm clipping and
AdamW. Uses all CPU threads. Prints one JSON object as its last line.
"""

import argparse
import importlib.util
import json
import os
import resource
import statistics
import sys
import time

import ml_collections
import numpy as np
import torch
import transformers

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
from electra_jax import benchmark  # pylint: disable=wrong-import-position
from electra_jax import loop  # pylint: disable=wrong-import-position
from electra_jax import model as model_lib  # pylint: disable=wrong-import-position
from electra_jax import objective  # pylint: disable=wrong-import-position
from electra_jax import train as train_lib  # pylint: disable=wrong-import-position


def load_config(path):
  spec = importlib.util.spec_from_file_location("config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def hf_config(cfg: model_lib.ModelConfig) -> transformers.ElectraConfig:
  return transformers.ElectraConfig(
      vocab_size=cfg.vocab_size, embedding_size=cfg.embedding_size,
      hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_hidden_layers,
      num_attention_heads=cfg.num_attention_heads,
      intermediate_size=cfg.intermediate_size,
      max_position_embeddings=cfg.max_position_embeddings,
      hidden_dropout_prob=cfg.hidden_dropout_prob,
      attention_probs_dropout_prob=cfg.attention_probs_dropout_prob)


class Electra(torch.nn.Module):
  """Generator + discriminator with shared embeddings."""

  def __init__(self, config):
    super().__init__()
    self.generator = transformers.ElectraForMaskedLM(
        hf_config(train_lib.generator_config(config,
                                             config.model.vocab_size)))
    self.discriminator = transformers.ElectraForPreTraining(
        hf_config(train_lib.discriminator_config(config,
                                                 config.model.vocab_size)))
    self.generator.electra.embeddings = self.discriminator.electra.embeddings
    self.generator.generator_lm_head.weight = (
        self.discriminator.electra.embeddings.word_embeddings.weight)
    self.obj = config.objective
    self.inp = config.input

  def mask(self, ids, input_mask, n):
    """Count-based masking as objective.mask_tokens, in torch."""
    specials = (ids == self.inp.cls_id) | (ids == self.inp.sep_id)
    candidate = input_mask.bool() & ~specials
    k = torch.clamp(torch.round(input_mask.sum(-1) * self.obj.mask_prob),
                    1, n).long()
    gumbel = -torch.log(-torch.log(torch.rand(ids.shape) + 1e-9) + 1e-9)
    scores = torch.where(candidate, gumbel, torch.full_like(gumbel, -1e9))
    positions = scores.topk(n, dim=-1).indices  # [B, N]
    weights = ((torch.arange(n)[None] < k[:, None])
               & candidate.gather(1, positions)).float()
    use_mask = (weights > 0) & (torch.rand(weights.shape)
                                < self.obj.mask_token_prob)
    masked = ids.clone()
    masked.scatter_(1, positions, torch.where(
        use_mask, torch.full_like(positions, self.inp.mask_id),
        ids.gather(1, positions)))
    return masked, positions, ids.gather(1, positions), weights

  def forward(self, ids, input_mask, segments, n):
    masked, positions, targets, weights = self.mask(ids, input_mask, n)
    gen = self.generator
    hidden = gen.electra(masked, attention_mask=input_mask,
                         token_type_ids=segments).last_hidden_state
    hidden = hidden.gather(1, positions[..., None].expand(
        -1, -1, hidden.shape[-1]))  # Head only at masked positions.
    logits = gen.generator_lm_head(gen.generator_predictions(hidden)).float()
    nll = torch.nn.functional.cross_entropy(
        logits.transpose(1, 2), targets, reduction="none")
    mlm = (nll * weights).sum() / (weights.sum() + 1e-6)
    with torch.no_grad():
      u = torch.rand(logits.shape)
      sampled = (logits / self.obj.temperature
                 - torch.log(-torch.log(u + 1e-9) + 1e-9)).argmax(-1)
      fake = ids.clone()
      fake.scatter_(1, positions, torch.where(weights > 0, sampled, targets))
      labels = (fake != ids).float()
    disc_logits = self.discriminator(
        fake, attention_mask=input_mask, token_type_ids=segments).logits
    mask_f = input_mask.float()
    rtd = torch.nn.functional.binary_cross_entropy_with_logits(
        disc_logits, labels, reduction="none")
    rtd = (rtd * mask_f).sum() / (mask_f.sum() + 1e-6)
    return self.obj.gen_weight * mlm + self.obj.disc_weight * rtd


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="configs/small.py")
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--seq_len", type=int, default=128)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--warmup", type=int, default=2)
  args = parser.parse_args()
  for name, low in (("batch_size", 1), ("seq_len", 2), ("steps", 1),
                    ("warmup", 0)):
    if getattr(args, name) < low:
      parser.error(f"--{name} must be >= {low}, got {getattr(args, name)}")
  torch.set_num_threads(os.cpu_count())
  torch.manual_seed(0)
  config = load_config(args.config)
  config.input.batch_size = args.batch_size
  config.input.max_seq_length = args.seq_len
  spec = benchmark.synthetic_spec(config)
  # The record a run saves: the config with the data's ids written in.
  config = ml_collections.ConfigDict(loop.run_record(config, spec))
  model = Electra(config).train()
  opt = config.optimizer
  optimizer = torch.optim.AdamW(
      model.parameters(), lr=opt.learning_rate, betas=(opt.adam_b1,
                                                       opt.adam_b2),
      eps=opt.adam_eps, weight_decay=opt.weight_decay_rate)
  n = objective.max_predictions_per_seq(config.objective.mask_prob,
                                        args.seq_len)
  rng = np.random.default_rng(0)
  ids = rng.integers(1000, spec.vocab_size, (args.batch_size, args.seq_len))
  ids[:, 0] = spec.cls_id
  lengths = rng.integers(args.seq_len * 3 // 4, args.seq_len + 1,
                         args.batch_size)
  ids[np.arange(args.batch_size), lengths - 1] = spec.sep_id
  mask = (np.arange(args.seq_len) < lengths[:, None]).astype(np.int64)
  segments = (np.arange(args.seq_len) >= args.seq_len // 2) * mask
  batch = [torch.tensor(ids * mask), torch.tensor(mask),
           torch.tensor(segments)]

  def step():
    optimizer.zero_grad(set_to_none=True)
    loss = model(*batch, n)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), opt.max_grad_norm)
    optimizer.step()
    return float(loss)

  for _ in range(args.warmup):
    step()
  times = []
  for _ in range(args.steps):
    t = time.perf_counter()
    loss = step()
    times.append(time.perf_counter() - t)
  step_s = statistics.median(times)
  result = {
      "framework": f"torch {torch.__version__} + transformers "
                   f"{transformers.__version__}",
      "threads": torch.get_num_threads(),
      "batch_size": args.batch_size, "seq_len": args.seq_len,
      "step_seconds_median": step_s, "step_seconds_min": min(times),
      "step_seconds_max": max(times),
      "tokens_per_second": args.batch_size * args.seq_len / step_s,
      "peak_host_memory_mib": resource.getrusage(
          resource.RUSAGE_SELF).ru_maxrss / 1024,
      "loss": loss,
  }
  print(f"torch: {result['tokens_per_second']:,.0f} tokens/s")
  print(json.dumps(result))


if __name__ == "__main__":
  main()
