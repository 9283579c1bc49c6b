"""Speed of the pretraining input pipeline: training batches per second.

  python benchmarks/input_pipeline.py --data_dir=data/mine \
      [--batch_size=128] [--seconds=10]

Reads training batches from preprocessed data in one process, as training
does (`input_pipeline.make_train_iterator`, prefetch thread included), and
prints batches/s and tokens/s. Without --data_dir it uses the built-in
default corpus (built once, as `python -m electra_jax.main` does).
"""

import os
import sys
import time

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
# pylint: disable=wrong-import-position
from electra_jax import defaults
from electra_jax import loop
from electra_jax.data import input_pipeline

flags.DEFINE_string("data_dir", "", "Data; empty: the default corpus.")
flags.DEFINE_integer("batch_size", 128, "Global batch size.", lower_bound=1)
flags.DEFINE_float("seconds", 10.0, "How long to measure.", lower_bound=0)
flags.DEFINE_integer("seed", 0, "Shuffling seed.")
FLAGS = flags.FLAGS


def benchmark(data_dir: str, batch_size: int = 128, seconds: float = 5.0,
              seed: int = 0) -> float:
  """Prints and returns training batches per second (one process)."""
  max_seq_length = input_pipeline.load_metadata(data_dir)["max_seq_length"]
  it = input_pipeline.make_train_iterator(
      data_dir, batch_size=batch_size, seed=seed, process_index=0,
      process_count=1, max_seq_length=max_seq_length)
  next(it)  # Start-up (opening files, the thread) is not counted.
  count, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    next(it)
    count += 1
  rate = count / (time.perf_counter() - start)
  it.close()
  print(f"{rate:.1f} batches/s of {batch_size} x {max_seq_length} "
        f"({rate * batch_size * max_seq_length / 1e6:.2f}M tokens/s) "
        f"from {data_dir}")
  return rate


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  data_dir = FLAGS.data_dir or loop.prepare_data(defaults.get_config())[0]
  benchmark(data_dir, FLAGS.batch_size, FLAGS.seconds, FLAGS.seed)


if __name__ == "__main__":
  app.run(main)
