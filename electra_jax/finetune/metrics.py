"""Evaluation metrics for fine-tuning, in plain numpy.

The GLUE metrics (accuracy, binary F1, Matthews correlation, Pearson and
Spearman correlation) and the CoNLL chunk F1 for tagging, with the BIO <->
BIOES conversions tagging trains through. Each metric takes host arrays and
returns a Python float; `compute` runs a task's named metrics.
SQuAD's EM/F1 live in `squad.py`, next to the answer normalisation they need.
"""

from collections.abc import Callable, Sequence

import numpy as np

from electra_jax import errors

Metric = Callable[[np.ndarray, np.ndarray], float]


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
  """Fraction of exact matches; [n] and [n] -> float."""
  predictions, labels = np.asarray(predictions), np.asarray(labels)
  _check_lengths(predictions, labels)
  return float(np.mean(predictions == labels))


def f1(predictions: np.ndarray, labels: np.ndarray, positive: int = 1) -> float:
  """Binary F1 of the `positive` class (GLUE's MRPC/QQP F1).

  Zero when there are no true or no predicted positives, as sklearn's
  `f1_score(zero_division=0)`.
  """
  predictions, labels = np.asarray(predictions), np.asarray(labels)
  _check_lengths(predictions, labels)
  tp = np.sum((predictions == positive) & (labels == positive))
  fp = np.sum((predictions == positive) & (labels != positive))
  fn = np.sum((predictions != positive) & (labels == positive))
  denominator = 2 * tp + fp + fn
  return float(2 * tp / denominator) if denominator else 0.0


def matthews_corrcoef(predictions: np.ndarray, labels: np.ndarray) -> float:
  """Matthews correlation coefficient (CoLA), multi-class (Gorodkin's R_K).

  With confusion counts C, true totals t_k, predicted totals p_k, c = trace
  and s = n: `(c*s - sum t_k p_k) / sqrt((s^2 - sum p_k^2)(s^2 - sum t_k^2))`,
  and 0 when either factor of the denominator is 0 (a constant predictor or
  a constant label), as sklearn.
  """
  predictions, labels = np.asarray(predictions), np.asarray(labels)
  _check_lengths(predictions, labels)
  classes = np.union1d(predictions, labels)
  t = np.array([np.sum(labels == k) for k in classes], np.float64)
  p = np.array([np.sum(predictions == k) for k in classes], np.float64)
  c = float(np.sum(predictions == labels))
  s = float(len(labels))
  denominator = (s * s - np.dot(p, p)) * (s * s - np.dot(t, t))
  if denominator <= 0:
    return 0.0
  return float((c * s - np.dot(t, p)) / np.sqrt(denominator))


def pearson(predictions: np.ndarray, labels: np.ndarray) -> float:
  """Pearson correlation (STS-B).

  Returns 0 when either side is constant (the correlation is undefined; 0
  keeps best-step selection well defined where scipy would give NaN).
  """
  x = np.asarray(predictions, np.float64)
  y = np.asarray(labels, np.float64)
  _check_lengths(x, y)
  x, y = x - x.mean(), y - y.mean()
  denominator = np.sqrt(np.dot(x, x) * np.dot(y, y))
  return float(np.dot(x, y) / denominator) if denominator > 0 else 0.0


def rankdata(x: np.ndarray) -> np.ndarray:
  """1-based ranks with ties given their average rank (scipy's default)."""
  x = np.asarray(x)
  order = np.argsort(x, kind="mergesort")
  sorted_x = x[order]
  # Start index of each run of equal values in sorted order.
  starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
  ends = np.r_[starts[1:], len(x)]
  average = (starts + ends + 1) / 2.0  # Mean of ranks starts+1 .. ends.
  ranks = np.empty(len(x), np.float64)
  ranks[order] = np.repeat(average, ends - starts)
  return ranks


def spearman(predictions: np.ndarray, labels: np.ndarray) -> float:
  """Spearman rank correlation: Pearson on average ranks (STS-B)."""
  _check_lengths(np.asarray(predictions), np.asarray(labels))
  return pearson(rankdata(predictions), rankdata(labels))


def chunks(tags: Sequence[str]) -> set[tuple[str, int, int]]:
  """Typed spans `(type, start, end_inclusive)` of a BIO/IOB/BIOES sequence.

  A span starts at `B-X`, at `S-X` (a one-token span), or at an `I-X`/`E-X`
  that does not continue a span of type X (IOB1 and sloppy predictions, as
  conlleval); `E-X` ends it after its token, `O` before. Tags without a
  prefix are their own type. BIO sequences hold no `E-`/`S-`, so their
  spans are conlleval's.
  """
  spans, start, kind = set(), None, None
  for i, tag in enumerate(list(tags) + ["O"]):
    prefix, _, label = tag.partition("-") if "-" in tag else ("", "", tag)
    continues = prefix in ("I", "E") and kind == label
    if start is not None and (tag == "O" or not continues):
      spans.add((kind, start, i - 1))
      start, kind = None, None
    if tag != "O" and start is None:
      start, kind = i, label
    if prefix in ("E", "S") and start is not None:
      spans.add((kind, start, i))
      start, kind = None, None
  return spans


def _write_spans(spans: set[tuple[str, int, int]], length: int,
                 bioes: bool) -> list[str]:
  tags = ["O"] * length
  for kind, start, end in spans:
    tags[start:end + 1] = [f"I-{kind}"] * (end + 1 - start)
    if bioes and start == end:
      tags[start] = f"S-{kind}"
      continue
    tags[start] = f"B-{kind}"
    if bioes:
      tags[end] = f"E-{kind}"
  return tags


def to_bioes(tags: Sequence[str]) -> list[str]:
  """The spans of `tags` (any scheme `chunks` reads) written as BIOES: the
  reference's `LABEL_ENCODING` for chunking (`S-X` one token, `B-X I-X ..
  E-X` longer spans)."""
  return _write_spans(chunks(tags), len(tags), bioes=True)


def to_bio(tags: Sequence[str]) -> list[str]:
  """The spans of `tags` written as BIO (IOB2: every span opens with B-X);
  `chunks(to_bio(t)) == chunks(t)`, so scoring is unchanged."""
  return _write_spans(chunks(tags), len(tags), bioes=False)


def chunk_f1(predictions: Sequence[Sequence[str]],
             labels: Sequence[Sequence[str]]) -> float:
  """CoNLL span F1: a predicted chunk counts only if type and extent match."""
  if len(predictions) != len(labels):
    raise ValueError(f"{len(predictions)} predicted sequences for "
                     f"{len(labels)} labelled ones.")
  tp = n_pred = n_gold = 0
  for pred, gold in zip(predictions, labels):
    p, g = chunks(pred), chunks(gold)
    tp += len(p & g)
    n_pred += len(p)
    n_gold += len(g)
  precision = tp / n_pred if n_pred else 0.0
  recall = tp / n_gold if n_gold else 0.0
  total = precision + recall
  return 2 * precision * recall / total if total else 0.0


METRICS: dict[str, Metric] = {
    "accuracy": accuracy,
    "f1": f1,
    "mcc": matthews_corrcoef,
    "pearson": pearson,
    "spearman": spearman,
}


def compute(names: Sequence[str], predictions: np.ndarray,
            labels: np.ndarray) -> dict[str, float]:
  """Runs the named metrics of `METRICS` on one set of predictions."""
  unknown = [n for n in names if n not in METRICS]
  if unknown:
    raise errors.UserError(f"Unknown metric(s) {unknown}; known: "
                     f"{', '.join(sorted(METRICS))}.")
  return {n: METRICS[n](predictions, labels) for n in names}


def summarize(values: Sequence[float]) -> dict[str, float]:
  """Mean, median, population std, min and max over trials."""
  v = np.asarray(values, np.float64)
  return {"mean": float(v.mean()), "median": float(np.median(v)),
          "std": float(v.std()), "min": float(v.min()),
          "max": float(v.max()), "n": int(len(v))}


def _check_lengths(a: np.ndarray, b: np.ndarray) -> None:
  if a.shape[:1] != b.shape[:1]:
    raise ValueError(f"{a.shape[0]} predictions for {b.shape[0]} labels.")
  if a.shape[0] == 0:
    raise errors.UserError("No examples to score.")
