"""Tests for input_pipeline.py: batches, order, resume, processes, eval."""

import json
import os
import time

from array_record.python import array_record_module
import numpy as np
import pytest

from electra_jax import default_corpus
from electra_jax import defaults
from electra_jax import input_pipeline
from electra_jax import packing

PAD, CLS, SEP, L = 0, 2, 3, 16


def _example(i):
  """Example i: [CLS] i+10 (x a) [SEP] (i+10 (x b) [SEP]), lengths vary."""
  a, b = 1 + i % 5, i % 3
  ids = [CLS] + [i + 10] * a + [SEP]
  if b:
    ids += [i + 10] * b + [SEP]
  return ids, a + 2


def _write_dataset(path, num_train, num_eval, files=3):
  """Writes a dataset whose example i is `_example(i)`."""
  os.makedirs(path, exist_ok=True)
  dtype = packing.record_dtype(1000)
  metadata = {"vocab_size": 1000, "pad_id": PAD, "unk_id": 1, "cls_id": CLS,
              "sep_id": SEP, "mask_id": 4, "max_seq_length": L,
              "num_train_examples": num_train, "num_eval_examples": num_eval,
              "tokenizer": "tokenizer.model", "tokenizer_sha256": "0" * 64,
              "record_dtype": dtype.name}
  for split, count, offset in (("train", num_train, 0),
                               ("eval", num_eval, 500)):
    metadata[f"{split}_files"] = []
    bounds = np.linspace(0, count, files + 1).astype(int)
    for k in range(files):
      if bounds[k] == bounds[k + 1]:
        continue
      name = f"{split}-{k:05d}-of-{files:05d}.array_record"
      writer = array_record_module.ArrayRecordWriter(
          os.path.join(path, name), "group_size:1")
      for i in range(bounds[k], bounds[k + 1]):
        writer.write(packing.encode_record(*_example(i + offset), dtype))
      writer.close()
      metadata[f"{split}_files"].append(
          {"path": name, "num_examples": int(bounds[k + 1] - bounds[k])})
  with open(os.path.join(path, "metadata.json"), "w") as f:
    json.dump(metadata, f)
  return str(path)


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
  return _write_dataset(tmp_path / "data", num_train=20, num_eval=6)


def test_batch_contents(data):
  batch = next(_train(data, batch_size=8))
  assert sorted(batch) == ["input_ids", "input_mask", "segment_ids"]
  for value in batch.values():
    assert value.shape == (8, L) and value.dtype == np.int32
  for row in range(8):
    i = _ids(batch)[row]
    ids, n_a = _example(i)
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
  data = _write_dataset(tmp_path / "d", num_train=10, num_eval=1)
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
  data = _write_dataset(tmp_path / "d", num_train=8, num_eval=0)
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
    input_pipeline.prepare_data(config, str(tmp_path))


def test_config_checks(data, tmp_path):
  config = defaults.get_config()
  config.input.data_dir = data
  assert input_pipeline.prepare_data(config, str(tmp_path)) == data
  metadata = input_pipeline.load_metadata(data)
  with pytest.raises(ValueError, match=r"pass --config.model.vocab_size=1000"):
    input_pipeline.check_config(config, metadata)
  config.model.vocab_size = 1000
  with pytest.raises(ValueError,
                     match=r"pass --config.input.max_seq_length=16"):
    input_pipeline.check_config(config, metadata)
  config.input.max_seq_length = L
  input_pipeline.check_config(config, metadata)
  input_pipeline.apply_metadata(config, metadata)
  assert (config.input.pad_id, config.input.cls_id, config.input.sep_id,
          config.input.mask_id) == (PAD, CLS, SEP, 4)


def test_benchmark(data, capsys):
  assert input_pipeline.benchmark(data, batch_size=4, seconds=0.2) > 0
  assert "batches/s of 4 x 16" in capsys.readouterr().out


def test_prepare_default_corpus(tmp_path):
  """Builds a small default corpus end to end (a few seconds)."""
  config = defaults.get_config()
  config.input.max_seq_length = 64
  config.input.default_corpus_bytes = 300_000
  config.input.default_vocab_size = 1000
  config.input.default_data_cache = str(tmp_path / "cache")
  data_dir = input_pipeline.prepare_data(config, str(tmp_path / "work"))
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
  assert input_pipeline.prepare_data(config, str(tmp_path / "w2")) == data_dir
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
