"""Pretraining input: preprocessed ArrayRecord shards to per-process batches.

The shards written by `electra_jax.preprocess` are read by index with
ArrayRecord's reader (one sorted read per file and batch, the same reader
grain's `ArrayRecordDataSource` wraps), so the position in the data is one
integer:

  spec = input_pipeline.load_data_spec(data_dir)  # vocab, special ids, length
  it = input_pipeline.make_train_iterator(
      data_dir, batch_size=128, seed=0, process_index=jax.process_index(),
      process_count=jax.process_count(), max_seq_length=128)
  batch = next(it)        # {"input_ids", "input_mask", "segment_ids"}
  state = it.get_state()  # {"batch_index": 1, ...}: save with checkpoints

Training order: the examples form an endless stream, epoch after epoch, each
epoch a fresh permutation of all examples (grain's `index_shuffle`, seeded
from `(seed, epoch)`). Global batch `k` is stream positions `[k * B, (k + 1)
* B)`, and process `i` of `n` takes the `i`-th of its `n` equal slices. So
the processes' examples are disjoint, together they are exactly the global
batch, whatever `n` is, and the state (`batch_index`) is the same on every
process and survives a change of process count. A background thread
prepares the next batches; the state always names the next batch the caller
receives, never one the thread is working on.

From a bucket every example is a ranged GET that waits a round trip, and a
large corpus puts each row of a batch in another file. So the next
`prefetch` batches' reads are in flight at once, one file per thread of
`read_threads` (ArrayRecord's pool then splits a file's records); decoding
and order stay in the one thread, so batches do not depend on thread counts.

Eval batches are the eval split in file order, padded with empty rows
(`input_mask` 0) once it runs out, identical on every call.

Every reader goes through `load_metadata`, which refuses data written in
another record format (`records.check_metadata`).

The speed of this pipeline: `python benchmarks/input_pipeline.py`.
"""

import collections
from collections.abc import Callable, Iterator
from concurrent import futures
import functools
import json
import queue
import threading
from typing import Any

from etils import epath
from array_record.python import array_record_module
from grain.experimental import index_shuffle
import jax
import numpy as np

from electra_jax import errors
from electra_jax.data import records
from electra_jax.data import spec as data_spec

Batch = dict[str, np.ndarray]
# Files read at once for training: a bucket serves (in flight / round trip)
# GETs per second, one per example; local files leave the threads idle.
READ_THREADS = 32
_REQUIRED_KEYS = ("vocab_size", "pad_id", "unk_id", "cls_id", "sep_id",
                  "mask_id", "max_seq_length", "num_train_examples",
                  "num_eval_examples", "tokenizer", "tokenizer_sha256")


def load_metadata(data_dir: str) -> dict[str, Any]:
  """Reads `metadata.json`, which marks a complete preprocessed dataset."""
  path = epath.Path(data_dir) / "metadata.json"
  if not path.exists():
    raise errors.UserError(
        f"{data_dir} has no metadata.json: it is not a preprocessed dataset, "
        "or preprocessing did not finish. Run (or re-run, to resume) `python "
        "-m electra_jax.preprocess --output_dir=...` to complete it.")
  metadata = json.loads(path.read_text())
  records.check_metadata(metadata, str(path))
  missing = [k for k in _REQUIRED_KEYS if k not in metadata]
  if missing:
    raise errors.UserError(f"{path} lacks {missing}; re-run preprocessing.")
  return metadata


def load_data_spec(data_dir: str) -> data_spec.DataSpec:
  """Reads and checks `data_dir`'s `metadata.json` (see `load_metadata`)."""
  return data_spec.DataSpec.from_metadata(load_metadata(data_dir))


TOKENIZER_DIR = "tokenizer"  # In a run's workdir.


def save_tokenizer(data_dir: str, workdir: str) -> None:
  """Copies the data's tokenizer file and `metadata.json` into
  `workdir/tokenizer/` (process 0), so that a run's workdir alone says how
  its ids were made (export and fine-tuning read them there)."""
  if jax.process_index() != 0:
    return
  metadata = load_metadata(data_dir)
  out = epath.Path(workdir) / TOKENIZER_DIR
  out.mkdir(parents=True, exist_ok=True)
  name = metadata["tokenizer"]
  (out / name).write_bytes((epath.Path(data_dir) / name).read_bytes())
  (out / "metadata.json").write_text(
      json.dumps(metadata, indent=2, sort_keys=True))


class ExampleSource:
  """Random access to one split, decoded into fixed-length arrays."""

  def __init__(self, data_dir: str, split: str, max_seq_length: int,
               read_threads: int = 1):
    metadata = load_metadata(data_dir)
    if max_seq_length != metadata["max_seq_length"]:
      raise ValueError(
          f"max_seq_length={max_seq_length} but {data_dir} was packed to "
          f"{metadata['max_seq_length']}; use that, or preprocess again.")
    files = metadata[f"{split}_files"]
    self._paths = [str(epath.Path(data_dir) / f["path"]) for f in files]
    self._offsets = np.cumsum([0] + [f["num_examples"] for f in files])
    self._readers = [None] * len(files)  # Opened on first use.
    self._open_locks = [threading.Lock() for _ in files]
    self._read_threads, self._pool = read_threads, None
    self._length = int(self._offsets[-1])
    expected = metadata[f"num_{split}_examples"]
    if self._length != expected:
      raise ValueError(f"{data_dir}: the {split} files hold {self._length} "
                       f"examples, metadata.json says {expected}.")
    self._dtype = np.dtype(metadata["record_dtype"])
    self._max_len, self._pad_id = max_seq_length, metadata["pad_id"]

  def _reader(self, k: int) -> array_record_module.ArrayRecordReader:
    # Opened by the first thread to read it (round trips from a bucket); one
    # shared reader per file: its reads are thread-safe (grain relies on it).
    with self._open_locks[k]:
      if self._readers[k] is None:
        # No read-ahead: every read is a random access.
        reader = array_record_module.ArrayRecordReader(
            self._paths[k], "readahead_buffer_size:0")
        expected = self._offsets[k + 1] - self._offsets[k]
        if reader.num_records() != expected:
          raise ValueError(f"{self._paths[k]} holds {reader.num_records()} "
                           f"records, metadata.json says {expected}.")
        self._readers[k] = reader
    return self._readers[k]

  def start_read(self, keys: np.ndarray) -> Callable[[], list[bytes]]:
    """Starts reading the records at global indices `keys` (one sorted read
    per file, on `read_threads` threads); returns what waits for them."""
    files = np.searchsorted(self._offsets, keys, side="right") - 1
    groups = []
    for k in np.unique(files):
      rows = np.flatnonzero(files == k)
      rows = rows[np.argsort(keys[rows], kind="stable")]
      groups.append((int(k), rows, (keys[rows] - self._offsets[k]).tolist()))
    # At most `read_threads` tasks: one per file costs more than a local read.
    tasks = [groups[i::self._read_threads] for i in range(
        min(self._read_threads, len(groups)))]
    read = lambda task: [self._reader(k).read(p) for k, _, p in task]
    pending = None  # Read by the caller, in wait().
    if self._read_threads > 1 and tasks:
      if self._pool is None:
        self._pool = futures.ThreadPoolExecutor(
            self._read_threads, thread_name_prefix="input_read")
      pending = [self._pool.submit(read, task) for task in tasks]

    def wait() -> list[bytes]:
      records = [b""] * len(keys)
      try:
        for task, done in zip(tasks, pending or tasks):
          values = done.result() if pending else read(task)
          for (_, rows, _), got in zip(task, values):
            for row, record in zip(rows, got):
              records[row] = record
      finally:  # After a failed read the rest of the batch is not needed.
        for done in pending or ():
          done.cancel()
      return records
    return wait

  def read(self, keys: np.ndarray) -> list[bytes]:
    """The records at global indices `keys` (see `start_read`)."""
    return self.start_read(keys)()

  def close(self) -> None:
    """Stops the reading threads (a later read starts them again)."""
    if self._pool is not None:
      self._pool.shutdown(wait=True, cancel_futures=True)
      self._pool = None

  def __len__(self) -> int:
    return self._length

  def batch(self, indices: np.ndarray) -> Batch:
    """Examples at `indices` (-1: an empty row), each [len(indices), L]."""
    return self.start_batch(indices)()

  def start_batch(self, indices: np.ndarray) -> Callable[[], Batch]:
    """Starts `batch(indices)`'s reads; returns what waits and decodes."""
    rows = np.flatnonzero(indices >= 0)
    return functools.partial(self._decode, indices, rows,
                             self.start_read(indices[rows]))

  def _decode(self, indices, rows, wait) -> Batch:
    ids, n_a, lengths = records.decode(wait(), self._dtype, self._max_len,
                                       self._pad_id)
    shape = (len(indices), self._max_len)
    input_ids = np.full(shape, self._pad_id, np.int32)
    input_ids[rows] = ids
    positions = np.arange(self._max_len)
    input_mask = np.zeros(shape, np.int32)
    segment_ids = np.zeros(shape, np.int32)
    input_mask[rows] = positions < lengths[:, None]
    segment_ids[rows] = ((positions >= n_a[:, None]) &
                         (positions < lengths[:, None]))
    return {"input_ids": input_ids, "input_mask": input_mask,
            "segment_ids": segment_ids}


def _raise(error: Exception):
  raise error


def _local_slice(batch_size: int, process_index: int,
                 process_count: int) -> tuple[int, int]:
  """[start, stop) of this process's rows in each global batch."""
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(f"Bad process_index={process_index} of "
                     f"process_count={process_count}.")
  if batch_size < 1 or batch_size % process_count:
    raise ValueError(
        f"The global batch size ({batch_size}) must be a positive multiple "
        f"of the number of processes ({process_count}); change "
        "--config.input.batch_size.")
  per_process = batch_size // process_count
  return process_index * per_process, (process_index + 1) * per_process


class TrainIterator:
  """Endless, reshuffled-per-epoch, per-process training batches.

  See the module docstring for the order. `get_state()`/`set_state()` save
  and restore the position exactly; a daemon thread keeps the reads of the
  next `prefetch` batches in flight and up to `prefetch` batches ready.
  """

  def __init__(self, source: ExampleSource, *, batch_size: int, seed: int,
               process_index: int, process_count: int, prefetch: int = 2):
    if not len(source):
      raise ValueError("The train split is empty.")
    if len(source) >= 2**32:
      raise ValueError("At most 2**32 training examples are supported.")
    self._lo, self._hi = _local_slice(batch_size, process_index,
                                      process_count)
    self._source, self._batch_size, self._seed = source, batch_size, seed
    self._prefetch = max(1, prefetch)
    self._next_batch = 0  # The batch the next __next__ returns.
    self._thread, self._stop, self._queue = None, None, None
    self._epoch_seeds = {}

  def _epoch_seed(self, epoch: int) -> int:
    if epoch not in self._epoch_seeds:
      if len(self._epoch_seeds) > 4:
        self._epoch_seeds.clear()
      sequence = np.random.SeedSequence([self._seed % 2**63, epoch])
      self._epoch_seeds[epoch] = int(sequence.generate_state(1)[0])
    return self._epoch_seeds[epoch]

  def indices(self, batch_index: int) -> np.ndarray:
    """Example indices of this process's rows of global batch `batch_index`."""
    num = len(self._source)
    first = batch_index * self._batch_size
    positions = range(first + self._lo, first + self._hi)
    return np.array([
        index_shuffle(p % num, max_index=num - 1,
                      seed=self._epoch_seed(p // num), rounds=4)
        for p in positions], np.int64)

  def _start(self, batch_index: int) -> Callable[[], Batch]:
    try:
      return self._source.start_batch(self.indices(batch_index))
    except Exception as e:  # pylint: disable=broad-except
      return functools.partial(_raise, e)  # At that batch, in order.

  def _produce(self, batch_index: int, stop: threading.Event,
               out: queue.Queue) -> None:
    # Started in order, finished in order: a batch does not depend on what
    # else is in flight. Reads left in flight at a stop finish unused (close
    # waits for them).
    in_flight = collections.deque()
    while not stop.is_set():
      while len(in_flight) < self._prefetch:
        in_flight.append(self._start(batch_index + len(in_flight)))
      try:
        item = in_flight.popleft()()
      except Exception as e:  # pylint: disable=broad-except
        item = e  # Raised in the consumer, at the batch that failed.
      while not stop.is_set():
        try:
          out.put((batch_index, item), timeout=0.1)
          break
        except queue.Full:
          continue
      if isinstance(item, Exception):
        return
      batch_index += 1

  def __iter__(self) -> "TrainIterator":
    return self

  def __next__(self) -> Batch:
    if self._thread is None:
      self._stop, self._queue = threading.Event(), queue.Queue(self._prefetch)
      self._thread = threading.Thread(
          target=self._produce, daemon=True, name="train_input",
          args=(self._next_batch, self._stop, self._queue))
      self._thread.start()
    batch_index, item = self._queue.get()
    assert batch_index == self._next_batch, (batch_index, self._next_batch)
    if isinstance(item, Exception):
      self.close()  # Its reads too: nothing left running.
      raise item
    self._next_batch += 1
    return item

  def get_state(self) -> dict[str, int]:
    """The position of the next batch (the same on every process)."""
    return {"batch_index": self._next_batch, "batch_size": self._batch_size,
            "seed": self._seed, "num_examples": len(self._source)}

  def set_state(self, state: dict[str, int]) -> None:
    """Continues from a `get_state()` result."""
    for key in ("batch_size", "seed", "num_examples"):
      if key in state and int(state[key]) != self.get_state()[key]:
        raise ValueError(
            f"Input state has {key}={state[key]}, this iterator "
            f"{self.get_state()[key]}: resuming needs the same data, batch "
            "size and seed.")
    self._shutdown()
    self._next_batch = int(state["batch_index"])

  def _shutdown(self) -> None:
    if self._thread is not None:
      self._stop.set()
      self._thread.join()
      self._thread = None

  def close(self) -> None:
    """Stops the background thread and the reading threads."""
    self._shutdown()
    self._source.close()


def make_train_iterator(data_dir: str, *, batch_size: int, seed: int,
                        process_index: int, process_count: int,
                        max_seq_length: int, prefetch: int = 2,
                        read_threads: int = READ_THREADS) -> TrainIterator:
  """Returns this process's training batches.

  Args:
    data_dir: preprocessed data (see `prepare_data`).
    batch_size: the GLOBAL batch size; each process gets
      `batch_size // process_count` rows.
    seed: shuffling seed.
    process_index: this process (`jax.process_index()`).
    process_count: all processes (`jax.process_count()`).
    max_seq_length: must equal the data's.
    prefetch: batches whose reads are in flight at once (and batches kept
      ready).
    read_threads: files read at once (1: one after another).

  Returns:
    A `TrainIterator` of dicts of int32 arrays `input_ids`, `input_mask`,
    `segment_ids`, each [batch_size // process_count, max_seq_length].
  """
  _local_slice(batch_size, process_index, process_count)
  source = ExampleSource(data_dir, "train", max_seq_length, read_threads)
  return TrainIterator(source, batch_size=batch_size, seed=seed,
                       process_index=process_index,
                       process_count=process_count, prefetch=prefetch)


class EvalBatches:
  """The held-out split in a fixed order; re-iterable, same every time."""

  def __init__(self, source: ExampleSource, batch_size: int,
               local_slice: tuple[int, int], num_batches: int):
    self._source, self._batch_size = source, batch_size
    self._lo, self._hi = local_slice
    self._num_batches = num_batches

  def __len__(self) -> int:
    return self._num_batches

  def __iter__(self) -> Iterator[Batch]:
    num = len(self._source)
    for k in range(self._num_batches):
      first = k * self._batch_size
      positions = np.arange(first + self._lo, first + self._hi)
      yield self._source.batch(np.where(positions < num, positions, -1))


def make_eval_iterator(data_dir: str, *, batch_size: int, process_index: int,
                       process_count: int, max_seq_length: int,
                       num_batches: int | None = None) -> EvalBatches:
  """Returns the eval batches (padded with empty rows past the split's end).

  Args:
    data_dir: preprocessed data.
    batch_size: the GLOBAL batch size.
    process_index: this process.
    process_count: all processes.
    max_seq_length: must equal the data's.
    num_batches: batches per evaluation; None: enough to cover the split.
  """
  local_slice = _local_slice(batch_size, process_index, process_count)
  source = ExampleSource(data_dir, "eval", max_seq_length)
  if not len(source):
    raise ValueError(
        f"{data_dir} has no eval examples; preprocess with a larger "
        "--eval_fraction (or more documents).")
  if num_batches is None:
    num_batches = -(-len(source) // batch_size)
  return EvalBatches(source, batch_size, local_slice, num_batches)
