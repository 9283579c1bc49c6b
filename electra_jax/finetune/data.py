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

from electra_jax.data import tokenization
from electra_jax.finetune import features
from electra_jax.finetune import metrics as metrics_lib
from electra_jax.finetune import squad
from electra_jax.finetune import tasks

SOURCES = ("tfds", "files")
# Per kind, the arrays the device step reads (beyond input_ids, input_mask,
# segment_ids and the per-row `weight` the batchers add).
TARGETS = {"classification": ("label",), "regression": ("label",),
           "tagging": ("labels",), "qa": ("start_positions", "end_positions")}
INPUTS = ("input_ids", "input_mask", "segment_ids")


@dataclasses.dataclass
class Split:
  """Examples and the features built from them."""

  examples: list[Any]
  arrays: dict[str, np.ndarray]  # Device inputs and targets, one row each.
  qa: squad.QAFeatures | None = None  # QA windows and their maps.
  word_positions: np.ndarray | None = None  # Tagging: token of each word.

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
  double_unordered: bool
  max_query_length: int
  doc_stride: int


@dataclasses.dataclass(frozen=True)
class QaConfig:
  """Span decoding: the fine-tuning config's `qa` section."""

  n_best_size: int
  max_answer_length: int
  na_threshold: float


def columns(d: DataConfig) -> tuple[str, ...]:
  return tuple(c.strip() for c in d.text_columns.split(",") if c.strip())


def _rows(d: DataConfig, which: str
          ) -> tuple[list[dict[str, Any]], str, bool]:
  """Raw rows of split `which`, their description, and whether TFDS."""
  if d.source not in SOURCES:
    raise ValueError(f"data.source must be one of {SOURCES}, not "
                     f"{d.source!r}.")
  path = getattr(d, f"{which}_file")
  if path or (d.source == "files" and which != "predict"):
    if not path:
      raise ValueError(f"data.source=files needs --config.data.{which}_file.")
    return tasks.read_file(path, d.file_format), path, False
  split = getattr(d, f"{which}_split")
  if d.source != "tfds" or not split:
    raise ValueError(f"No {which} data: set --config.data.{which}_file"
                     + (" or --config.data.predict_split (TFDS)."
                        if which == "predict" else "."))
  if not d.tfds_name:
    raise ValueError("data.source=tfds needs --config.data.tfds_name.")
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
  distinct values of the training data. Empty for regression and QA."""
  if spec.kind in ("regression", "qa"):
    return []
  if d.labels:
    return [x.strip() for x in d.labels.split(",")]
  if d.source == "tfds" and spec.label_names:
    return list(spec.label_names)
  if spec.kind == "tagging":
    return sorted({t for ex in train for t in ex.tags})
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
    arrays = features.tagging_features(examples, labels, tok, length)
    positions = arrays.pop("word_positions")
    return Split(examples, arrays, word_positions=positions)
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


def predict(q: QaConfig, spec: tasks.TaskSpec, labels: list[str],
            split: Split, outputs: np.ndarray) -> list[dict[str, Any]]:
  """One prediction record per example.

  Args:
    q: QA decoding settings.
    spec: the task.
    labels: class or tag names.
    split: the examples and features the outputs belong to.
    outputs: `TaskModel` outputs for every feature row of `split`.

  Returns:
    Records with `id` and, by kind, `label` + `probabilities`, `score`,
    `tags`, or `answer` + `null_score_diff` + `nbest`.
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
      records.append({"id": ex.id, "tags": tags})
    return records
  decoded = squad.decode(
      examples, split.qa, outputs[..., 0], outputs[..., 1],
      n_best_size=q.n_best_size, max_answer_length=q.max_answer_length,
      na_threshold=q.na_threshold, version_2=spec.squad_v2)
  return [{"id": ex.id, "answer": decoded[ex.id]["text"],
           "null_score_diff": decoded[ex.id]["null_score_diff"],
           "nbest": decoded[ex.id]["nbest"]} for ex in examples]


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
    flat_gold = np.array([t for seq in gold for t in seq])
    flat_pred = np.array([t for seq in pred for t in seq])
    return {"f1": metrics_lib.chunk_f1(pred, gold),
            "accuracy": metrics_lib.accuracy(flat_pred, flat_gold)}
  answers = {r["id"]: {"text": r["answer"]} for r in records}
  return squad.evaluate(examples, answers)


def write_predictions(path: str, records: list[dict[str, Any]]) -> None:
  """Writes one JSON object per line (atomically)."""
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.parent / (path.name + ".tmp")
  tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n"
                         for r in records), encoding="utf-8")
  tmp.rename(path)


def summarize_trials(trials: list[dict[str, Any]]) -> dict[str, Any]:
  """Mean/median/std over trials of the best-step and final metrics."""
  out = {}
  for which in ("best", "final"):
    names = trials[0][which].keys()
    out[which] = {n: metrics_lib.summarize([t[which][n] for t in trials])
                  for n in names}
  return out
