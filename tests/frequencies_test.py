"""Token frequencies of a split: which examples are counted, and how."""

import numpy as np

from electra_jax.data import frequencies
from tests import testing
from tests.testing import CLS, L, PAD, SEP

SPECIALS = (PAD, CLS, SEP, 4)


def expected(examples, vocab=1000, add=0.0):
  """Log-frequencies of `testing.example(i)` for i in `examples`."""
  counts = np.zeros(vocab)
  for i in examples:
    ids, _ = testing.example(i)
    counts += np.bincount(ids, minlength=vocab)
  counts += add
  counts[list(SPECIALS)] = 0
  with np.errstate(divide="ignore"):
    return np.log(counts / counts.sum())


def test_a_small_split_is_counted_in_full(tmp_path):
  data = testing.write_dataset(tmp_path, num_train=300, num_eval=40)
  got = frequencies.unigram_log_probs(data, 1000, L, split="train",
                                      exclude=SPECIALS)
  np.testing.assert_allclose(got, expected(range(300)), rtol=1e-5)
  smoothed = frequencies.unigram_log_probs(data, 1000, L, split="train",
                                           exclude=SPECIALS, add=1.0)
  np.testing.assert_allclose(smoothed, expected(range(300), add=1.0),
                             rtol=1e-5)


def test_a_large_split_is_sampled_from_start_to_end(tmp_path):
  # Example i holds token i + 10, so the finite entries say which examples
  # were read: runs of 256 spread over the split (its first and last here),
  # not only its first examples.
  data = testing.write_dataset(tmp_path, num_train=980, num_eval=40, files=4)
  got = frequencies.unigram_log_probs(data, 1000, L, split="train",
                                      exclude=SPECIALS, max_examples=512)
  read = [*range(0, 256), *range(768, 980)]
  np.testing.assert_allclose(got, expected(read), rtol=1e-5)
  wider = frequencies.unigram_log_probs(data, 1000, L, split="train",
                                        exclude=SPECIALS, max_examples=768)
  np.testing.assert_allclose(
      wider, expected([*range(0, 256), *range(512, 768), *range(768, 980)]),
      rtol=1e-5)
