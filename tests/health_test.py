"""The collapse detector: the pure check, and a run made to collapse."""

import logging

from electra_jax import health
from electra_jax import loop
from electra_jax import plot
from tests import testing

_KW = dict(num_warmup_steps=100, min_auc=0.55, min_logit_std=0.05)


def test_collapse_needs_chance_auc_or_flat_logits_after_warmup():
  healthy = {"disc_auc": 0.83, "disc_logit_std": 2.1}
  assert health.collapse_warning(healthy, 500, **_KW) is None
  chance = {"disc_auc": 0.52, "disc_logit_std": 1.0}
  assert "collapsed" in health.collapse_warning(chance, 500, **_KW)
  flat = {"disc_auc": 0.7, "disc_logit_std": 0.001}
  warning = health.collapse_warning(flat, 500, **_KW)
  assert "logit std across positions 0.0010" in warning
  assert "objective.temperature=2" in warning  # Says what to change.
  # Not judged during warmup, nor for an MLM-only run.
  assert health.collapse_warning(chance, 100, **_KW) is None
  assert health.collapse_warning({"masked_lm_loss": 3.0}, 500, **_KW) is None


def test_a_run_made_to_collapse_is_reported(tmp_path, caplog):
  # With a learning rate of 0 the discriminator never leaves its init:
  # chance AUC.
  config = testing.tiny_config(str(tmp_path / "data"), steps=4)
  config.optimizer.learning_rate = 0.0
  config.optimizer.num_warmup_steps = 1
  config.eval.every_steps = 2
  config.eval.num_batches = 2
  workdir = tmp_path / "run"
  with caplog.at_level(logging.WARNING):
    loop.train_and_evaluate(config, str(workdir))
  warnings = [r.getMessage() for r in caplog.records
              if "has collapsed" in r.getMessage()]
  assert len(warnings) == 2, warnings  # Eval at steps 2 and 4.
  scalars = plot.load_scalars(str(workdir))
  assert [v for _, v in scalars["eval/disc_collapsed"]] == [1.0, 1.0]
  assert all(abs(v - 0.5) < 0.05 for _, v in scalars["eval/disc_auc"])
  assert len(scalars["eval/disc_logit_std"]) == 2
  assert "eval/disc_auc_unigram" in scalars
  # An untrained generator is near uniform: worse than word frequency.
  assert all(v < 0 for _, v in scalars["eval/masked_lm_context_gain"])


def test_summary_says_what_the_final_eval_means():
  base = {"masked_lm_accuracy": 0.25, "disc_collapsed": 0.0}
  text = health.summary({**base, "disc_auc": 0.83, "disc_auc_unigram": 0.71})
  assert "0.830 (AUC; chance is 0.5)" in text and "from context" in text
  text = health.summary({**base, "disc_auc": 0.80, "disc_auc_unigram": 0.53})
  assert "mostly from which tokens are rare" in text
  text = health.summary({**base, "disc_auc": 0.52, "disc_auc_unigram": 0.5,
                         "disc_collapsed": 1.0})
  assert "collapsed" in text
  assert "MLM only" in health.summary({"masked_lm_accuracy": 0.3})
  text = health.summary({**base, "masked_lm_context_gain": 0.12,
                         "disc_auc": 0.8, "disc_auc_unigram": 0.6})
  assert "mostly by word frequency (0.12 nats" in text
  text = health.summary({"masked_lm_accuracy": 0.4,
                         "masked_lm_context_gain": 1.3})
  assert "reads its context (1.30 nats" in text


def test_unigram_distribution_of_the_eval_split(tmp_path):
  # Frequencies of ordinary tokens only; specials and unseen ids never drawn.
  import numpy as np  # pylint: disable=g-import-not-at-top
  # pylint: disable=g-import-not-at-top
  from electra_jax import loop
  from electra_jax.data import frequencies
  from electra_jax.data import input_pipeline
  # pylint: enable=g-import-not-at-top
  config = testing.tiny_config(str(tmp_path / "data"))
  data_dir, _ = loop.prepare_data(config)
  meta = input_pipeline.load_metadata(data_dir)
  specials = tuple(meta[k] for k in ("pad_id", "cls_id", "sep_id", "mask_id"))
  logp = frequencies.unigram_log_probs(
      data_dir, meta["vocab_size"], meta["max_seq_length"], exclude=specials)
  np.testing.assert_allclose(np.exp(logp).sum(), 1.0, rtol=1e-5)
  assert all(logp[i] == -np.inf for i in specials)
  assert np.isfinite(logp).sum() > 50  # Many ordinary tokens seen.


def test_training_frequencies_are_smoothed_for_the_context_gain(tmp_path):
  import numpy as np  # pylint: disable=g-import-not-at-top
  from electra_jax import loop  # pylint: disable=g-import-not-at-top
  from electra_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
  from electra_jax.data import spec as spec_lib  # pylint: disable=g-import-not-at-top
  config = testing.tiny_config(str(tmp_path / "data"))
  data_dir, _ = loop.prepare_data(config)
  spec = spec_lib.DataSpec.from_metadata(
      input_pipeline.load_metadata(data_dir))
  fakes, baseline = loop.unigram_frequencies(data_dir, spec)
  specials = (spec.pad_id, *spec.special_ids)
  for logp in (fakes, baseline):
    np.testing.assert_allclose(np.exp(logp).sum(), 1.0, rtol=1e-5)
    assert all(logp[i] == -np.inf for i in specials)
  ordinary = np.setdiff1d(np.arange(spec.vocab_size), specials)
  assert np.isfinite(baseline[ordinary]).all()  # Add-one: none is -inf.
  assert not np.isfinite(fakes[ordinary]).all()  # Unseen ids never drawn.
