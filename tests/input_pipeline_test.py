"""Tests for data/input_pipeline.py: batches, order, resume, eval, spec."""

import json
import os
import re
import subprocess
import sys
import threading
import time

from array_record.python import array_record_module
import numpy as np
import pytest

from electra_jax import defaults
from electra_jax import loop
from electra_jax.data import default_corpus
from electra_jax.data import input_pipeline
from electra_jax.data import spec as data_spec
from tests import testing
from tests.testing import CLS, L, PAD, SEP  # write_dataset's ids, length.

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _ids(batch):
  """The example index of every row (-1 for padding rows)."""
  return [int(row[1]) - 10 if row[0] == CLS else -1
          for row in batch["input_ids"]]


def _train(data_dir, batch_size=4, seed=0, process_index=0, process_count=1):
  return input_pipeline.make_train_iterator(
      data_dir, batch_size=batch_size, seed=seed, process_index=process_index,
      process_count=process_count, max_seq_length=L)


def _take(it, n):
  return [_ids(next(it)) for _ in range(n)]


@pytest.fixture(name="data")
def _data(tmp_path):
  return testing.write_dataset(tmp_path / "data", num_train=20, num_eval=6)


def test_batch_contents(data):
  batch = next(_train(data, batch_size=8))
  assert sorted(batch) == ["input_ids", "input_mask", "segment_ids"]
  for value in batch.values():
    assert value.shape == (8, L) and value.dtype == np.int32
  for row in range(8):
    i = _ids(batch)[row]
    ids, n_a = testing.example(i)
    expected = ids + [PAD] * (L - len(ids))
    assert batch["input_ids"][row].tolist() == expected
    assert batch["input_mask"][row].tolist() == [1] * len(ids) + [0] * (
        L - len(ids))
    assert batch["segment_ids"][row].tolist() == (
        [0] * n_a + [1] * (len(ids) - n_a) + [0] * (L - len(ids)))


def test_epochs_are_reshuffled_permutations(data):
  stream = sum(_take(_train(data), 15), [])  # Three epochs of 20.
  epochs = [stream[k * 20:(k + 1) * 20] for k in range(3)]
  for epoch in epochs:
    assert sorted(epoch) == list(range(20))
  assert epochs[0] != epochs[1] != epochs[2]
  assert epochs[0] != list(range(20))


def test_batches_straddle_epochs(tmp_path):
  data = testing.write_dataset(tmp_path / "d", num_train=10, num_eval=1)
  stream = sum(_take(_train(data, batch_size=4), 5), [])
  assert sorted(stream[:10]) == sorted(stream[10:]) == list(range(10))


def test_deterministic_by_seed(data):
  assert _take(_train(data, seed=3), 8) == _take(_train(data, seed=3), 8)
  assert _take(_train(data, seed=3), 8) != _take(_train(data, seed=4), 8)


def test_resume_equals_uninterrupted(data):
  reference = _take(_train(data), 12)
  it = _train(data)
  assert _take(it, 4) == reference[:4]
  time.sleep(0.05)  # Let the prefetch thread run ahead.
  state = it.get_state()
  assert state == {"batch_index": 4, "batch_size": 4, "seed": 0,
                   "num_examples": 20}
  json.dumps(state)  # Checkpointable as JSON.
  restored = _train(data)
  restored.set_state(state)
  assert _take(restored, 8) == reference[4:]  # Crosses epoch boundaries.
  # Rewinding a running iterator works too.
  it.set_state({"batch_index": 7})
  assert _take(it, 5) == reference[7:]
  it.close()


def test_processes_split_each_global_batch(data):
  one = _take(_train(data, batch_size=10), 6)  # Two batches per epoch.
  two = [_take(_train(data, batch_size=10, process_index=i,
                      process_count=2), 6) for i in range(2)]
  for k in range(6):
    assert len(two[0][k]) == len(two[1][k]) == 5
    assert two[0][k] + two[1][k] == one[k]  # Same examples, same order.
  for epoch in range(3):  # Within an epoch no example is seen twice.
    seen = [sum(two[i][2 * epoch:2 * epoch + 2], []) for i in range(2)]
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(20))
  # The state is global: it moves between process counts.
  it = _train(data, batch_size=10, process_index=1, process_count=2)
  it.set_state({"batch_index": 3, "batch_size": 10})
  assert _ids(next(it)) == one[3][5:]


def test_bad_batch_sizes_and_states(data):
  with pytest.raises(ValueError, match=r"global batch size \(6\) must be a "
                     r"positive multiple of the number of processes \(4\)"):
    _train(data, batch_size=6, process_count=4)
  with pytest.raises(ValueError, match="must be a positive multiple"):
    input_pipeline.make_eval_iterator(
        data, batch_size=3, process_index=0, process_count=2,
        max_seq_length=L)
  with pytest.raises(ValueError, match="resuming needs the same data, batch "
                     "size and seed"):
    _train(data).set_state({"batch_index": 1, "batch_size": 8})
  with pytest.raises(ValueError, match="max_seq_length=32 but .* was packed "
                     "to 16"):
    input_pipeline.make_train_iterator(
        data, batch_size=4, seed=0, process_index=0, process_count=1,
        max_seq_length=32)


def test_eval_is_fixed_and_padded(data):
  def run(process_index, process_count):
    batches = input_pipeline.make_eval_iterator(
        data, batch_size=4, process_index=process_index,
        process_count=process_count, max_seq_length=L, num_batches=3)
    return [_ids(b) for b in batches], list(batches)[-1]
  ids, last = run(0, 1)
  assert ids == [[500, 501, 502, 503], [504, 505, -1, -1], [-1] * 4]
  assert run(0, 1)[0] == ids  # The same every time.
  assert not last["input_mask"].any() and not last["input_ids"].any()
  halves = [run(i, 2)[0] for i in range(2)]
  assert [a + b for a, b in zip(*halves)] == ids
  covering = input_pipeline.make_eval_iterator(
      data, batch_size=4, process_index=0, process_count=1, max_seq_length=L)
  assert len(covering) == 2


def test_empty_eval_split(tmp_path):
  data = testing.write_dataset(tmp_path / "d", num_train=8, num_eval=0)
  with pytest.raises(ValueError, match="has no eval examples; preprocess "
                     "with a larger --eval_fraction"):
    input_pipeline.make_eval_iterator(
        data, batch_size=4, process_index=0, process_count=1,
        max_seq_length=L)


def test_incomplete_dataset_refused(tmp_path, data):
  os.remove(os.path.join(data, "metadata.json"))
  with pytest.raises(ValueError, match="has no metadata.json"):
    _train(data)
  config = defaults.get_config()
  config.input.data_dir = data
  with pytest.raises(ValueError, match="preprocessing did not finish"):
    loop.prepare_data(config)


def test_config_checks(data):
  """The run config must fit the data; the data's facts come back as a
  `DataSpec` and the config is never changed."""
  config = defaults.get_config()
  config.input.data_dir = data
  config.model.vocab_size = 999
  with pytest.raises(ValueError, match=r"pass --config.model.vocab_size=1000"
                     r" \(or 0 to take the tokenizer's\)"):
    loop.prepare_data(config)
  config.model.vocab_size = 0  # The default: the tokenizer's.
  with pytest.raises(ValueError,
                     match=r"pass --config.input.max_seq_length=16"):
    loop.prepare_data(config)
  config.input.max_seq_length = L
  before = config.to_json()
  data_dir, spec = loop.prepare_data(config)
  assert data_dir == data and config.to_json() == before
  assert spec == data_spec.DataSpec(vocab_size=1000, pad_id=PAD, cls_id=CLS,
                                    sep_id=SEP, mask_id=4, max_seq_length=L)
  record = loop.run_record(config, spec)  # What config.json holds.
  assert record["model"]["vocab_size"] == 1000
  assert [record["input"][k] for k in ("pad_id", "cls_id", "sep_id",
                                       "mask_id")] == [PAD, CLS, SEP, 4]
  config.model.vocab_size = 1000  # Naming the right size is fine too.
  assert loop.prepare_data(config)[1] == spec


def test_other_record_format_refused(data):
  path = os.path.join(data, "metadata.json")
  with open(path) as f:
    metadata = json.load(f)
  metadata["record_format"] = "ids_v0"
  with open(path, "w") as f:
    json.dump(metadata, f)
  with pytest.raises(ValueError, match=(
      f"^{re.escape(path)}: record_format is 'ids_v0', but this version "
      r"reads 'ids_v1'; re-run preprocessing \(python -m "
      r"electra_jax.preprocess\) into a new --output_dir.$")):
    _train(data)
  del metadata["record_format"]  # Every dataset written so far has one.
  with open(path, "w") as f:
    json.dump(metadata, f)
  with pytest.raises(ValueError, match="record_format is missing"):
    input_pipeline.load_data_spec(data)


def test_data_spec(data):
  spec = input_pipeline.load_data_spec(data)
  assert spec == data_spec.DataSpec(
      vocab_size=1000, pad_id=PAD, cls_id=CLS, sep_id=SEP, mask_id=4,
      max_seq_length=L)
  assert spec.special_ids == (CLS, SEP, 4)
  metadata = input_pipeline.load_metadata(data)
  assert data_spec.DataSpec.from_metadata(metadata) == spec
  with pytest.raises(ValueError, match=r"lacks \['mask_id'\]"):
    data_spec.DataSpec.from_metadata(
        {k: v for k, v in metadata.items() if k != "mask_id"})
  with pytest.raises(ValueError, match="must be distinct ids below"):
    data_spec.DataSpec.from_metadata({**metadata, "mask_id": SEP})
  with pytest.raises(ValueError, match="vocab_size=1000"):
    data_spec.DataSpec.from_metadata({**metadata, "mask_id": 1000})


def test_benchmark_script(data):
  result = subprocess.run(
      [sys.executable, "benchmarks/input_pipeline.py", f"--data_dir={data}",
       "--batch_size=4", "--seconds=0.2", "--num_files=7", "--read_threads=2"],
      cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
  assert result.returncode == 0, result.stderr
  assert "batches/s of 4 x 16" in result.stdout
  assert "read_threads=2, prefetch=2" in result.stdout


def test_prepare_default_corpus(tmp_path):
  """Builds a small default corpus end to end (a few seconds)."""
  config = defaults.get_config()
  config.input.max_seq_length = 64
  config.input.default_corpus_bytes = 300_000
  config.input.default_vocab_size = 1000
  config.input.default_data_cache = str(tmp_path / "cache")
  data_dir, _ = loop.prepare_data(config)
  assert data_dir.startswith(str(tmp_path / "cache"))
  metadata = input_pipeline.load_metadata(data_dir)
  assert metadata["vocab_size"] == 1000
  assert metadata["max_seq_length"] == 64
  assert metadata["num_train_examples"] > 500
  assert metadata["num_eval_examples"] > 0
  assert (metadata["pad_id"], metadata["mask_id"]) == (0, 4)
  batch = next(input_pipeline.make_train_iterator(
      data_dir, batch_size=8, seed=0, process_index=0, process_count=1,
      max_seq_length=64))
  assert batch["input_ids"].shape == (8, 64)
  assert (batch["input_ids"][:, 0] == metadata["cls_id"]).all()
  assert batch["input_mask"].sum(axis=1).min() > 5
  start = time.time()
  assert loop.prepare_data(config)[0] == data_dir
  assert time.time() - start < 1.0  # Cached: not rebuilt.


def test_default_corpus_text(tmp_path):
  source = tmp_path / "mod.py"
  source.write_text('''"""A module that explains things in plain words."""


class Thing:
  """A thing.

  >>> Thing().run()
  42
  """

  def run(self):
    """Runs it."""
    return 42
''')
  assert list(default_corpus._docstrings(str(source))) == [
      "A module that explains things in plain words.",
      "A thing.\n\n>>> Thing().run()\n42", "Runs it."]
  text = """Title
=====

Wrapped prose that goes on for a while, and then it
continues on the next line. See :class:`~pkg.Thing` and `docs <http://x>`_.

```python
x = compute(a, b)  # Code is dropped.
```

- A list item with a [link](http://example.com) in it, which is prose too.
"""
  assert default_corpus.clean_document(text) == (
      "Wrapped prose that goes on for a while, and then it continues on the "
      "next line. See pkg.Thing and docs.\n"
      "A list item with a link in it, which is prose too.")
  assert default_corpus.clean_document("Too short.") == ""
  assert default_corpus.clean_document(  # A list of names, not prose.
      "\n".join(f"Name number {i}" for i in range(30))) == ""


class _Reads:
  """Stands in for ArrayRecord's reader module: the real reader, whose reads
  take `delay(file)` seconds and fail on `bad` example positions, counting
  how many are in progress at once."""

  def __init__(self, delay=lambda path: 0.0, bad=()):
    self.delay, self.bad, self.lock = delay, set(bad), threading.Lock()
    self.active = self.peak = 0
    reads = self

    class Reader:

      def __init__(self, path, options):
        self._reader = array_record_module.ArrayRecordReader(path, options)
        self._path = os.path.basename(path)

      def num_records(self):
        return self._reader.num_records()

      def read(self, positions):
        with reads.lock:
          reads.active += 1
          reads.peak = max(reads.peak, reads.active)
        try:
          time.sleep(reads.delay(self._path))
          if {(self._path, p) for p in positions} & reads.bad:
            raise RuntimeError(f"injected failure in {self._path}")
          return self._reader.read(positions)
        finally:
          with reads.lock:
            reads.active -= 1

    self.ArrayRecordReader = Reader  # pylint: disable=invalid-name


def _input_threads(before=()):
  """The input threads alive that were not in `before` (other tests leave
  iterators unclosed)."""
  return [t.name for t in threading.enumerate() if t not in before and (
      t.name == "train_input" or t.name.startswith("input_read"))]


def _batches(it, n):
  return [next(it) for _ in range(n)]


def _same(a, b):
  return all(x.keys() == y.keys() and all(np.array_equal(x[k], y[k])
                                          for k in x) for x, y in zip(a, b))


def test_concurrent_reads_give_the_same_batches(tmp_path, monkeypatch):
  """Files read on threads, three batches in flight, the later files
  answering first: the batches are those of one file at a time, in order,
  across epoch boundaries (batches of 8 in epochs of 20) and after
  set_state."""
  data = testing.write_dataset(tmp_path / "d", num_train=20, num_eval=2,
                               files=7)
  def make(read_threads, prefetch):
    return input_pipeline.make_train_iterator(
        data, batch_size=8, seed=5, process_index=0, process_count=1,
        max_seq_length=L, prefetch=prefetch, read_threads=read_threads)
  one_at_a_time = make(read_threads=1, prefetch=1)
  reference = _batches(one_at_a_time, 10)
  one_at_a_time.close()
  for batch in reference:  # Every row is the example its ids name.
    for row, i in enumerate(_ids(batch)):
      ids, _ = testing.example(i)
      assert batch["input_ids"][row, :len(ids)].tolist() == ids
  before = threading.enumerate()
  reads = _Reads(delay=lambda path: 0.03 * (7 - int(path[6:11])))
  monkeypatch.setattr(input_pipeline, "array_record_module", reads)
  it = make(read_threads=8, prefetch=3)
  assert _same(_batches(it, 10), reference)
  assert reads.peak > 1  # The reads did overlap.
  it.set_state({"batch_index": 3})
  assert _same(_batches(it, 7), reference[3:])
  resumed = make(read_threads=8, prefetch=3)
  resumed.set_state({"batch_index": 6})
  assert _same(_batches(resumed, 4), reference[6:])
  it.close()
  resumed.close()
  assert not _input_threads(before)


def test_batches_in_flight_overlap(tmp_path, monkeypatch):
  """With prefetch 3, more files are being read at once than one batch
  touches; with one thread, one file at a time."""
  data = testing.write_dataset(tmp_path / "d", num_train=40, num_eval=2,
                               files=8)
  for read_threads, prefetch in ((16, 3), (1, 3)):
    reads = _Reads(delay=lambda path: 0.1)
    monkeypatch.setattr(input_pipeline, "array_record_module", reads)
    it = input_pipeline.make_train_iterator(
        data, batch_size=4, seed=0, process_index=0, process_count=1,
        max_seq_length=L, prefetch=prefetch, read_threads=read_threads)
    next(it)
    time.sleep(0.3)
    it.close()
    if read_threads == 1:
      assert reads.peak == 1
    else:
      assert reads.peak > 4  # A batch of 4 rows reads at most 4 files.


def test_failed_read_surfaces_at_its_batch(tmp_path, monkeypatch):
  """A read that fails is raised by the next() of the batch that needed it:
  the batches before it arrive intact although later ones were in flight,
  and no thread is left running."""
  data = testing.write_dataset(tmp_path / "d", num_train=20, num_eval=2,
                               files=4)
  def make(reads=None):
    if reads:
      monkeypatch.setattr(input_pipeline, "array_record_module", reads)
    return input_pipeline.make_train_iterator(
        data, batch_size=4, seed=1, process_index=0, process_count=1,
        max_seq_length=L, prefetch=3, read_threads=4)
  uninterrupted = make()
  reference = _batches(uninterrupted, 8)
  uninterrupted.close()
  # Example 12 is position 2 of file 2 (files of 5); its batch comes from
  # the uninterrupted stream.
  failing = [k for k, b in enumerate(reference) if 12 in _ids(b)][0]
  before = threading.enumerate()
  it = make(_Reads(bad={("train-00002-of-00004.array_record", 2)}))
  assert _same(_batches(it, failing), reference[:failing])
  with pytest.raises(RuntimeError, match="injected failure in train-00002"):
    next(it)
  assert not _input_threads(before)  # Stopped at the failure.
  it.close()
  assert not _input_threads(before)
