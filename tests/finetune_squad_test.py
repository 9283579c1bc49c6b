"""SQuAD features (doc stride, max context, targets, answer-span
tightening), n-best decoding across windows for both heads, the no-answer
threshold, and the official EM/F1 with its threshold search."""

import numpy as np
import pytest

from electra_jax.data import tokenization
from electra_jax.finetune import squad
from electra_jax.finetune import squad_eval
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
  assert not f.is_impossible.any()
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
  assert f.is_impossible.all()  # The question's label, in every window.


def _logits(f, spans):
  """Start/end logits: -5 everywhere, given values at (window, pos)."""
  start = np.full(f.input_ids.shape, -5.0)
  end = np.full(f.input_ids.shape, -5.0)
  for (window, s, e), (ls, le) in spans.items():
    start[window, s] = ls
    end[window, e] = le
  return start, end


def _decode(f, start, end, **kw):
  args = dict(head="bert", n_best_size=5, max_answer_length=4,
              na_threshold=0.0, version_2=False)
  return squad.decode([EXAMPLE], f, {"start_logits": start, "end_logits": end},
                      **{**args, **kw})["q1"]


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
  assert out["na_score"] == pytest.approx(5.5 - 4.0)
  assert out["best_span"] == "w21 w22"
  assert out["text"] == ""
  assert "" in [c["text"] for c in out["nbest"]]
  assert _decode(f, start, end, version_2=True,
                 na_threshold=2.0)["text"] == "w21 w22"
  assert _decode(f, start, end, version_2=False)["text"] == "w21 w22"


def test_em_f1():
  assert squad_eval.normalize_answer("The  Cat, sat!") == "cat sat"
  assert squad_eval.exact_match("the cat", "Cat") == 1.0
  assert squad_eval.f1_score("black cat sat",
                             "the cat sat down") == pytest.approx(
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


def _electra_outputs(f, k=2):
  """Beams that point at [CLS] (never a valid span) everywhere."""
  n = len(f.input_ids)
  return {"start_top_index": np.zeros((n, k), np.int32),
          "start_top_log_probs": np.full((n, k), -1.0),
          "end_top_index": np.zeros((n, k, k), np.int32),
          "end_top_log_probs": np.full((n, k, k), -1.0),
          "answerable_logit": np.zeros(n)}


def test_electra_decoding_over_the_beams(tok):
  f = squad.featurize([EXAMPLE], tok, is_training=False, **KW)
  out = _electra_outputs(f)
  # Window 2: start w21 (position 8), ends w22 (9) and w21 (8).
  out["start_top_index"][2, 0] = 8
  out["start_top_log_probs"][2, 0] = -0.5
  out["end_top_index"][2, 0] = [9, 8]
  out["end_top_log_probs"][2, 0] = [-0.2, -1.0]
  # Window 3 scores w21 higher, but window 2 holds its max context.
  out["start_top_index"][3, 0], out["end_top_index"][3, 0, 0] = 5, 6
  out["start_top_log_probs"][3, 0] = out["end_top_log_probs"][3, 0, 0] = -0.1
  out["answerable_logit"][:] = [0.0, 1.0, -3.0, 2.0, 0.5]  # min -3.
  kw = dict(head="electra", n_best_size=5, max_answer_length=4)
  got = squad.decode([EXAMPLE], f, out, na_threshold=-2.75, version_2=True,
                     **kw)["q1"]
  assert [c["text"] for c in got["nbest"]] == ["w21 w22", "w21"]
  assert got["nbest"][0]["score"] == pytest.approx(-0.7)
  assert got["nbest"][1]["score"] == pytest.approx(-1.5)
  assert got["nbest"][0]["probability"] == pytest.approx(
      1 / (1 + np.exp(-0.8)))
  assert got["na_score"] == -3.0 and got["text"] == "w21 w22"
  # The answerable logit against the threshold decides "no answer".
  got = squad.decode([EXAMPLE], f, out, na_threshold=-3.5, version_2=True,
                     **kw)["q1"]
  assert got["text"] == "" and got["best_span"] == "w21 w22"
  got = squad.decode([EXAMPLE], f, out, na_threshold=-3.5, version_2=False,
                     **kw)["q1"]
  assert got["text"] == "w21 w22" and "na_score" not in got


# Words split by WordPiece's punctuation rule; "born" and "?" are [UNK].
REAL_VOCAB = testing.SPECIALS + (
    "the leader was john smith ( 1895 - 1943 ) . s ' steve".split())
REAL_CONTEXT = "The leader was John Smith (1895-1943)."


@pytest.fixture(scope="module")
def real_tok(tmp_path_factory):
  path = tmp_path_factory.mktemp("real") / "vocab.txt"
  path.write_text("\n".join(REAL_VOCAB) + "\n")
  return tokenization.load_tokenizer(str(path))


def test_improve_answer_span():
  doc = [5, 6, 7, 8, 9]
  assert squad.improve_answer_span(doc, 1, 4, [7]) == (2, 2)
  assert squad.improve_answer_span(doc, 1, 4, [6, 7]) == (1, 2)
  assert squad.improve_answer_span(doc, 1, 4, [7, 7]) == (1, 4)  # None.
  assert squad.improve_answer_span(doc, 1, 4, [5]) == (1, 4)  # Outside.


def test_training_span_is_the_tokenized_answer(real_tok):
  ex = squad.QAExample("r", "born?", REAL_CONTEXT, ("1895",),
                       (REAL_CONTEXT.index("1895"),))
  f = squad.featurize([ex], real_tok, max_seq_length=24, max_query_length=8,
                      doc_stride=8, is_training=True)
  # [CLS] [UNK] [UNK] [SEP] the leader was john smith ( 1895 ...: the word
  # "(1895-1943)." is tokens 9-15, the answer token 10 alone.
  assert real_tok.id_to_token(int(f.input_ids[0, 10])) == "1895"
  assert (f.start_positions[0], f.end_positions[0]) == (10, 10)


def test_get_final_text(real_tok):
  basic = squad_eval.basic_tokenizer(real_tok)
  assert basic("Steve Smith's") == ["steve", "smith", "'", "s"]
  final = squad_eval.get_final_text
  assert final("steve smith", "Steve Smith's", basic) == "Steve Smith"
  assert final("1895", "(1895-1943).", basic) == "1895"
  assert final("cafe", "Café!", basic) == "Café"  # Accents come back.
  assert final("dog", "Steve Smith's", basic) == "Steve Smith's"
  # Decoding maps a token span inside a word back to its characters.
  ex = squad.QAExample("r", "born?", REAL_CONTEXT)
  f = squad.featurize([ex], real_tok, max_seq_length=24, max_query_length=8,
                      doc_stride=8, is_training=False)
  start = np.full(f.input_ids.shape, -5.0)
  end = np.full(f.input_ids.shape, -5.0)
  start[0, 10] = end[0, 10] = 5.0
  got = squad.decode([ex], f, {"start_logits": start, "end_logits": end},
                     head="bert", n_best_size=3, max_answer_length=4,
                     na_threshold=0.0, version_2=False)["r"]
  assert got["text"] == "1895"
  assert squad_eval.piece_text(real_tok, f.input_ids[0, 8:10]) == "smith ("


def test_official_v2_scores_and_threshold_search():
  golds = {"a": ("red fox",), "b": (), "c": ("blue sky",), "d": (),
           "e": ("green",)}
  examples = [squad.QAExample(i, "q", "c", g, is_impossible=not g)
              for i, g in golds.items()]
  spans = {"a": "red fox", "b": "cat", "c": "blue", "d": "dog",
           "e": "yellow"}
  na = {"a": -5.0, "b": -1.0, "c": -3.0, "d": 2.0, "e": 0.0}
  preds = {i: {"text": spans[i] if na[i] <= -2.75 else "",
               "best_span": spans[i], "na_score": na[i]} for i in golds}
  got = squad.evaluate(examples, preds)
  # Answered: a (EM 1, F1 1), c (EM 0, F1 2/3); "" is right for b and d.
  assert got["exact_match"] == pytest.approx(3 / 5)
  assert got["f1"] == pytest.approx((1 + 2 / 3 + 2) / 5)
  assert got["HasAns_exact"] == pytest.approx(1 / 3)
  assert got["HasAns_f1"] == pytest.approx((1 + 2 / 3) / 3)
  assert got["NoAns_exact"] == got["NoAns_f1"] == 1.0
  # By na: a -5, c -3, b -1, e 0, d 2, from 2 (all ""): EM 3, 3, 2, 2, 1;
  # F1 3, 3 + 2/3, 2 + 2/3, 2 + 2/3, 1 + 2/3.
  assert got["best_exact"] == pytest.approx(3 / 5)
  assert got["best_exact_thresh"] == -5.0
  assert got["best_f1"] == pytest.approx((3 + 2 / 3) / 5)
  assert got["best_f1_thresh"] == -3.0
  # Answering nothing is best when every span is wrong: threshold 0.0.
  wrong = {i: {**p, "best_span": "zzz"} for i, p in preds.items()}
  got = squad.evaluate(examples, wrong)
  assert got["best_f1"] == pytest.approx(2 / 5)
  assert got["best_f1_thresh"] == 0.0


def test_sentencepiece_spans_and_final_text(tmp_path):
  sents = [REAL_CONTEXT, "Steve Smith's car is red.", "A cafe in Paris."]
  tok = tokenization.load_tokenizer(tokenization.train_sentencepiece(
      [], str(tmp_path / "sp"), 40, sentences=iter(sents * 50)))
  basic = squad_eval.basic_tokenizer(tok)
  assert basic("Steve Smith's") == ["steve", "smith's"]  # Case folded.
  # Alone, "1895" starts a word ("▁" first); inside "(1895-1943)." not.
  assert tok.encode("1895") != tok.encode("(1895")[-len(tok.encode("1895")):]
  assert squad.improve_answer_span([7, 8, 9], 0, 2, [8]) == (1, 1)
  ex = squad.QAExample("r", "born?", REAL_CONTEXT, ("1895",),
                       (REAL_CONTEXT.index("1895"),))
  f = squad.featurize([ex], tok, max_seq_length=64, max_query_length=8,
                      doc_stride=8, is_training=True)
  s, e = int(f.start_positions[0]), int(f.end_positions[0])
  pred = squad_eval.piece_text(tok, f.input_ids[0, s:e + 1])
  assert pred == "1895"
  assert squad_eval.get_final_text(pred, "(1895-1943).", basic) == "1895"
