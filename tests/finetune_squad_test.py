"""SQuAD features (doc stride, max context, targets), n-best decoding across
windows, the no-answer threshold, and the official EM/F1."""

import numpy as np
import pytest

from electra_jax.data import tokenization
from electra_jax.finetune import squad
from tests import testing

# 20 context words w10..w29; the answer "w21 w22" is words 11-12.
CONTEXT = " ".join(f"w{i}" for i in range(10, 30))
ANSWER_START = CONTEXT.index("w21")
EXAMPLE = squad.QAExample("q1", "w5", CONTEXT, ("w21 w22",), (ANSWER_START,))
# Length 12 = [CLS] w5 [SEP] + 8 context tokens + [SEP]; stride 3.
KW = dict(max_seq_length=12, max_query_length=4, doc_stride=3)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
  return tokenization.load_tokenizer(
      testing.write_vocab(str(tmp_path_factory.mktemp("vocab"))))


def test_split_words():
  words, char_to_word = squad.split_words(" The  cat\tsat. ")
  assert words == ["The", "cat", "sat."]
  assert char_to_word[1] == 0 and char_to_word[6] == 1
  assert char_to_word[10] == 2 and len(char_to_word) == 15


def test_windows_targets_and_max_context(tok):
  f = squad.featurize([EXAMPLE], tok, is_training=True, **KW)
  # Windows start at 0, 3, 6, 9, 12 and hold 8 context tokens each.
  assert len(f.input_ids) == 5
  np.testing.assert_array_equal(f.token_to_word[:, 3],
                                [0, 3, 6, 9, 12])
  assert list(f.segment_ids[0]) == [0] * 3 + [1] * 9
  assert list(f.input_mask[0]) == [1] * 12
  # The answer (tokens 11-12) lies inside windows 2 (6..13) and 3 (9..16).
  assert list(f.start_positions) == [0, 0, 3 + 11 - 6, 3 + 11 - 9, 0]
  assert list(f.end_positions) == [0, 0, 3 + 12 - 6, 3 + 12 - 9, 0]
  # Every context token is scored in exactly one window.
  scored = np.zeros(20, int)
  for w in range(5):
    for j in np.flatnonzero(f.max_context[w]):
      scored[f.token_to_word[w, j]] += 1
  assert list(scored) == [1] * 20
  # Token 11: min(left, right) is 2 in windows 2 and 3; the first wins.
  starts = [0, 3, 6, 9, 12]
  owners = [w for w, start in enumerate(starts)
            if 0 <= 11 - start < 8 and f.max_context[w, 3 + 11 - start]]
  assert owners == [2]


def test_training_drops_examples_whose_answer_is_missing(tok):
  bad = squad.QAExample("q2", "w5", CONTEXT, ("w99",), (0,))
  impossible = squad.QAExample("q3", "w5", CONTEXT, is_impossible=True)
  f = squad.featurize([bad, impossible], tok, is_training=True, **KW)
  assert f.skipped == 1
  assert set(f.example_index) == {1}
  assert not f.start_positions.any() and not f.end_positions.any()


def _logits(f, spans):
  """Start/end logits: -5 everywhere, given values at (window, pos)."""
  start = np.full(f.input_ids.shape, -5.0)
  end = np.full(f.input_ids.shape, -5.0)
  for (window, s, e), (ls, le) in spans.items():
    start[window, s] = ls
    end[window, e] = le
  return start, end


def _decode(f, start, end, **kw):
  args = dict(n_best_size=5, max_answer_length=4, na_threshold=0.0,
              version_2=False)
  return squad.decode([EXAMPLE], f, start, end, **{**args, **kw})["q1"]


def test_nbest_merges_windows(tok):
  f = squad.featurize([EXAMPLE], tok, is_training=False, **KW)
  # Window 2 (tokens 6..13 at positions 3..10): tokens 11-12, score 9.
  # Window 1 (tokens 3..10): token 6 (its max-context window), score 6.
  start, end = _logits(f, {(2, 8, 9): (4.0, 5.0), (1, 6, 6): (3.0, 3.0)})
  out = _decode(f, start, end)
  assert out["text"] == "w21 w22"
  texts = [c["text"] for c in out["nbest"]]
  assert texts[:2] == ["w21 w22", "w16"]
  assert out["nbest"][0]["score"] == pytest.approx(9.0)
  assert out["nbest"][1]["score"] == pytest.approx(6.0)
  assert sum(c["probability"] for c in out["nbest"]) == pytest.approx(1.0)
  assert len(texts) == len(set(texts)) == 5  # Deduplicated, n_best_size.


def test_spans_failing_constraints_are_skipped(tok):
  f = squad.featurize([EXAMPLE], tok, is_training=False, **KW)
  # Token 11 in window 3 (position 5) is not max-context: window 2 is.
  start, end = _logits(f, {(3, 5, 5): (9.0, 9.0), (2, 6, 7): (1.0, 1.0)})
  assert _decode(f, start, end)["text"] == "w19 w20"
  # From token 9 (position 6 of window 2): ending at position 10 is 5
  # tokens (> 4), at position 4 is before the start, at position 2 is the
  # question's [SEP]. Only the low-scoring end at position 7 is left.
  start, end = _logits(f, {(2, 6, 10): (9.0, 9.0)})
  end[2, 7], end[2, 4], end[2, 2] = 1.0, 15.0, 20.0
  assert _decode(f, start, end)["text"] == "w19 w20"


def test_no_answer_threshold(tok):
  f = squad.featurize([EXAMPLE], tok, is_training=False, **KW)
  start, end = _logits(f, {(2, 8, 9): (2.0, 2.0)})
  start[:, 0], end[:, 0] = 3.0, 3.0  # Null score 6 in every window ...
  start[4, 0] = 2.5  # ... but the minimum over windows is 5.5.
  out = _decode(f, start, end, version_2=True)
  assert out["null_score_diff"] == pytest.approx(5.5 - 4.0)
  assert out["text"] == ""
  assert "" in [c["text"] for c in out["nbest"]]
  assert _decode(f, start, end, version_2=True,
                 na_threshold=2.0)["text"] == "w21 w22"
  assert _decode(f, start, end, version_2=False)["text"] == "w21 w22"


def test_em_f1():
  assert squad.normalize_answer("The  Cat, sat!") == "cat sat"
  assert squad.exact_match("the cat", "Cat") == 1.0
  assert squad.f1_score("black cat sat", "the cat sat down") == pytest.approx(
      2 * (2 / 3) * (2 / 3) / (4 / 3))
  examples = [squad.QAExample("a", "q", "c", ("red fox", "fox")),
              squad.QAExample("b", "q", "c", is_impossible=True),
              squad.QAExample("c", "q", "c", ("blue",))]
  preds = {"a": {"text": "the fox"}, "b": {"text": ""},
           "c": {"text": "green"}}
  got = squad.evaluate(examples, preds)
  assert got["exact_match"] == pytest.approx(2 / 3)
  assert got["f1"] == pytest.approx(2 / 3)
  preds["b"] = {"text": "something"}
  assert squad.evaluate(examples, preds)["exact_match"] == pytest.approx(1 / 3)
