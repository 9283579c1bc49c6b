"""Tests for electra_jax.objective: exact counts and hand-computed values."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import functools  # pylint: disable=g-import-not-at-top
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from electra_jax import diagnostics
from electra_jax import objective

PAD, CLS, SEP, MASK = 0, 1, 2, 3
SPECIALS = (CLS, SEP, MASK)
VOCAB = 40


def _batch(lengths, seq_len, seed=0, extra_specials=()):
  """[CLS] w ... w [SEP] [PAD]...; `extra_specials` = (row, col, id)."""
  rng = np.random.default_rng(seed)
  ids = np.full((len(lengths), seq_len), PAD, np.int32)
  for row, n in enumerate(lengths):
    ids[row, :n] = rng.integers(MASK + 1, VOCAB, n)
    ids[row, 0] = CLS
    ids[row, n - 1] = SEP
  for row, col, special in extra_specials:
    ids[row, col] = special
  mask = (np.arange(seq_len)[None, :] < np.array(lengths)[:, None])
  return jnp.asarray(ids), jnp.asarray(mask.astype(np.int32))


def _mask(rng, ids, mask, mask_prob, **kwargs):
  n = objective.max_predictions_per_seq(mask_prob, ids.shape[1])
  return objective.mask_tokens(
      rng, ids, mask, mask_prob=mask_prob, max_predictions=n,
      mask_id=MASK, special_ids=SPECIALS, **kwargs)


def test_max_predictions_per_seq():
  assert objective.max_predictions_per_seq(0.15, 128) == 19
  assert objective.max_predictions_per_seq(0.25, 512) == 130
  assert objective.max_predictions_per_seq(0.15, 512) == 79


def test_mask_tokens_exact_counts_and_invariants():
  seq_len, mask_prob = 32, 0.25  # N = int(0.255 * 32) = 8.
  # Row 5 has 14 tokens but only 2 candidates (the rest are [MASK]/[SEP]).
  specials = [(5, c, MASK if c % 2 else SEP) for c in range(3, 13)]
  lengths = [32, 10, 14, 6, 3, 14, 2]
  ids, mask = _batch(lengths, seq_len, extra_specials=specials)
  n = objective.max_predictions_per_seq(mask_prob, seq_len)
  assert n == 8
  # max(1, min(8, round_half_even(n * 0.25))); 10 -> 2.5 -> 2, 14 -> 3.5 -> 4.
  k = [8, 2, 4, 2, 1, 4, 1]
  candidates = np.isin(ids, SPECIALS, invert=True) & (np.asarray(mask) > 0)
  expected = np.minimum(k, candidates.sum(1))
  np.testing.assert_array_equal(expected, [8, 2, 4, 2, 1, 2, 0])

  fn = jax.jit(functools.partial(_mask, mask_prob=mask_prob))
  for seed in range(20):
    out = fn(jax.random.key(seed), ids, mask)
    assert out.input_ids.dtype == jnp.int32
    assert out.positions.dtype == jnp.int32
    assert out.targets.dtype == jnp.int32
    assert out.weights.dtype == jnp.float32
    assert out.positions.shape == out.weights.shape == (len(lengths), n)
    ids_np, new_ids = np.asarray(ids), np.asarray(out.input_ids)
    weights = np.asarray(out.weights)
    assert set(np.unique(weights)) <= {0.0, 1.0}
    np.testing.assert_array_equal(weights.sum(1), expected)
    np.testing.assert_array_equal(
        out.targets, np.take_along_axis(ids_np, out.positions, 1))
    for row in range(len(lengths)):
      real = np.asarray(out.positions[row])[weights[row] > 0]
      assert len(set(real.tolist())) == len(real)  # Distinct.
      assert candidates[row, real].all()  # No pads, no specials.
      # Only chosen positions may change, and only to [MASK].
      changed = np.flatnonzero(new_ids[row] != ids_np[row])
      assert set(changed.tolist()) <= set(real.tolist())
      assert (new_ids[row, changed] == MASK).all()
  # Only-specials row: nothing chosen, input unchanged.
  np.testing.assert_array_equal(out.input_ids[6], ids[6])


def test_mask_tokens_counts_all_lengths():
  # As tf: round(float32(num_tokens) * float32(mask_prob)), half to even.
  lengths = np.arange(2, 33)
  ids, mask = _batch(lengths, 32)
  out = _mask(jax.random.key(0), ids, mask, 0.15)  # N = 4.
  k = np.round(lengths.astype(np.float32) * np.float32(0.15))
  expected = np.minimum(np.clip(k, 1, 4), lengths - 2)
  np.testing.assert_array_equal(np.asarray(out.weights).sum(1), expected)
  assert expected.tolist().count(4) > 5 and expected.tolist().count(2) > 5


def test_mask_token_split():
  # 1024 rows of 32 tokens, N = 11, 11 real slots per row: 11264 slots.
  ids, mask = _batch([32] * 1024, 32, seed=1)
  fn = jax.jit(functools.partial(_mask, mask_prob=0.35))
  out = fn(jax.random.key(3), ids, mask)
  weights = np.asarray(out.weights)
  assert weights.sum() == 11264
  gathered = np.asarray(
      objective.gather_positions(out.input_ids, out.positions))
  fraction = ((gathered == MASK) * weights).sum() / weights.sum()
  assert abs(fraction - 0.85) < 0.02
  # The rest keep their original id; nothing else ever changes.
  kept = (gathered != MASK) & (weights > 0)
  np.testing.assert_array_equal(gathered[kept], np.asarray(out.targets)[kept])
  changed = np.asarray(out.input_ids) != np.asarray(ids)
  assert (np.asarray(out.input_ids)[changed] == MASK).all()
  assert changed.sum() == ((gathered == MASK) * weights).sum()

  out = fn(jax.random.key(3), ids, mask, mask_token_prob=0.0)
  np.testing.assert_array_equal(out.input_ids, ids)


def test_mask_tokens_determinism():
  ids, mask = _batch([32, 20, 9, 16], 32)
  a = _mask(jax.random.key(7), ids, mask, 0.15)
  b = _mask(jax.random.key(7), ids, mask, 0.15)
  c = _mask(jax.random.key(8), ids, mask, 0.15)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a.positions, c.positions)


@pytest.mark.parametrize("with_replacement", [False, True])
def test_mask_tokens_distinct_positions_as_the_reference(with_replacement):
  # Full rows: 128 tokens, 126 candidates, k = round(128 * 0.15) = 19; short
  # rows: 60 tokens, 58 candidates, k = round(9.0) = 9. Drawing k positions
  # uniformly with replacement (the reference) gives on average
  # n * (1 - (1 - 1/n)^k) distinct ones: 17.70 and 8.40, ~7% fewer.
  ids, mask = _batch([128, 60] * 2048, 128, seed=2)
  out = jax.jit(functools.partial(_mask, mask_prob=0.15,
                                  with_replacement=with_replacement))(
                                      jax.random.key(5), ids, mask)
  weights, positions = np.asarray(out.weights), np.asarray(out.positions)
  candidates = np.isin(ids, SPECIALS, invert=True) & (np.asarray(mask) > 0)
  for row in range(len(ids)):
    real = positions[row][weights[row] > 0]
    assert len(set(real.tolist())) == len(real)  # Each predicted once.
    assert candidates[row, real].all()  # No [CLS], [SEP], [MASK], padding.
  counts = weights.sum(1).reshape(-1, 2).mean(0)
  expected = [19, 9]
  if with_replacement:
    expected = [n * (1 - (1 - 1 / n) ** k) for n, k in ((126, 19), (58, 9))]
    np.testing.assert_allclose(expected, [17.70, 8.40], atol=0.005)
  np.testing.assert_allclose(counts, expected, atol=0.08)  # ~3 std errors.


def test_mask_tokens_with_replacement_keeps_the_first_of_repeats():
  # One candidate and k = round(3 * 0.5) = 2 slots: both draws hit position
  # 1; the first slot predicts it, the second is dropped. Two candidates:
  # the second draw repeats the first with probability 1/2, so 1.5 on
  # average (= 2 * (1 - (1/2)^2)).
  ids, mask = _batch([3] * 2000 + [4] * 2000, 4, seed=3)
  out = _mask(jax.random.key(0), ids, mask, 0.5, with_replacement=True)
  weights, positions = np.asarray(out.weights), np.asarray(out.positions)
  np.testing.assert_array_equal(weights[:2000], [[1.0, 0.0]] * 2000)
  np.testing.assert_array_equal(positions[:2000], [[1, 1]] * 2000)
  assert abs(weights[2000:].sum(1).mean() - 1.5) < 0.04
  np.testing.assert_array_equal(weights[2000:, 0], 1.0)
  assert set(np.unique(positions[2000:])) == {1, 2}


def test_gather_positions():
  x = jnp.arange(2 * 5).reshape(2, 5)
  positions = jnp.array([[4, 0], [1, 1]])
  np.testing.assert_array_equal(
      objective.gather_positions(x, positions), [[4, 0], [6, 6]])
  x3 = jnp.arange(2 * 5 * 3).reshape(2, 5, 3)
  np.testing.assert_array_equal(
      objective.gather_positions(x3, positions),
      np.asarray(x3)[np.arange(2)[:, None], np.asarray(positions)])


def test_sample_low_temperature_is_argmax():
  logits = jax.random.normal(jax.random.key(0), (4, 6, VOCAB))
  sampled = objective.sample_fake_tokens(jax.random.key(1), logits, 1e-6)
  assert sampled.dtype == jnp.int32
  np.testing.assert_array_equal(sampled, jnp.argmax(logits, -1))


def test_sample_disallow():
  # Peaked logits: without `disallow` the argmax is drawn nearly always.
  logits = jax.random.normal(jax.random.key(0), (16, 8, VOCAB)) * 4
  argmax = jnp.argmax(logits, -1)
  rng = jax.random.key(1)
  free = objective.sample_fake_tokens(rng, logits, 1.0)
  assert (free == argmax).mean() > 0.5
  sampled = objective.sample_fake_tokens(rng, logits, 1.0, disallow=argmax)
  assert not (sampled == argmax).any()
  # Logits a permutation of 0..V-1 at temperature 0.01: gaps of 100 swamp
  # the noise, so the runner-up wins every time.
  ranks = jnp.tile(jnp.arange(VOCAB, dtype=jnp.float32), (16, 8, 1))
  logits = jax.random.permutation(
      jax.random.key(2), ranks, axis=-1, independent=True)
  argmax = jnp.argmax(logits, -1)
  sampled = objective.sample_fake_tokens(rng, logits, 0.01, disallow=argmax)
  np.testing.assert_array_equal(sampled, jnp.argsort(logits, -1)[..., -2])


def test_sample_bf16_matches_float32():
  logits = jax.random.normal(jax.random.key(0), (8, 6, VOCAB)) * 3
  logits_bf16 = logits.astype(jnp.bfloat16)
  rng = jax.random.key(4)
  fn = jax.jit(objective.sample_fake_tokens)
  np.testing.assert_array_equal(
      fn(rng, logits_bf16, 0.7), fn(rng, logits_bf16.astype(jnp.float32), 0.7))


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_sample_distribution(temperature):
  vocab_logits = jnp.array([2.0, 1.0, 0.0, -1.0, 0.5])
  logits = jnp.broadcast_to(vocab_logits, (8, 2500, 5))  # 20k draws.
  sampled = objective.sample_fake_tokens(
      jax.random.key(5), logits, temperature)
  freq = np.bincount(np.asarray(sampled).ravel(), minlength=5) / 20_000
  probs = np.asarray(jax.nn.softmax(vocab_logits / temperature))
  np.testing.assert_allclose(freq, probs, atol=0.015)


def test_sample_distribution_many_blocks():
  # 1000 tokens: 8 blocks of the two-level sampler, the last one partial.
  vocab_logits = 2.0 * jax.random.normal(jax.random.key(6), (1000,))
  vocab_logits = vocab_logits.at[:5].set(-jnp.inf)  # Zero probability.
  logits = jnp.broadcast_to(vocab_logits, (40, 1000, 1000))  # 40k draws.
  sampled = np.asarray(objective.sample_fake_tokens(
      jax.random.key(7), logits, 1.0)).ravel()
  freq = np.bincount(sampled, minlength=1000) / sampled.size
  probs = np.asarray(jax.nn.softmax(vocab_logits))
  assert freq[:5].sum() == 0
  np.testing.assert_allclose(freq, probs, atol=0.006)
  for lo, hi in ((0, 128), (384, 512), (896, 1000)):  # Whole blocks.
    assert abs(freq[lo:hi].sum() - probs[lo:hi].sum()) < 0.01


def test_sample_has_no_gradient():
  logits = jnp.ones((1, 2, 5))
  grad = jax.grad(lambda l: jnp.sum(objective.sample_fake_tokens(
      jax.random.key(0), l, 1.0).astype(jnp.float32)))(logits)
  np.testing.assert_array_equal(grad, 0.0)


def test_replace_tokens():
  ids = jnp.array([[1, 10, 11, 12, 2, 0], [1, 20, 21, 2, 0, 0]])
  positions = jnp.array([[1, 3, 5], [2, 1, 0]])
  sampled = jnp.array([[15, 12, 30], [21, 33, 34]])
  weights = jnp.array([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
  fake, labels = objective.replace_tokens(ids, positions, sampled, weights)
  # Row 0: 10 -> 15 (label 1), 12 -> 12 (same: label 0), slot 2 padded.
  # Row 1: 21 -> 21 (label 0), padded slots at 1 and 0 change nothing.
  np.testing.assert_array_equal(
      fake, [[1, 15, 11, 12, 2, 0], [1, 20, 21, 2, 0, 0]])
  np.testing.assert_array_equal(
      labels, [[0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]])
  assert labels.dtype == jnp.int32


def test_mlm_loss_hand_computed():
  logits = jnp.array([[[2.0, 1.0, 0.0], [0.0, 0.0, 3.0], [5.0, 0.0, 0.0]]])
  targets = jnp.array([[0, 1, 2]])
  weights = jnp.array([[1.0, 1.0, 0.0]])  # Third slot is padding.
  sampled = jnp.array([[0, 2, 2]])
  loss, metrics = objective.mlm_loss_and_metrics(
      logits.astype(jnp.bfloat16), targets, weights, sampled)
  nll0 = -2.0 + math.log(math.exp(2) + math.exp(1) + 1)
  nll1 = -0.0 + math.log(2 + math.exp(3))
  assert loss.dtype == jnp.float32
  np.testing.assert_allclose(loss, (nll0 + nll1) / 2, rtol=1e-5)
  r = objective.reduce_metrics(metrics)
  np.testing.assert_allclose(r["masked_lm_loss"], (nll0 + nll1) / 2, rtol=1e-5)
  np.testing.assert_allclose(metrics["masked_lm_loss"][1], 2.0)
  assert r["masked_lm_accuracy"] == 0.5  # Slot 0 right, slot 1 wrong.
  assert r["sampled_masked_lm_accuracy"] == 0.5
  _, metrics = objective.mlm_loss_and_metrics(logits, targets, weights)
  assert "sampled_masked_lm_accuracy" not in metrics


def test_disc_loss_and_metrics_hand_computed():
  logits = jnp.array([[2.0, -1.0, 0.0, 3.0, -4.0, 100.0]])
  labels = jnp.array([[1, 1, 0, 0, 0, 0]])
  input_mask = jnp.array([[1, 1, 1, 1, 1, 0]])  # Last token is padding.
  loss, metrics = objective.disc_loss_and_metrics(logits, labels, input_mask)

  def bce(x, y):
    p = 1 / (1 + math.exp(-x))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))

  expected = (bce(2, 1) + bce(-1, 1) + bce(0, 0) + bce(3, 0) + bce(-4, 0)) / 5
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  # preds (logit > 0) = 1 0 0 1 0 on the real tokens; labels 1 1 0 0 0.
  pairs = {k: tuple(float(v) for v in p) for k, p in metrics.items()}
  assert pairs["disc_accuracy"] == (3.0, 5.0)
  assert pairs["disc_precision"] == (1.0, 2.0)
  assert pairs["disc_recall"] == (1.0, 2.0)
  np.testing.assert_allclose(pairs["disc_loss"], (expected * 5, 5.0), 1e-5)
  # Stable at huge logits.
  loss, _ = objective.disc_loss_and_metrics(
      jnp.array([[1e4, -1e4]]), jnp.array([[0, 1]]), jnp.ones((1, 2)))
  np.testing.assert_allclose(loss, 1e4, rtol=1e-5)


def test_electra_loss_weights_the_two_losses_and_reduce_averages():
  mlm_loss, mlm = objective.mlm_loss_and_metrics(
      jnp.array([[[1.0, 0.0]]]), jnp.array([[1]]), jnp.ones((1, 1)))
  disc_loss, disc = objective.disc_loss_and_metrics(
      jnp.array([[0.5, -0.5]]), jnp.array([[1, 0]]), jnp.ones((1, 2)))
  metrics = {**mlm, **disc}
  total = objective.electra_loss(metrics, gen_weight=2.0, disc_weight=50.0)
  np.testing.assert_allclose(total, 2 * mlm_loss + 50 * disc_loss, rtol=1e-6)
  # MLM only: no disc_loss in the metrics, no RTD term.
  np.testing.assert_allclose(
      objective.electra_loss(mlm, gen_weight=2.0, disc_weight=50.0),
      2 * mlm_loss, rtol=1e-6)
  # Micro-batches: each part divided by the whole batch's counts, so the
  # parts' losses add up to the batch's.
  halves = [objective.disc_loss_and_metrics(
      jnp.array([[x]]), jnp.array([[y]]), jnp.ones((1, 1)))[1]
            for x, y in ((0.5, 1), (-0.5, 0))]
  counts = (jnp.float32(1.0), jnp.float32(2.0))
  summed = sum(objective.electra_loss({**mlm, **h}, gen_weight=0.0,
                                      disc_weight=1.0, counts=counts)
               for h in halves)
  np.testing.assert_allclose(summed, disc_loss, rtol=1e-6)
  # Metrics add leaf by leaf; the average weights by count.
  a = {"x": (jnp.float32(3.0), jnp.float32(1.0))}
  b = {"x": (jnp.float32(1.0), jnp.float32(3.0))}
  assert objective.reduce_metrics(jax.tree.map(jnp.add, a, b)) == {"x": 1.0}
  zero = {"x": (jnp.float32(0.0), jnp.float32(0.0))}
  assert objective.reduce_metrics(zero) == {"x": 0.0}


def test_disc_auc_hand_example():
  probs = [0.1, 0.4, 0.35, 0.8, 0.4, 0.99]
  labels = [0, 0, 1, 1, 1, 0]
  weights = [1, 1, 1, 1, 1, 0]  # The 0.99 negative is padding.
  # Pairs (pos, neg): .35>.1, .35<.4, .8>.1, .8>.4, .4>.1, .4=.4 (half).
  assert diagnostics.disc_auc(probs, labels, weights) == pytest.approx(4.5 / 6)
  assert diagnostics.disc_auc(probs, labels, [1] * 6) == pytest.approx(4.5 / 9)
  assert math.isnan(diagnostics.disc_auc([0.1, 0.2], [1, 1], [1, 1]))


def test_disc_auc_matches_pair_count():
  rng = np.random.default_rng(0)
  probs = rng.integers(0, 6, (4, 16)) / 5  # Many ties.
  labels = rng.integers(0, 2, (4, 16))
  weights = rng.integers(0, 2, (4, 16))
  p, l = probs[weights > 0], labels[weights > 0]
  wins = sum(
      1.0 if a > b else 0.5 if a == b else 0.0
      for a, b in itertools.product(p[l == 1], p[l == 0]))
  expected = wins / ((l == 1).sum() * (l == 0).sum())
  assert diagnostics.disc_auc(
      jnp.asarray(probs, jnp.float32), labels, weights) == pytest.approx(
          expected)


def test_mlm_accuracy_counts_a_tie_as_one_over_the_ties():
  # A constant generator (all logits equal) must not score 1.0.
  vocab = 50
  logits = jnp.zeros((2, 3, vocab))
  targets = jnp.array([[1, 2, 3], [4, 5, 6]])
  _, metrics = objective.mlm_loss_and_metrics(logits, targets,
                                              jnp.ones((2, 3)))
  r = objective.reduce_metrics(metrics)
  np.testing.assert_allclose(r["masked_lm_accuracy"], 1 / vocab, rtol=1e-6)
  # Two-way tie with the target: half right; a unique max stays 1.
  logits = jnp.array([[[3.0, 3.0, 0.0], [0.0, 5.0, 1.0]]])
  _, metrics = objective.mlm_loss_and_metrics(
      logits, jnp.array([[0, 1]]), jnp.ones((1, 2)))
  r = objective.reduce_metrics(metrics)
  np.testing.assert_allclose(r["masked_lm_accuracy"], (0.5 + 1.0) / 2)


def test_disc_logit_spread_is_the_std_over_real_tokens():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 10)).astype(np.float32)
  mask = np.ones((3, 10), np.int32)
  mask[1, 6:] = 0
  mask[2] = 0  # An empty row does not count.
  total, count = diagnostics.disc_logit_spread(jnp.asarray(logits),
                                             jnp.asarray(mask))
  want = logits[0].std() + logits[1, :6].std()
  np.testing.assert_allclose(total, want, rtol=1e-5)
  assert float(count) == 2.0
  const = jnp.full((2, 8), 1.7)
  total, _ = diagnostics.disc_logit_spread(const, jnp.ones((2, 8)))
  assert float(total) < 1e-6


def test_context_gain_is_zero_for_frequency_and_counts_only_mask_slots():
  rng = np.random.default_rng(0)
  freq = rng.dirichlet(np.ones(VOCAB))
  freq[PAD] = 0.0  # Never seen: -inf, floored to the rarest seen id.
  with np.errstate(divide="ignore"):
    uni = jnp.asarray(np.log(freq / freq.sum()), jnp.float32)
  targets = jnp.asarray(rng.integers(MASK + 1, VOCAB, (2, 5)), jnp.int32)
  weights = jnp.asarray([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]], jnp.float32)
  at_mask = jnp.asarray([[1, 1, 0, 1, 1], [1, 1, 1, 1, 1]], bool)
  # A generator that guesses by frequency alone gains nothing.
  by_freq = jnp.broadcast_to(uni, targets.shape + (VOCAB,))
  by_freq = jnp.where(jnp.isfinite(by_freq), by_freq, -1e9)
  total, count = diagnostics.context_gain(by_freq, targets, weights, at_mask,
                                        uni)
  assert float(count) == 6.0  # Real slots that hold [MASK].
  np.testing.assert_allclose(float(total), 0.0, atol=1e-4)
  # One that is sure of the target gains its unigram surprisal, in nats.
  sure = 30.0 * jax.nn.one_hot(targets, VOCAB)
  total, count = diagnostics.context_gain(sure, targets, weights, at_mask, uni)
  w = np.asarray(weights) * np.asarray(at_mask)
  want = (-np.asarray(uni)[np.asarray(targets)] * w).sum()
  np.testing.assert_allclose(float(total), want, rtol=1e-4)
  # A target never seen in the held-out text counts as the rarest seen id.
  pad_target = targets.at[0, 0].set(PAD)
  total, _ = diagnostics.context_gain(sure, pad_target, weights, at_mask, uni)
  u = np.asarray(uni)
  slot_before = -u[int(targets[0, 0])] - 0.0  # Sure and right: nll ~ 0.
  slot_after = -u[1:].min() - float(jax.nn.logsumexp(sure[0, 0]))
  np.testing.assert_allclose(float(total), want - slot_before + slot_after,
                             rtol=1e-4)
