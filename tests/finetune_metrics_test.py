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
