"""A task's splits: read as `config.data` says, featurized, and scored.

  train/eval:  data.source == "tfds":  data.tfds_name @ data.{train,eval}_split
               data.source == "files": data.{train,eval}_file
  predict:     data.predict_file (unlabeled), else the TFDS data.predict_split

Every process reads and featurizes the whole (small) split; the training
loop then hands each process its rows of every global batch. Back on the
host, `predict` turns the model's outputs for a split into one record per
example, `score` compares them with the gold labels using the task's
metrics, and `write_predictions` saves them as JSON lines.
"""

import dataclasses
import json
from typing import Any

from etils import epath
import numpy as np

from electra_jax import errors
from electra_jax.data import tokenization
from electra_jax.finetune import features
from electra_jax.finetune import metrics as metrics_lib
from electra_jax.finetune import qa_head
from electra_jax.finetune import squad
from electra_jax.finetune import tasks

SOURCES = ("tfds", "files")
# Per kind, the arrays the device step reads (beyond input_ids, input_mask,
# segment_ids and the per-row `weight` the batchers add).
TARGETS = {"classification": ("label",), "regression": ("label",),
           "tagging": ("labels",),
           "qa": ("start_positions", "end_positions", "is_impossible")}
INPUTS = ("input_ids", "input_mask", "segment_ids")


@dataclasses.dataclass
class Split:
  """Examples and the features built from them."""

  examples: list[Any]
  arrays: dict[str, np.ndarray]  # Device inputs and targets, one row each.
  qa: squad.QAFeatures | None = None  # QA windows and their maps.
  word_positions: np.ndarray | None = None  # Tagging: token of each word.
  tag_encoding: str = "none"  # Tagging: what the model's tags are written in.

  @property
  def num_rows(self) -> int:
    return features.num_rows(self.arrays)


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where a task's data comes from and how it is cut: field for field the
  fine-tuning config's `data` section (see `configs/finetune.py`)."""

  source: str
  tfds_name: str
  tfds_data_dir: str
  train_split: str
  eval_split: str
  predict_split: str
  train_file: str
  eval_file: str
  predict_file: str
  file_format: str
  text_columns: str
  label_column: str
  id_column: str
  labels: str
  tag_encoding: str
  double_unordered: bool
  max_query_length: int
  doc_stride: int


def columns(d: DataConfig) -> tuple[str, ...]:
  return tuple(c.strip() for c in d.text_columns.split(",") if c.strip())


def _rows(d: DataConfig, which: str
          ) -> tuple[list[dict[str, Any]], str, bool]:
  """Raw rows of split `which`, their description, and whether TFDS."""
  if d.source not in SOURCES:
    raise errors.UserError(f"data.source must be one of {SOURCES}, not "
                     f"{d.source!r}.")
  path = getattr(d, f"{which}_file")
  if path or (d.source == "files" and which != "predict"):
    if not path:
      raise errors.UserError(f"data.source=files needs --config.data.{which}_file.")
    return tasks.read_file(path, d.file_format), path, False
  split = getattr(d, f"{which}_split")
  if d.source != "tfds" or not split:
    raise errors.UserError(f"No {which} data: set --config.data.{which}_file"
                     + (" or --config.data.predict_split (TFDS)."
                        if which == "predict" else "."))
  if not d.tfds_name:
    raise errors.UserError("data.source=tfds needs --config.data.tfds_name.")
  rows = tasks.read_tfds(d.tfds_name, split, d.tfds_data_dir)
  return rows, f"TFDS {d.tfds_name}[{split}]", True


def read_examples(d: DataConfig, spec: tasks.TaskSpec,
                  which: str) -> list[Any]:
  """Examples of split `which` ("train", "eval" or "predict", unlabeled)."""
  rows, source, from_tfds = _rows(d, which)
  return tasks.to_examples(
      spec, rows, text_columns=columns(d),
      label_column=d.label_column, id_column=d.id_column,
      labeled=which != "predict", source=source,
      index_names=spec.label_names if from_tfds else ())


def label_names(d: DataConfig, spec: tasks.TaskSpec,
                train: list[Any]) -> list[str]:
  """Class or tag names: `data.labels`, the TFDS task's, or the sorted
  distinct values of the training data. Empty for regression and QA.

  Tags are named as the model learns them (`features.training_tags`): with
  `tag_encoding` "bioes", every span type of `data.labels` in its four
  forms plus "O", or the BIOES tags of the training data.
  """
  if spec.kind in ("regression", "qa"):
    return []
  given = [x.strip() for x in d.labels.split(",") if x.strip()]
  if spec.kind == "tagging":
    if given and d.tag_encoding == "bioes":
      features.training_tags(  # Checks that they are span tags.
          tasks.TaggingExample("--config.data.labels", (), tuple(given)),
          d.tag_encoding)
      kinds = {t[2:] for t in given if t != "O"}
      return sorted({"O"} | {f"{p}-{k}" for k in kinds for p in "BIES"})
    return given or sorted({t for ex in train
                            for t in features.training_tags(
                                ex, d.tag_encoding)})
  if given:
    return given
  if d.source == "tfds" and spec.label_names:
    return list(spec.label_names)
  return sorted({ex.label for ex in train})


def featurize(d: DataConfig, length: int, spec: tasks.TaskSpec,
              labels: list[str], tok: tokenization.Tokenizer,
              examples: list[Any], training: bool) -> Split:
  """Features of `examples`, `length` tokens each; training adds swapped
  pairs where the task's labels ignore sentence order
  (`double_unordered`)."""
  if spec.kind == "qa":
    qa = squad.featurize(examples, tok, max_seq_length=length,
                         max_query_length=d.max_query_length,
                         doc_stride=d.doc_stride, is_training=training)
    return Split(examples, qa.arrays(), qa=qa)
  if spec.kind == "tagging":
    arrays = features.tagging_features(examples, labels, tok, length,
                                       d.tag_encoding)
    positions = arrays.pop("word_positions")
    return Split(examples, arrays, word_positions=positions,
                 tag_encoding=d.tag_encoding)
  if training and spec.unordered and d.double_unordered:
    examples = features.double_unordered(examples)
  arrays = features.text_features(examples, spec.kind, labels,
                                  spec.label_range, tok, length)
  return Split(examples, arrays)


def device_keys(kind: str) -> tuple[str, ...]:
  """The arrays of a batch the jitted steps take."""
  return INPUTS + TARGETS[kind] + ("weight",)


def _softmax(logits: np.ndarray) -> np.ndarray:
  e = np.exp(logits - logits.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def predict(q: qa_head.QAConfig, spec: tasks.TaskSpec, labels: list[str],
            split: Split, outputs: Any) -> list[dict[str, Any]]:
  """One prediction record per example.

  Args:
    q: the QA head and decoding settings.
    spec: the task.
    labels: class or tag names.
    split: the examples and features the outputs belong to.
    outputs: `TaskModel` outputs for every feature row of `split` (QA: a
      dict of arrays).

  Returns:
    Records with `id` and, by kind, `label` + `probabilities`, `score`,
    `tags` (BIO when the model learnt BIOES), or `answer` + `best_span` +
    `nbest` (+ `na_score` for SQuAD 2.0: "" answers when it exceeds
    `q.threshold`, the head's own).
  """
  examples = split.examples
  if spec.kind == "classification":
    probs = _softmax(np.asarray(outputs, np.float64))
    return [{"id": ex.id, "label": labels[int(np.argmax(p))],
             "label_index": int(np.argmax(p)),
             "probabilities": dict(zip(labels, map(float, p)))}
            for ex, p in zip(examples, probs)]
  if spec.kind == "regression":
    low, high = spec.label_range
    return [{"id": ex.id, "score": float(s * (high - low) + low)}
            for ex, s in zip(examples, outputs)]
  if spec.kind == "tagging":
    best = np.argmax(outputs, -1)  # [N, L]
    records = []
    for i, ex in enumerate(examples):
      positions = split.word_positions[i, :len(ex.words)]
      tags = [labels[best[i, p]] if p >= 0 else "O"  # "O": cut off.
              for p in positions]
      tags += ["O"] * (len(ex.words) - len(tags))
      if split.tag_encoding == "bioes":
        tags = metrics_lib.to_bio(tags)
      records.append({"id": ex.id, "tags": tags})
    return records
  decoded = squad.decode(
      examples, split.qa, outputs, head=q.head, n_best_size=q.n_best_size,
      max_answer_length=q.max_answer_length, na_threshold=q.threshold,
      version_2=spec.squad_v2)
  records = []
  for ex in examples:
    d = dict(decoded[ex.id])
    records.append({"id": ex.id, "answer": d.pop("text"), **d})
  return records


def score(spec: tasks.TaskSpec, labels: list[str], split: Split,
          records: list[dict[str, Any]]) -> dict[str, float]:
  """The task's metrics of `records` against the gold labels of `split`."""
  examples = split.examples
  if spec.kind == "classification":
    index = {name: i for i, name in enumerate(labels)}
    gold = np.array([index[ex.label] for ex in examples])
    pred = np.array([r["label_index"] for r in records])
    return metrics_lib.compute(spec.metrics, pred, gold)
  if spec.kind == "regression":
    gold = np.array([ex.label for ex in examples])
    pred = np.array([r["score"] for r in records])
    return metrics_lib.compute(spec.metrics, pred, gold)
  if spec.kind == "tagging":
    gold = [list(ex.tags) for ex in examples]
    pred = [r["tags"] for r in records]
    if split.tag_encoding == "bioes":  # Same spans, the predictions' scheme.
      gold = [metrics_lib.to_bio(g) for g in gold]
    flat_gold = np.array([t for seq in gold for t in seq])
    flat_pred = np.array([t for seq in pred for t in seq])
    return {"f1": metrics_lib.chunk_f1(pred, gold),
            "accuracy": metrics_lib.accuracy(flat_pred, flat_gold)}
  answers = {r["id"]: {**r, "text": r["answer"]} for r in records}
  return squad.evaluate(examples, answers)


def write_predictions(path: str, records: list[dict[str, Any]]) -> None:
  """Writes one JSON object per line (atomically)."""
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.parent / (path.name + ".tmp")
  tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n"
                         for r in records), encoding="utf-8")
  tmp.rename(path)


def trial_results(trial: int, seed: int, main: str,
                  evals: list[dict[str, Any]]) -> dict[str, Any]:
  """One trial's record from its dev evaluations, in epoch order.

  Args:
    trial: the trial's index.
    seed: its seed.
    main: the task's headline metric.
    evals: `{"epoch", "step", <metric>: value, ...}` after every epoch.

  Returns:
    `final` (the last evaluation's metrics: the trial's score), and beside
    it `best_epoch`, `best_step`, `best_epoch_<main>` and `best` (the
    metrics of the first epoch with the highest `main`; not `best_<main>`,
    which SQuAD 2.0's threshold search names), plus `evals` itself.
  """
  best = max(evals, key=lambda e: e[main])  # The first of equals.
  metrics_of = lambda e: {k: v for k, v in e.items()
                          if k not in ("epoch", "step")}
  return {"trial": trial, "seed": seed, "final": metrics_of(evals[-1]),
          "best_epoch": best["epoch"], "best_step": best["step"],
          f"best_epoch_{main}": best[main], "best": metrics_of(best),
          "evals": evals}


def summarize_trials(trials: list[dict[str, Any]]) -> dict[str, Any]:
  """Mean/median/std over trials of the final and the best-epoch metrics.

  "final" (each trial's model after its last epoch, as the reference
  evaluates and reports) is the headline; "best" is the best epoch's
  scores, reported beside it: picked on the dev set it scores, it is
  biased upward.
  """
  out = {}
  for which in ("final", "best"):
    names = trials[0][which].keys()
    out[which] = {n: metrics_lib.summarize([t[which][n] for t in trials])
                  for n in names}
  return out
