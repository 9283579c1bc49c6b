"""Linear probes: what a pretrained encoder's frozen features say about labels.

Fine-tuning mixes two questions: do the representations hold the task's
information, and does the optimiser find it from there. A probe answers the
first alone: the encoder is frozen, and an L2-regularised logistic regression
is fit on pooled features of the labeled training file, then scored on the
dev file. Each encoder is probed at two depths, its embedding output (what
the word vectors know) and its last layer (what the contextual layers add),
each as the mean over tokens and, for the last layer, [CLS]'s vector. The
same architecture at random init is the floor. A second table gives each
feature's spread over the dev texts (`spread`): it separates a feature that
ignores its input from one that varies with the input but not with the label.

  python experiments/linear_probe.py --workdir=runs/evm6k/electra \
      --workdir=runs/evm6k/mlm --train_file=data/labeled/train5k.csv \
      --eval_file=data/labeled/dev.csv --output=runs/probe.md

A workdir is whatever `finetune`'s `init_from` takes (a pretraining run,
ELECTRA or MLM-only, or an export); its tokenizer encodes the texts.
"""

import os
import sys

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from electra_jax import errors
from electra_jax import model as model_lib
from electra_jax import pretrained
from electra_jax.data import input_pipeline
from electra_jax.data import tokenization
from electra_jax.finetune import features
from electra_jax.finetune import restore
from electra_jax.finetune import tasks

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("workdir", [], "Encoders to probe (init_from).")
flags.DEFINE_string("train_file", None, "Labeled training CSV/TSV/JSONL.")
flags.DEFINE_string("eval_file", None, "Labeled dev CSV/TSV/JSONL.")
flags.DEFINE_string("text_column", "text", "Text column.")
flags.DEFINE_string("label_column", "label", "Label column.")
flags.DEFINE_integer("max_seq_length", 48, "Tokens per example.")
flags.DEFINE_float("l2", 1e-3, "L2 penalty of the probe (on standardised "
                   "features, per example).")
flags.DEFINE_integer("seed", 0, "Seed of the random-init floor.")
flags.DEFINE_string("output", None, "Markdown table to write (optional).")

FEATURES = ("embeddings, mean", "last layer, mean", "last layer, [CLS]")


def pooled(cfg: model_lib.ModelConfig, params, arrays, batch_size=256):
  """{feature name: [N, H]} from the frozen encoder, in batches."""
  embed, encode = model_lib.Embeddings(cfg), model_lib.Encoder(cfg)

  @jax.jit
  def run(ids, mask, segments):
    x = embed.apply({"params": params["embeddings"]}, ids, segments, True)
    h = encode.apply({"params": params["encoder"]}, x, mask, True)
    m = mask[..., None].astype(x.dtype)
    mean = lambda t: (t * m).sum(1) / m.sum(1)
    return mean(x), mean(h), h[:, 0]

  outs = [run(*(arrays[k][i:i + batch_size] for k in
                ("input_ids", "input_mask", "segment_ids")))
          for i in range(0, len(arrays["input_ids"]), batch_size)]
  return {name: np.concatenate([np.asarray(o[k]) for o in outs])
          for k, name in enumerate(FEATURES)}


def probe(x_train, y_train, x_eval, y_eval, num_labels, l2, steps=500):
  """Dev accuracy of a logistic regression on standardised features."""
  mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
  xt, xe = (x_train - mu) / sd, (x_eval - mu) / sd
  w = {"w": jnp.zeros((xt.shape[1], num_labels)), "b": jnp.zeros(num_labels)}

  def loss(w):
    logits = xt @ w["w"] + w["b"]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y_train)
    return ce.mean() + l2 * jnp.sum(w["w"] ** 2)

  opt = optax.lbfgs()
  state = opt.init(w)
  value_and_grad = optax.value_and_grad_from_state(loss)

  @jax.jit
  def step(w, state):
    value, grad = value_and_grad(w, state=state)
    updates, state = opt.update(grad, state, w, value=value, grad=grad,
                                value_fn=loss)
    return optax.apply_updates(w, updates), state

  for _ in range(steps):
    w, state = step(w, state)
  predictions = np.asarray(jnp.argmax(xe @ w["w"] + w["b"], -1))
  return float((predictions == y_eval).mean())


def spread(x: np.ndarray) -> float:
  """How much a pooled feature depends on its input: the mean over
  dimensions of the std across examples, over the feature's RMS (0 for a
  vector that is the same for every text)."""
  x = np.asarray(x, np.float64)
  return float(x.std(0).mean() / (np.sqrt((x ** 2).mean()) + 1e-12))


def lowercase(tokenizer: str) -> bool:
  """A WordPiece vocab's casing, as the data was made; sentencepiece models
  hold their own rules."""
  if not tokenizer.endswith(".txt"):
    return True
  return bool(input_pipeline.load_metadata(
      os.path.dirname(tokenizer)).get("lowercase", True))


def encoders(workdirs, seed):
  """(label, ModelConfig, params, tokenizer path) per workdir, and the
  first one's architecture at random init."""
  out = []
  for path in workdirs:
    cfg, params = restore.load_encoder(path)
    out.append((os.path.basename(os.path.normpath(path)), cfg, params,
                pretrained.tokenizer_path(path)))
  label, cfg, _, tokenizer = out[0]
  ids = jnp.zeros((1, 8), jnp.int32)
  embed = model_lib.Embeddings(cfg).init(jax.random.key(seed), ids, ids, True)
  x = model_lib.Embeddings(cfg).apply(embed, ids, ids, True)
  params = {"embeddings": embed["params"],
            "encoder": model_lib.Encoder(cfg).init(
                jax.random.key(seed + 1), x, ids + 1, True)["params"]}
  out.append((f"random init ({label}'s architecture)", cfg, params, tokenizer))
  return out


def main(argv):
  del argv
  if not FLAGS.workdir or not FLAGS.train_file or not FLAGS.eval_file:
    raise errors.UserError("--workdir (one or more), --train_file and "
                           "--eval_file are required.")
  spec = tasks.get_task("classification")
  train, dev = (tasks.to_examples(
      spec, tasks.read_file(path), text_columns=(FLAGS.text_column,),
      label_column=FLAGS.label_column, id_column="id", labeled=True,
      source=path) for path in (FLAGS.train_file, FLAGS.eval_file))
  labels = sorted({ex.label for ex in train})
  unseen = sorted({ex.label for ex in dev} - set(labels))
  if unseen:
    raise errors.UserError(f"--eval_file has labels {unseen} that "
                           "--train_file never has; a probe cannot predict "
                           "them.")
  y_train, y_eval = (np.array([labels.index(ex.label) for ex in split])
                     for split in (train, dev))
  header = [f"| encoder | {' | '.join(FEATURES)} |",
            "| --- |" + " ---: |" * len(FEATURES)]
  rows, spreads = list(header), list(header)
  for label, cfg, params, tokenizer in encoders(FLAGS.workdir, FLAGS.seed):
    tok = tokenization.load_tokenizer(tokenizer,
                                      lowercase=lowercase(tokenizer))
    x_train, x_eval = (pooled(cfg, params, features.encode_texts(
        split, tok, FLAGS.max_seq_length)) for split in (train, dev))
    accuracy = [probe(x_train[f], y_train, x_eval[f], y_eval, len(labels),
                      FLAGS.l2) for f in FEATURES]
    rows.append(f"| {label} | " + " | ".join(f"{a:.4f}" for a in accuracy)
                + " |")
    spreads.append(f"| {label} | " + " | ".join(
        f"{spread(x_eval[f]):.3f}" for f in FEATURES) + " |")
    print(rows[-1], flush=True)
  majority = max(np.mean(y_eval == k) for k in range(len(labels)))
  text = ("\n".join(rows) + f"\n\nDev majority class: {majority:.4f}.\n\n"
          "Spread of each feature over the dev texts (std across texts / "
          "RMS; 0: the same vector for every text):\n\n"
          + "\n".join(spreads) + "\n")
  print(text)
  if FLAGS.output:
    with open(FLAGS.output, "w") as f:
      f.write(text)


if __name__ == "__main__":
  errors.run(main)
