"""SQuAD scoring as the official scripts (v1.1 and v2.0, which
google-research/electra runs), and `get_final_text`, which maps a predicted
token span back onto the original context.

Scores are fractions (not percent), as the other fine-tuning metrics.
SQuAD 2.0 adds, from each question's no-answer score (`na_score`, larger
means "no answer") and its best non-null span, the official threshold
search: `best_exact`/`best_f1` are the scores with the best threshold on
this split, `best_exact_thresh`/`best_f1_thresh` those thresholds.
"""

import collections
import re
import string
from typing import Any, Callable, Sequence

import numpy as np
from tokenizers import normalizers
from tokenizers import pre_tokenizers

from electra_jax.data import tokenization


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


def _raw_scores(ex, text: str) -> tuple[float, float]:
  """(EM, F1) of `text`, the max over gold answers; an unanswerable
  question's only gold answer is ""."""
  golds = [a for a in ex.answers if normalize_answer(a)] or [""]
  return (max(exact_match(text, g) for g in golds),
          max(f1_score(text, g) for g in golds))


def best_threshold(ids: Sequence[str], raw: dict[str, float],
                   spans: dict[str, str], na_scores: dict[str, float],
                   has_ans: dict[str, bool]) -> tuple[float, float]:
  """The official `find_best_thresh`: (best score, its threshold).

  Starting from "no answer everywhere", questions are answered in order of
  increasing `na_score` (ties in `ids` order); each answered question
  gains its raw score if it has an answer, and loses 1 if it has none but
  its span is non-empty. The threshold is the `na_score` of the last
  question answered at the best score (0.0 if answering none is best).
  """
  score = best = float(sum(not has_ans[i] for i in ids))
  thresh = 0.0
  for i in sorted(ids, key=lambda k: na_scores[k]):
    if has_ans[i]:
      score += raw[i]
    elif spans[i]:
      score -= 1
    if score > best:
      best, thresh = score, na_scores[i]
  return best / len(ids), thresh


def evaluate(examples: Sequence[Any],
             predictions: dict[str, dict[str, Any]]) -> dict[str, float]:
  """Mean EM and F1, and for SQuAD 2.0 the official extras.

  Args:
    examples: `squad.QAExample`s; one without answers is unanswerable.
    predictions: `{id: {"text": answer}}`, "" meaning "no answer". With
      `na_score` and `best_span` (the best non-null text) in every
      prediction, also `HasAns_*`/`NoAns_*` and the threshold search.

  Returns:
    `exact_match`, `f1` and the extras, as fractions.
  """
  em, f1, raw_em, raw_f1 = {}, {}, {}, {}
  has_ans = {ex.id: bool(ex.answers) for ex in examples}
  for ex in examples:
    text = predictions[ex.id]["text"]
    if text:
      em[ex.id], f1[ex.id] = _raw_scores(ex, text)
    else:  # The official script's "predicted no answer".
      em[ex.id] = f1[ex.id] = float(not has_ans[ex.id])
  ids = [ex.id for ex in examples]
  out = {"exact_match": float(np.mean([em[i] for i in ids])),
         "f1": float(np.mean([f1[i] for i in ids]))}
  if not all("na_score" in predictions[i] for i in ids):
    return out
  for name, keep in (("HasAns", True), ("NoAns", False)):
    subset = [i for i in ids if has_ans[i] == keep]
    if subset:
      out[f"{name}_exact"] = float(np.mean([em[i] for i in subset]))
      out[f"{name}_f1"] = float(np.mean([f1[i] for i in subset]))
  spans = {i: predictions[i]["best_span"] for i in ids}
  for ex in examples:
    raw_em[ex.id], raw_f1[ex.id] = _raw_scores(ex, spans[ex.id])
  na_scores = {i: float(predictions[i]["na_score"]) for i in ids}
  for name, raw in (("exact", raw_em), ("f1", raw_f1)):
    best, thresh = best_threshold(ids, raw, spans, na_scores, has_ans)
    out[f"best_{name}"], out[f"best_{name}_thresh"] = best, thresh
  return out


def _strip_spaces(text: str) -> tuple[str, list[int]]:
  """`text` without spaces, and each kept character's index in `text`."""
  index = [i for i, ch in enumerate(text) if ch != " "]
  return text.replace(" ", ""), index


def get_final_text(pred_text: str, orig_text: str,
                   basic_tokenize: Callable[[str], list[str]]) -> str:
  """The part of `orig_text` that `pred_text` covers (the reference's
  `get_final_text`).

  `pred_text` is the normalised text of the predicted tokens (lower-cased,
  punctuation split off); `orig_text` the whole context words they came
  from, e.g. "steve smith" in "Steve Smith's" gives "Steve Smith". The
  normalised `orig_text` is aligned with it character for character,
  spaces aside; when that fails, `orig_text` is the answer.

  Args:
    pred_text: the predicted span's normalised text.
    orig_text: the original context words of the span, space-joined.
    basic_tokenize: the tokenizer's normalisation and pre-tokenization
      (BERT's BasicTokenizer for WordPiece).
  """
  tok_text = " ".join(basic_tokenize(orig_text))
  start = tok_text.find(pred_text)
  if not pred_text or start == -1:
    return orig_text
  end = start + len(pred_text) - 1
  orig_ns, orig_map = _strip_spaces(orig_text)
  tok_ns, tok_map = _strip_spaces(tok_text)
  if len(orig_ns) != len(tok_ns):
    return orig_text  # Normalisation changed the length: no alignment.
  tok_to_ns = {s: ns for ns, s in enumerate(tok_map)}
  if start not in tok_to_ns or end not in tok_to_ns:
    return orig_text
  return orig_text[orig_map[tok_to_ns[start]]:orig_map[tok_to_ns[end]] + 1]


def piece_text(tok: tokenization.Tokenizer, ids: Sequence[int]) -> str:
  """The normalised text of token ids: WordPiece "##" pieces or
  sentencepiece "▁" word starts joined back into words."""
  pieces = [tok.id_to_token(int(i)) for i in ids]
  if tok.kind == "wordpiece":
    text = " ".join(pieces).replace(" ##", "").replace("##", "")
  else:
    text = "".join(pieces).replace("\u2581", " ")
  return " ".join(text.split())


def basic_tokenizer(tok: tokenization.Tokenizer) -> Callable[[str], list[str]]:
  """Text -> the normalised words `tok` sees before splitting them into
  pieces: BERT's basic tokenizer for WordPiece (as `tok` is configured),
  the decoded pieces' words for sentencepiece."""
  if tok.kind == "wordpiece":
    norm = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True,
        strip_accents=tok.lowercase, lowercase=tok.lowercase)
    pre = pre_tokenizers.BertPreTokenizer()
    return lambda text: [w for w, _ in pre.pre_tokenize_str(
        norm.normalize_str(text))]
  return lambda text: piece_text(tok, tok.encode(text)).split()
