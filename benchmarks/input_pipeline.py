"""Speed of the pretraining input pipeline: training batches per second.

  python benchmarks/input_pipeline.py --data_dir=data/mine \
      [--batch_size=128] [--seconds=10] [--read_threads=32] [--prefetch=2]

Reads training batches from preprocessed data in one process, as training
does (`input_pipeline.make_train_iterator`, its threads included), and
prints batches/s, examples/s and tokens/s. Without --data_dir it uses the
built-in default corpus (built once, as `python -m electra_jax.main` does).

  --gcs_emulator [--latency_ms=20] [--num_files=1024]

copies the data into a local GCS emulator and reads it from there as from a
bucket, each request delayed by a round trip if asked. --num_files first
splits the train examples over that many files (same examples, same order),
as a large corpus is: preprocessing writes one file per 32 MB of text, so a
batch's examples lie in as many files as it has rows.
"""

import asyncio
import json
import multiprocessing
import os
import sys
import tempfile
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
flags.DEFINE_integer("prefetch", 2, "Batches read ahead, concurrently.",
                     lower_bound=1)
flags.DEFINE_integer("read_threads", input_pipeline.READ_THREADS,
                     "Threads reading files concurrently (1: one at a time).",
                     lower_bound=1)
flags.DEFINE_integer("num_files", 0,
                     "Split the train examples over this many files first "
                     "(0: as they are).", lower_bound=0)
flags.DEFINE_float("latency_ms", 0.0,
                   "With --gcs_emulator: delay each request to the emulator "
                   "by this much, as a bucket's round trip would.",
                   lower_bound=0)

FLAGS = flags.FLAGS


async def _proxy(upstream_port: int, latency: float, ready) -> None:
  """Forwards loopback connections to `upstream_port`, holding each chunk the
  client sends (a request) for `latency` seconds; sends its port to `ready`."""

  async def pump(reader, writer, delay):
    try:
      while data := await reader.read(1 << 16):
        if delay:
          await asyncio.sleep(delay)
        writer.write(data)
        await writer.drain()
    except OSError:
      pass
    finally:
      writer.close()

  async def handle(client_reader, client_writer):
    try:
      server_reader, server_writer = await asyncio.open_connection(
          "127.0.0.1", upstream_port)
    except OSError:
      client_writer.close()
      return
    await asyncio.gather(pump(client_reader, server_writer, latency),
                         pump(server_reader, client_writer, 0.0))

  server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
  ready.send(server.sockets[0].getsockname()[1])
  await server.serve_forever()


def _serve_proxy(upstream_port: int, latency: float, ready) -> None:
  asyncio.run(_proxy(upstream_port, latency, ready))


def _delaying_proxy(upstream_port: int, latency: float) -> int:
  """Starts `_proxy` in its own process (one event loop: in this process its
  threads would wait on the pipeline's interpreter lock, and a proxy that
  cannot keep up caps the concurrency under test); returns its port."""
  context = multiprocessing.get_context("spawn")
  receive, send = context.Pipe(duplex=False)
  context.Process(target=_serve_proxy, args=(upstream_port, latency, send),
                  daemon=True).start()
  if not receive.poll(120):
    raise RuntimeError("The latency proxy did not start.")
  return receive.recv()


def _split_files(data_dir: str, num_files: int, out: str) -> str:
  """A copy of `data_dir` in `out` whose train split is `num_files` files."""
  # pylint: disable=g-import-not-at-top
  from array_record.python import array_record_module
  from etils import epath
  import numpy as np
  # pylint: enable=g-import-not-at-top
  metadata = input_pipeline.load_metadata(data_dir)
  source = input_pipeline.ExampleSource(data_dir, "train",
                                        metadata["max_seq_length"])
  skip = {f["path"] for f in metadata["train_files"]} | {"metadata.json"}
  for path in epath.Path(data_dir).iterdir():  # Eval files, tokenizer.
    if path.is_file() and path.name not in skip:
      (epath.Path(out) / path.name).write_bytes(path.read_bytes())
  bounds = np.linspace(0, len(source), num_files + 1).astype(int)
  metadata["train_files"] = []
  for k in range(num_files):
    name = f"train-{k:05d}-of-{num_files:05d}.array_record"
    writer = array_record_module.ArrayRecordWriter(
        os.path.join(out, name), "group_size:1")
    for record in source.read(np.arange(bounds[k], bounds[k + 1])):
      writer.write(record)
    writer.close()
    metadata["train_files"].append(
        {"path": name, "num_examples": int(bounds[k + 1] - bounds[k])})
  (epath.Path(out) / "metadata.json").write_text(json.dumps(metadata))
  return out


def benchmark(data_dir: str, batch_size: int = 128, seconds: float = 5.0,
              seed: int = 0, prefetch: int = 2,
              read_threads: int = input_pipeline.READ_THREADS) -> float:
  """Prints and returns training batches per second (one process)."""
  max_seq_length = input_pipeline.load_metadata(data_dir)["max_seq_length"]
  it = input_pipeline.make_train_iterator(
      data_dir, batch_size=batch_size, seed=seed, process_index=0,
      process_count=1, max_seq_length=max_seq_length, prefetch=prefetch,
      read_threads=read_threads)
  next(it)  # Start-up (opening files, the threads) is not counted.
  count, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    next(it)
    count += 1
  rate = count / (time.perf_counter() - start)
  it.close()
  print(f"{rate:.1f} batches/s of {batch_size} x {max_seq_length} "
        f"({rate * batch_size:,.0f} examples/s, "
        f"{rate * batch_size * max_seq_length / 1e6:.2f}M tokens/s) "
        f"from {data_dir}, read_threads={read_threads}, prefetch={prefetch}")
  return rate


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  data_dir = FLAGS.data_dir or loop.prepare_data(defaults.get_config())[0]
  run = lambda path: benchmark(path, FLAGS.batch_size, FLAGS.seconds,
                               FLAGS.seed, FLAGS.prefetch, FLAGS.read_threads)
  with tempfile.TemporaryDirectory() as tmp:
    if FLAGS.num_files:
      data_dir = _split_files(data_dir, FLAGS.num_files, tmp)
    if not FLAGS.gcs_emulator:
      run(data_dir)
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
      run(str(remote))


if __name__ == "__main__":
  app.run(main)
