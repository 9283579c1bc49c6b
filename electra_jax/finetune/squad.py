"""Extractive QA (SQuAD 1.1 / 2.0): features with a doc stride, n-best span
decoding with a no-answer threshold, as google-research/electra's
`finetune/qa/qa_tasks.py` and `qa_metrics.py`.

Contexts are split on whitespace into words and each word is tokenized on
its own, so every token maps back to a word. A training answer's token
span is the word span tightened to the tokenized answer where they differ
(`improve_answer_span`: "1895" inside "(1895-1943)."). A long context is
cut into windows of `max_seq_length` tokens, `[CLS] question [SEP] window
[SEP]`, starting every `doc_stride` tokens; a token seen in several windows
is scored in the one where it has the most context on both sides ("max
context", as BERT's `run_squad.py`).

Decoding ranks the valid spans of all windows of a question by score
("electra" head: log p(start) + log p(end | start) over its beam; "bert":
start_logit + end_logit), and maps each back to the original text with
`squad_eval.get_final_text`. SQuAD 2.0 answers "" when the question's
no-answer score exceeds `na_threshold`: the "electra" head's answerable
logit (minimised over windows; the reference's default threshold -2.75),
or for "bert" the [CLS] span score (minimised over windows) minus the best
span's.
"""

import collections
import dataclasses
from typing import Any, Callable, Sequence

import numpy as np

from electra_jax import errors
from electra_jax.data import tokenization
from electra_jax.finetune import squad_eval

evaluate = squad_eval.evaluate  # SQuAD scoring lives in squad_eval.


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
  is_impossible: np.ndarray  # The question's (not the window's), as ref.
  example_index: np.ndarray  # Which example a window belongs to.
  token_to_word: np.ndarray  # Context word of each token; -1 elsewhere.
  max_context: np.ndarray  # Whether this window scores the token.
  words: list[list[str]]  # Per example: its whitespace-split context.
  tok: tokenization.Tokenizer  # Maps predicted tokens back to text.
  skipped: int = 0  # Training examples whose answer was not found.

  def arrays(self) -> dict[str, np.ndarray]:
    """The model inputs and training targets."""
    return {"input_ids": self.input_ids, "input_mask": self.input_mask,
            "segment_ids": self.segment_ids,
            "start_positions": self.start_positions,
            "end_positions": self.end_positions,
            "is_impossible": self.is_impossible}


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


def improve_answer_span(doc: Sequence[int], start: int, end: int,
                        answer_ids: Sequence[int],
                        piece: Callable[[int], str] | None = None
                        ) -> tuple[int, int]:
  """The first (longest-first) sub-span of doc tokens `start..end` that
  is the tokenized answer, else `(start, end)` (the reference's
  `_improve_answer_span`, on ids).

  With `piece` (token id -> its characters), spans match when their
  characters do: sentencepiece segments an answer cut out of a word
  ("1895" in "(1895-1943).") differently on its own ("▁1895").
  """
  def key(ids):
    return "".join(map(piece, ids)) if piece else list(ids)
  answer = key(answer_ids)
  for new_start in range(start, end + 1):
    for new_end in range(end, new_start - 1, -1):
      if key(doc[new_start:new_end + 1]) == answer:
        return new_start, new_end
  return start, end


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
  sp_piece = None  # Sentencepiece: a piece's characters, "▁" dropped.
  if tok.kind == "sentencepiece":
    sp_piece = lambda i: tok.id_to_token(i).replace("\u2581", "")
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
    if target is not None:  # Word span -> token span.
      target = improve_answer_span(
          doc, word_start[target[0]], word_start[target[1] + 1] - 1,
          tok.encode(ex.answers[0]), sp_piece)
    query = queries[index][:max_query_length]
    room = max_seq_length - len(query) - 3
    if room <= 0:
      raise errors.UserError(f"max_seq_length={max_seq_length} leaves no room for "
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
        t_start, t_end = target
        if start <= t_start and t_end < start + length:
          s_pos, e_pos = t_start - start + offset, t_end - start + offset
      n = len(ids)
      rows["input_ids"].append(ids + [pad] * (max_seq_length - n))
      rows["input_mask"].append([1] * n + [0] * (max_seq_length - n))
      rows["segment_ids"].append([0] * offset + [1] * (length + 1)
                                 + [0] * (max_seq_length - n))
      rows["start_positions"].append(s_pos)
      rows["end_positions"].append(e_pos)
      rows["is_impossible"].append(ex.is_impossible)
      rows["example_index"].append(index)
      rows["token_to_word"].append(t2w)
      rows["max_context"].append(best)
  if not rows:
    raise errors.UserError("No QA features: every example was skipped.")
  arrays = {k: np.asarray(v, np.bool_ if k == "max_context" else np.int32)
            for k, v in rows.items()}
  return QAFeatures(**arrays, words=all_words, tok=tok, skipped=skipped)




def _softmax(x: np.ndarray) -> np.ndarray:
  e = np.exp(x - np.max(x))
  return e / e.sum()


def _valid(features: QAFeatures, f: int, s: np.ndarray, e: np.ndarray,
           max_answer_length: int) -> np.ndarray:
  """Whether tokens s..e of window f may be an answer (elementwise over
  index arrays): both in the context, s scored in this window (max
  context), and at most `max_answer_length` tokens."""
  t2w = features.token_to_word[f]
  return ((t2w[s] >= 0) & (t2w[e] >= 0) & features.max_context[f][s]
          & (s <= e) & (e < s + max_answer_length))


def _spans(score: np.ndarray, f: int, s: np.ndarray, e: np.ndarray,
           valid: np.ndarray) -> list[tuple[float, int, int, int]]:
  return [(float(score[i]), f, int(s[i]), int(e[i]))
          for i in zip(*np.nonzero(valid))]


def _electra_candidates(out: dict[str, np.ndarray], features: QAFeatures,
                        windows: list[int], max_answer_length: int):
  """(score, window, start, end) over each window's start beam and each
  start's end beam, and the no-answer score (min answerable logit)."""
  spans = []
  for f in windows:
    e = out["end_top_index"][f]  # [K, K]
    s = np.broadcast_to(out["start_top_index"][f][:, None], e.shape)
    score = (out["start_top_log_probs"][f][:, None]
             + out["end_top_log_probs"][f])
    spans += _spans(score, f, s, e, _valid(features, f, s, e,
                                           max_answer_length))
  return spans, float(min(out["answerable_logit"][f] for f in windows))


def _bert_candidates(out: dict[str, np.ndarray], features: QAFeatures,
                     windows: list[int], n_best_size: int,
                     max_answer_length: int):
  """(score, window, start, end) over each window's n-best context starts
  and ends, and the null ([CLS] span) score minimised over windows."""
  spans, null = [], np.inf
  for f in windows:
    s_log, e_log = out["start_logits"][f], out["end_logits"][f]
    null = min(null, float(s_log[0] + e_log[0]))
    in_doc = features.token_to_word[f] >= 0
    top_s = np.argsort(-np.where(in_doc, s_log, -np.inf))[:n_best_size]
    top_e = np.argsort(-np.where(in_doc, e_log, -np.inf))[:n_best_size]
    s, e = np.meshgrid(top_s, top_e, indexing="ij")
    spans += _spans(s_log[s] + e_log[e], f, s, e,
                    _valid(features, f, s, e, max_answer_length))
  return spans, null


def decode(examples: Sequence[QAExample], features: QAFeatures,
           outputs: dict[str, np.ndarray], *, head: str, n_best_size: int,
           max_answer_length: int, na_threshold: float,
           version_2: bool) -> dict[str, dict[str, Any]]:
  """Best answer and n-best list per example from the windows' outputs.

  Args:
    examples: the examples `features` were built from.
    features: their windows.
    outputs: the `TaskModel` qa outputs of every window (numpy).
    head: "electra" or "bert" (which outputs, which scores).
    n_best_size: candidates kept per example (and, "bert", starts and ends
      per window).
    max_answer_length: longest span, in tokens.
    na_threshold: SQuAD 2.0 answers "" when the no-answer score (see the
      module docstring) exceeds it.
    version_2: whether "" (no answer) is a possible prediction.

  Returns:
    `{id: {"text", "best_span", "nbest": [{"text", "score",
    "probability"}]}}` plus, for SQuAD 2.0, the `na_score`. `best_span` is
    the best non-null text ("" if no span is valid).
  """
  by_example = collections.defaultdict(list)
  for f, index in enumerate(features.example_index):
    by_example[int(index)].append(f)
  basic = squad_eval.basic_tokenizer(features.tok)
  out = {}
  for index, ex in enumerate(examples):
    windows = by_example[index]
    if head == "electra":
      spans, na = _electra_candidates(outputs, features, windows,
                                      max_answer_length)
    else:
      spans, null = _bert_candidates(outputs, features, windows, n_best_size,
                                     max_answer_length)
    spans.sort(key=lambda x: -x[0])
    words, nbest, seen = features.words[index], [], set()
    for score, f, s, e in spans:
      w0, w1 = features.token_to_word[f, s], features.token_to_word[f, e]
      text = squad_eval.get_final_text(
          squad_eval.piece_text(features.tok, features.input_ids[f, s:e + 1]),
          " ".join(words[w0:w1 + 1]), basic)
      if text not in seen:
        seen.add(text)
        nbest.append({"text": text, "score": score})
      if len(nbest) == n_best_size:
        break
    best_span = nbest[0]["text"] if nbest else ""
    record = {"text": best_span, "best_span": best_span}
    if version_2:
      if head == "bert":
        na = null - (nbest[0]["score"] if nbest else -np.inf)
        if np.isfinite(null):  # BERT lists the null answer among the best.
          nbest.append({"text": "", "score": null})
          nbest = sorted(nbest, key=lambda c: -c["score"])[:n_best_size]
      record["na_score"] = float(na)
      if na > na_threshold:
        record["text"] = ""
    if nbest:
      probs = _softmax(np.array([c["score"] for c in nbest]))
      for c, p in zip(nbest, probs):
        c["probability"] = float(p)
    out[ex.id] = {**record, "nbest": nbest}
  return out
