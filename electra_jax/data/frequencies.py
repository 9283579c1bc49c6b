"""Token frequencies of a preprocessed split, for the pretraining diagnostics.

The eval split's frequencies give `disc_auc_unigram` its fakes; the training
split's, smoothed, are the baseline of `masked_lm_context_gain` (see
`loop.unigram_frequencies`).
"""

import numpy as np

from electra_jax.data import input_pipeline


def unigram_log_probs(data_dir: str, vocab_size: int, max_seq_length: int,
                      split: str = "eval", exclude: tuple[int, ...] = (),
                      max_examples: int = 20_480, add: float = 0.0):
  """Log relative frequencies [vocab] of the tokens of a split.

  Counted over at most `max_examples` examples in runs of 256 consecutive
  ones spread evenly over the split: a sample of the whole corpus (its first
  examples may all be one kind of text), read as a few sequential reads per
  file, several files at once (a corpus in a bucket is not read in full at
  every start). Then `add` for every id not in `exclude`. Ids in `exclude`
  (the special tokens), and with `add=0` ids never seen, get -inf: fakes
  drawn from this are ordinary tokens of the text; with no such token, every
  id outside `exclude` is equally likely.
  """
  source = input_pipeline.ExampleSource(data_dir, split, max_seq_length,
                                        read_threads=8)
  runs = np.arange(0, len(source), 256)
  keep = np.linspace(0, len(runs) - 1, max(1, max_examples // 256))
  runs = runs[np.unique(keep.round().astype(int))] if len(runs) else runs
  keys = (runs[:, None] + np.arange(256)).ravel()
  keys = keys[keys < len(source)]
  counts = np.zeros(vocab_size, np.float64)
  try:
    for chunk in np.array_split(keys, -(-len(keys) // 2048) or 1):
      ids = source.batch(chunk)
      real = ids["input_mask"].astype(bool)
      counts += np.bincount(ids["input_ids"][real], minlength=vocab_size)
  finally:
    source.close()
  counts += add
  counts[list(exclude)] = 0
  if not counts.sum():
    counts[:] = 1.0
    counts[list(exclude)] = 0
  with np.errstate(divide="ignore"):
    return np.log(counts / counts.sum()).astype(np.float32)
