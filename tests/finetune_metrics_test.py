"""Fine-tuning metrics against scipy and hand-computed values."""

import numpy as np
import pytest
from scipy import stats

from electra_jax.finetune import metrics


def test_accuracy_and_f1_by_hand():
  pred = np.array([1, 1, 0, 0, 1, 0])
  gold = np.array([1, 0, 0, 1, 1, 0])
  assert metrics.accuracy(pred, gold) == pytest.approx(4 / 6)
  # tp = 2, fp = 1, fn = 1 -> F1 = 4 / 6.
  assert metrics.f1(pred, gold) == pytest.approx(4 / 6)
  assert metrics.f1(np.zeros(3), np.zeros(3)) == 0.0


def test_matthews_by_hand_and_degenerate():
  pred = np.array([1, 1, 0, 0, 1, 0, 1, 0])
  gold = np.array([1, 0, 0, 0, 1, 1, 1, 0])
  tp, tn, fp, fn = 3, 3, 1, 1
  want = (tp * tn - fp * fn) / np.sqrt(
      (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
  assert metrics.matthews_corrcoef(pred, gold) == pytest.approx(want)
  assert metrics.matthews_corrcoef(1 - gold, gold) == pytest.approx(-1.0)
  assert metrics.matthews_corrcoef(np.ones(8), gold) == 0.0  # Constant.


def test_multiclass_matthews_matches_a_direct_formula():
  rng = np.random.default_rng(0)
  gold = rng.integers(0, 3, 200)
  pred = np.where(rng.random(200) < 0.6, gold, rng.integers(0, 3, 200))
  c = np.zeros((3, 3))
  np.add.at(c, (gold, pred), 1)
  t, p, s, correct = c.sum(1), c.sum(0), c.sum(), np.trace(c)
  want = (correct * s - t @ p) / np.sqrt((s**2 - p @ p) * (s**2 - t @ t))
  assert metrics.matthews_corrcoef(pred, gold) == pytest.approx(want)


def test_correlations_match_scipy_with_ties():
  rng = np.random.default_rng(1)
  gold = rng.integers(0, 6, 100).astype(float)  # Many ties.
  pred = gold + rng.normal(size=100)
  pred[:10] = 2.5  # Ties in the predictions too.
  assert metrics.pearson(pred, gold) == pytest.approx(
      stats.pearsonr(pred, gold)[0], rel=1e-10)
  assert metrics.spearman(pred, gold) == pytest.approx(
      stats.spearmanr(pred, gold)[0], rel=1e-10)
  np.testing.assert_allclose(metrics.rankdata(pred), stats.rankdata(pred))
  assert metrics.pearson(np.ones(5), np.arange(5)) == 0.0


def test_chunks_and_chunk_f1():
  tags = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "I-ORG", "O"]
  assert metrics.chunks(tags) == {("PER", 0, 1), ("LOC", 3, 3),
                                  ("LOC", 4, 5), ("ORG", 6, 6)}
  gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG"]]
  pred = [["B-PER", "O", "O", "B-LOC"], ["O", "B-ORG"]]
  # Gold chunks 3; predicted 3 (PER 0-0 wrong extent); correct 2.
  assert metrics.chunk_f1(pred, gold) == pytest.approx(2 / 3)
  assert metrics.chunk_f1(gold, gold) == 1.0


def test_compute_and_summarize():
  out = metrics.compute(("accuracy", "mcc"), np.array([1, 0]),
                        np.array([1, 0]))
  assert out == {"accuracy": 1.0, "mcc": 1.0}
  with pytest.raises(ValueError, match="Unknown metric"):
    metrics.compute(("bleu",), np.zeros(2), np.zeros(2))
  with pytest.raises(ValueError, match="predictions for"):
    metrics.accuracy(np.zeros(2), np.zeros(3))
  s = metrics.summarize([0.8, 0.9, 1.0, 0.7])
  assert s["mean"] == pytest.approx(0.85)
  assert s["median"] == pytest.approx(0.85)
  assert s["std"] == pytest.approx(np.std([0.8, 0.9, 1.0, 0.7]))


def test_bio_to_bioes_and_back_by_hand():
  # CoNLL-2000 style BIO (IOB2) -> the reference's BIOES.
  bio = ["B-NP", "I-NP", "I-NP", "B-VP", "O", "B-NP", "B-PP", "I-PP"]
  assert metrics.to_bioes(bio) == [
      "B-NP", "I-NP", "E-NP", "S-VP", "O", "S-NP", "B-PP", "E-PP"]
  assert metrics.to_bio(metrics.to_bioes(bio)) == bio
  # IOB1 (I- opens a span unless it continues one of its type).
  assert metrics.to_bioes(["I-NP", "I-NP", "I-VP", "O", "I-NP"]) == [
      "B-NP", "E-NP", "S-VP", "O", "S-NP"]
  # Ill-formed BIOES predictions: E- closes, S- stands alone, a stray E-/I-
  # opens a span as conlleval's I- does.
  pred = ["E-NP", "I-NP", "S-NP", "E-VP", "B-NP", "E-NP", "E-NP", "I-PP"]
  assert metrics.chunks(pred) == {("NP", 0, 0), ("NP", 1, 1), ("NP", 2, 2),
                                  ("VP", 3, 3), ("NP", 4, 5), ("NP", 6, 6),
                                  ("PP", 7, 7)}
  assert metrics.to_bio(pred) == ["B-NP", "B-NP", "B-NP", "B-VP", "B-NP",
                                  "I-NP", "B-NP", "B-PP"]
  assert metrics.to_bioes([]) == [] and metrics.to_bio(["O"]) == ["O"]


def test_chunk_f1_of_bioes_predictions_by_hand():
  gold = [["B-NP", "I-NP", "B-VP", "O", "B-NP"],
          ["B-PP", "B-NP", "I-NP", "I-NP"]]
  # Gold spans: NP 0-1, VP 2-2, NP 4-4 | PP 0-0, NP 1-3: 5 in all.
  pred = [["B-NP", "E-NP", "S-VP", "O", "B-NP"],  # NP 4-4 via a lone B-.
          ["S-PP", "B-NP", "E-NP", "S-NP"]]  # NP 1-2 and 3-3: wrong extent.
  # Predicted 6 spans; correct: NP 0-1, VP 2-2, NP 4-4, PP 0-0 = 4.
  # P = 4/6, R = 4/5, F1 = 2PR/(P+R) = 8/11.
  assert metrics.chunk_f1(pred, gold) == pytest.approx(8 / 11)
  bio = [metrics.to_bio(p) for p in pred]  # What predict writes.
  assert metrics.chunk_f1(bio, gold) == pytest.approx(8 / 11)
