"""What the discriminator's layers do to the positions of a sequence.

  python benchmarks/representation_probe.py --workdir=runs/mini \
      --steps=500,1000 [--batch_size=16]

For each saved step, on the first held-out batch: per layer, the standard
deviation across the positions of a sequence (averaged over features and
sequences) of the attention sublayer's output, of the residual stream after
its LayerNorm, of the feed-forward output and of the layer's output, with
the mean L2 norm of each. A healthy discriminator keeps the stream's
spread near its embeddings' (~0.8); a collapsing one shows sublayer outputs
whose norm dwarfs the residual stream's (sqrt(hidden) after LayerNorm) and
a spread that falls layer by layer to ~0.
"""

import os
import sys

from absl import app
from absl import flags
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
# pylint: disable=wrong-import-position
from electra_jax import loop
from electra_jax import model as model_lib
from electra_jax import pretrained
from electra_jax import train as train_lib
from electra_jax.data import input_pipeline

flags.DEFINE_string("workdir", None, "A pretraining run's workdir.")
flags.DEFINE_list("steps", [], "Checkpoint steps; empty: the latest.")
flags.DEFINE_integer("batch_size", 16, "Held-out sequences probed.")
FLAGS = flags.FLAGS

_SITES = (("attention_output", "attn_out"), ("attention_LayerNorm", "attn_ln"),
          ("output", "ffn_out"), ("output_LayerNorm", "layer_out"))


def _spread_and_norm(x: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
  """Mean over sequences of (feature-mean std across positions, L2 norm)."""
  spread, norm = [], []
  for row, real in zip(np.asarray(x), mask):
    row = row[real]
    spread.append(row.std(axis=0).mean())
    norm.append(np.linalg.norm(row, axis=-1).mean())
  return float(np.mean(spread)), float(np.mean(norm))


def probe(workdir: str, step: int | None, batch_size: int) -> list[dict]:
  """Per-layer statistics (one dict per layer) at checkpoint `step`."""
  config, params, step = pretrained.restore_params(workdir, step)
  if "discriminator" not in params:
    raise ValueError(f"{workdir} is an MLM-only run: no discriminator.")
  batch = next(iter(input_pipeline.make_eval_iterator(
      loop.prepare_data(config)[0],
      batch_size=batch_size, process_index=0, process_count=1,
      max_seq_length=config.input.max_seq_length, num_batches=1)))
  disc = model_lib.ElectraDiscriminator(
      train_lib.discriminator_config(config, config.model.vocab_size))
  _, state = disc.apply(
      {"params": model_lib.discriminator_params(params)},
      *(jnp.asarray(batch[k]) for k in ("input_ids", "input_mask",
                                        "segment_ids")),
      capture_intermediates=True)
  mask = batch["input_mask"].astype(bool)
  layers = state["intermediates"]["discriminator"]["encoder"]
  rows = []
  for i in range(config.model.num_hidden_layers):
    row = {"step": step, "layer": i}
    for module, name in _SITES:
      out = layers[f"layer_{i}"][module]["__call__"][0]
      row[f"{name}_spread"], row[f"{name}_norm"] = _spread_and_norm(out, mask)
    rows.append(row)
  return rows


def main(argv):
  del argv
  steps = [int(s) for s in FLAGS.steps] or [None]
  print("step layer " + " ".join(f"{n}_spread/norm" for _, n in _SITES))
  for step in steps:
    try:
      rows = probe(FLAGS.workdir, step, FLAGS.batch_size)
    except (ValueError, FileNotFoundError) as e:
      sys.exit(f"electra_jax: error: {e}")
    for row in rows:
      print(f"{row['step']:>5d} {row['layer']:>5d} " + " ".join(
          f"{row[n + '_spread']:>10.3f}/{row[n + '_norm']:<7.2f}"
          for _, n in _SITES))


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir"])
  sys.exit(app.run(main))
