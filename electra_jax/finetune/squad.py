"""Extractive QA (SQuAD 1.1 / 2.0): features with a doc stride, n-best span
decoding with a no-answer threshold, and the official EM/F1.

Contexts are split on whitespace into words and each word is tokenized on
its own, so every token maps back to a word and answers are whole words
(the SQuAD normalisation strips the punctuation that may cling to them).
A long context is cut into windows of `max_seq_length` tokens,
`[CLS] question [SEP] window [SEP]`, starting every `doc_stride` tokens; a
token seen in several windows is scored in the one where it has the most
context on both sides ("max context", as BERT's `run_squad.py`).

A span's score is `start_logit + end_logit`; the no-answer score is that of
the [CLS] position, minimised over windows. SQuAD 2.0 answers "" when
`null_score - best_span_score > na_threshold`.
"""

import collections
import dataclasses
import re
import string
from typing import Any, Sequence

import numpy as np

from electra_jax.data import tokenization


@dataclasses.dataclass(frozen=True)
class QAExample:
  id: str
  question: str
  context: str
  answers: tuple[str, ...] = ()  # Gold texts; empty if unanswerable.
  answer_starts: tuple[int, ...] = ()  # Character offsets into context.
  is_impossible: bool = False


@dataclasses.dataclass
class QAFeatures:
  """One row per window. Arrays are [num_windows] or [num_windows, L]."""

  input_ids: np.ndarray
  input_mask: np.ndarray
  segment_ids: np.ndarray
  start_positions: np.ndarray  # 0 ([CLS]) when the answer is not inside.
  end_positions: np.ndarray
  example_index: np.ndarray  # Which example a window belongs to.
  token_to_word: np.ndarray  # Context word of each token; -1 elsewhere.
  max_context: np.ndarray  # Whether this window scores the token.
  words: list[list[str]]  # Per example: its whitespace-split context.
  skipped: int = 0  # Training examples whose answer was not found.

  def arrays(self) -> dict[str, np.ndarray]:
    """The model inputs and training targets."""
    return {"input_ids": self.input_ids, "input_mask": self.input_mask,
            "segment_ids": self.segment_ids,
            "start_positions": self.start_positions,
            "end_positions": self.end_positions}


def split_words(context: str) -> tuple[list[str], list[int]]:
  """Whitespace words and, for each character, the index of its word."""
  words, char_to_word, prev_space = [], [], True
  for ch in context:
    if ch.isspace():
      prev_space = True
    else:
      if prev_space:
        words.append(ch)
      else:
        words[-1] += ch
      prev_space = False
    char_to_word.append(max(len(words) - 1, 0))
  return words, char_to_word


def _answer_words(ex: QAExample, words, char_to_word) -> tuple[int, int] | None:
  """Word span of the first answer, or None if it is not in the context."""
  text, start = ex.answers[0], ex.answer_starts[0]
  if ex.context[start:start + len(text)] != text:
    start = ex.context.find(text)  # Off-by-some offsets occur in the wild.
  if start < 0 or not text.strip():
    return None
  return char_to_word[start], char_to_word[start + len(text.rstrip()) - 1]


def _windows(num_tokens: int, size: int, stride: int) -> list[tuple[int, int]]:
  """(start, length) of each window over `num_tokens` doc tokens."""
  spans, start = [], 0
  while True:
    length = min(num_tokens - start, size)
    spans.append((start, length))
    if start + length >= num_tokens:
      return spans
    start += min(length, stride)


def _is_max_context(spans, span_index: int, position: int) -> bool:
  """Whether `spans[span_index]` gives token `position` the most context:
  the largest min(left, right) context, ties to the longer window."""
  best, best_index = None, None
  for i, (start, length) in enumerate(spans):
    if not start <= position < start + length:
      continue
    score = min(position - start, start + length - 1 - position) + 0.01 * length
    if best is None or score > best:
      best, best_index = score, i
  return best_index == span_index


def featurize(examples: Sequence[QAExample], tok: tokenization.Tokenizer, *,
              max_seq_length: int, max_query_length: int, doc_stride: int,
              is_training: bool) -> QAFeatures:
  """Windows of every example, with start/end targets when training.

  Training drops examples whose answer cannot be located in the context
  (counted in `skipped`); evaluation keeps every example.
  """
  cls, sep = tok.special_ids["cls_id"], tok.special_ids["sep_id"]
  unk, pad = tok.special_ids["unk_id"], tok.special_ids["pad_id"]
  rows = collections.defaultdict(list)
  all_words, skipped = [], 0
  queries = tok.encode_batch([ex.question for ex in examples])
  for index, ex in enumerate(examples):
    words, char_to_word = split_words(ex.context)
    all_words.append(words)
    target = None
    if is_training and not ex.is_impossible:
      target = _answer_words(ex, words, char_to_word)
      if target is None:
        skipped += 1
        continue
    doc, tok_to_word, word_start = [], [], []
    for w, pieces in enumerate(tok.encode_batch(words) if words else []):
      word_start.append(len(doc))
      for piece in pieces or [unk]:  # A word never vanishes.
        doc.append(piece)
        tok_to_word.append(w)
    word_start.append(len(doc))  # End of the last word.
    query = queries[index][:max_query_length]
    room = max_seq_length - len(query) - 3
    if room <= 0:
      raise ValueError(f"max_seq_length={max_seq_length} leaves no room for "
                       f"the context after a {len(query)}-token question.")
    spans = _windows(len(doc), room, doc_stride)
    for s_index, (start, length) in enumerate(spans):
      ids = [cls] + query + [sep] + doc[start:start + length] + [sep]
      offset = len(query) + 2
      t2w = np.full(max_seq_length, -1, np.int32)
      best = np.zeros(max_seq_length, bool)
      for j in range(length):
        t2w[offset + j] = tok_to_word[start + j]
        best[offset + j] = _is_max_context(spans, s_index, start + j)
      s_pos = e_pos = 0
      if target is not None:
        t_start, t_end = word_start[target[0]], word_start[target[1] + 1] - 1
        if start <= t_start and t_end < start + length:
          s_pos, e_pos = t_start - start + offset, t_end - start + offset
      n = len(ids)
      rows["input_ids"].append(ids + [pad] * (max_seq_length - n))
      rows["input_mask"].append([1] * n + [0] * (max_seq_length - n))
      rows["segment_ids"].append([0] * offset + [1] * (length + 1)
                                 + [0] * (max_seq_length - n))
      rows["start_positions"].append(s_pos)
      rows["end_positions"].append(e_pos)
      rows["example_index"].append(index)
      rows["token_to_word"].append(t2w)
      rows["max_context"].append(best)
  if not rows:
    raise ValueError("No QA features: every example was skipped.")
  arrays = {k: np.asarray(v, np.bool_ if k == "max_context" else np.int32)
            for k, v in rows.items()}
  return QAFeatures(**arrays, words=all_words, skipped=skipped)


def _softmax(x: np.ndarray) -> np.ndarray:
  e = np.exp(x - np.max(x))
  return e / e.sum()


def decode(examples: Sequence[QAExample], features: QAFeatures,
           start_logits: np.ndarray, end_logits: np.ndarray, *,
           n_best_size: int, max_answer_length: int, na_threshold: float,
           version_2: bool) -> dict[str, dict[str, Any]]:
  """Best answer and n-best list per example from window logits.

  Args:
    examples: the examples `features` were built from.
    features: their windows.
    start_logits, end_logits: [num_windows, L] float.
    n_best_size: candidates kept per window and per example.
    max_answer_length: longest span, in tokens.
    na_threshold: SQuAD 2.0 answers "" when the null score beats the best
      span by more than this.
    version_2: whether "" (no answer) is a possible prediction.

  Returns:
    `{id: {"text", "null_score_diff", "nbest": [{"text", "score",
    "probability"}]}}`; `null_score_diff` is null minus best span score.
  """
  by_example = collections.defaultdict(list)
  for f, index in enumerate(features.example_index):
    by_example[int(index)].append(f)
  out = {}
  for index, ex in enumerate(examples):
    words = features.words[index]
    null_score, spans = np.inf, []
    for f in by_example[index]:
      s_log, e_log = start_logits[f], end_logits[f]
      null_score = min(null_score, float(s_log[0] + e_log[0]))
      in_doc = features.token_to_word[f] >= 0
      top_s = np.argsort(-np.where(in_doc, s_log, -np.inf))[:n_best_size]
      top_e = np.argsort(-np.where(in_doc, e_log, -np.inf))[:n_best_size]
      for s in top_s:
        if not (in_doc[s] and features.max_context[f, s]):
          continue
        for e in top_e:
          if in_doc[e] and s <= e < s + max_answer_length:
            spans.append((float(s_log[s] + e_log[e]), f, int(s), int(e)))
    spans.sort(key=lambda x: -x[0])
    nbest, seen = [], set()
    for score, f, s, e in spans:
      w0, w1 = features.token_to_word[f, s], features.token_to_word[f, e]
      text = " ".join(words[w0:w1 + 1])
      if text not in seen:
        seen.add(text)
        nbest.append({"text": text, "score": score})
      if len(nbest) == n_best_size:
        break
    best_span = nbest[0]["score"] if nbest else -np.inf
    best_text = nbest[0]["text"] if nbest else ""
    if version_2 and null_score < np.inf:
      nbest.append({"text": "", "score": null_score})
      nbest.sort(key=lambda x: -x["score"])
      nbest = nbest[:n_best_size]
    if nbest:
      probs = _softmax(np.array([c["score"] for c in nbest]))
      for c, p in zip(nbest, probs):
        c["probability"] = float(p)
    diff = null_score - best_span
    no_answer = not np.isfinite(best_span) or (version_2
                                               and diff > na_threshold)
    out[ex.id] = {"text": "" if no_answer else best_text,
                  "null_score_diff": float(diff), "nbest": nbest}
  return out


def normalize_answer(text: str) -> str:
  """SQuAD's normalisation: lower case, drop punctuation, articles and
  extra whitespace."""
  text = "".join(ch for ch in text.lower() if ch not in string.punctuation)
  text = re.sub(r"\b(a|an|the)\b", " ", text)
  return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
  return float(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str, gold: str) -> float:
  """Token-overlap F1 of normalised answers; both empty scores 1."""
  pred = normalize_answer(prediction).split()
  ref = normalize_answer(gold).split()
  if not pred or not ref:
    return float(pred == ref)
  common = sum((collections.Counter(pred) & collections.Counter(ref)).values())
  if common == 0:
    return 0.0
  precision, recall = common / len(pred), common / len(ref)
  return 2 * precision * recall / (precision + recall)


def evaluate(examples: Sequence[QAExample],
             predictions: dict[str, dict[str, Any]]) -> dict[str, float]:
  """Mean EM and F1 (fractions, not percent), the max over gold answers.

  An unanswerable question's only gold answer is "".
  """
  em, f1 = [], []
  for ex in examples:
    golds = [a for a in ex.answers if normalize_answer(a)] or [""]
    pred = predictions[ex.id]["text"]
    em.append(max(exact_match(pred, g) for g in golds))
    f1.append(max(f1_score(pred, g) for g in golds))
  return {"exact_match": float(np.mean(em)), "f1": float(np.mean(f1))}
