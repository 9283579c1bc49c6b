"""Speed of the pretraining input pipeline: training batches per second.

  python benchmarks/input_pipeline.py --data_dir=data/mine \
      [--batch_size=128] [--seconds=10]

Reads training batches from preprocessed data in one process, as training
does (`input_pipeline.make_train_iterator`, prefetch thread included), and
prints batches/s, examples/s and tokens/s. Without --data_dir it uses the
built-in default corpus (built once, as `python -m electra_jax.main` does).

  --gcs_emulator [--latency_ms=20]

copies the data into a local GCS emulator and reads it from there as from a
bucket, each request delayed by a round trip if asked.
"""

import os
import socket
import sys
import threading
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
flags.DEFINE_bool("gcs_emulator", False,
                  "Copy the data into a local GCS emulator (fake-gcs-server) "
                  "and read it from there, as from a bucket.")
flags.DEFINE_integer("prefetch", 2, "Batches prepared ahead.", lower_bound=1)
flags.DEFINE_float("latency_ms", 0.0,
                   "With --gcs_emulator: delay each request to the emulator "
                   "by this much, as a bucket's round trip would.",
                   lower_bound=0)

FLAGS = flags.FLAGS


def _delaying_proxy(upstream_port: int, latency: float) -> int:
  """A TCP proxy on a free loopback port that holds each chunk the client
  sends (a request) for `latency` seconds; returns its port."""

  def pump(src, dst, delay):
    try:
      while data := src.recv(1 << 16):
        if delay:
          time.sleep(delay)
        dst.sendall(data)
    except OSError:
      pass
    finally:
      dst.close()

  def serve(listener):
    while True:
      client, _ = listener.accept()
      server = socket.create_connection(("127.0.0.1", upstream_port))
      threading.Thread(target=pump, args=(client, server, latency),
                       daemon=True).start()
      threading.Thread(target=pump, args=(server, client, 0.0),
                       daemon=True).start()

  listener = socket.create_server(("127.0.0.1", 0))
  threading.Thread(target=serve, args=(listener,), daemon=True).start()
  return listener.getsockname()[1]


def benchmark(data_dir: str, batch_size: int = 128, seconds: float = 5.0,
              seed: int = 0, prefetch: int = 2) -> float:
  """Prints and returns training batches per second (one process)."""
  max_seq_length = input_pipeline.load_metadata(data_dir)["max_seq_length"]
  it = input_pipeline.make_train_iterator(
      data_dir, batch_size=batch_size, seed=seed, process_index=0,
      process_count=1, max_seq_length=max_seq_length, prefetch=prefetch)
  next(it)  # Start-up (opening files, the thread) is not counted.
  count, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    next(it)
    count += 1
  rate = count / (time.perf_counter() - start)
  it.close()
  print(f"{rate:.1f} batches/s of {batch_size} x {max_seq_length} "
        f"({rate * batch_size:,.0f} examples/s, "
        f"{rate * batch_size * max_seq_length / 1e6:.2f}M tokens/s) "
        f"from {data_dir}")
  return rate


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  data_dir = FLAGS.data_dir or loop.prepare_data(defaults.get_config())[0]
  if not FLAGS.gcs_emulator:
    benchmark(data_dir, FLAGS.batch_size, FLAGS.seconds, FLAGS.seed,
              FLAGS.prefetch)
    return
  from etils import epath  # pylint: disable=g-import-not-at-top
  from tests import testing  # pylint: disable=g-import-not-at-top
  with testing.gcs_emulator("bench") as env:
    remote = epath.Path("gs://bench/data")
    for path in epath.Path(data_dir).iterdir():
      if path.is_file():
        path.copy(remote / path.name)
    if FLAGS.latency_ms:  # Reads (ArrayRecord's client) go through it.
      port = int(env["CLOUD_STORAGE_EMULATOR_ENDPOINT"].rsplit(":", 1)[1])
      proxy = _delaying_proxy(port, FLAGS.latency_ms / 1000)
      os.environ["CLOUD_STORAGE_EMULATOR_ENDPOINT"] = (
          f"http://127.0.0.1:{proxy}")
    benchmark(str(remote), FLAGS.batch_size, FLAGS.seconds, FLAGS.seed,
              FLAGS.prefetch)


if __name__ == "__main__":
  app.run(main)
