"""Tests for data/preprocess.py: shards, datasets, resume, CLI, bad input."""

import json
import logging
import os
import random
import subprocess
import sys

from array_record.python import array_record_module
import numpy as np
import pytest

from electra_jax.data import input_pipeline
from electra_jax.data import options as options_lib
from electra_jax.data import preprocess
from electra_jax.data import records
from electra_jax.data import spec as data_spec
from tests import testing

CLS, SEP = 2, 3
_WORDS = ("the generator fills masked positions and the discriminator learns "
          "which tokens were replaced while shards of packed examples are "
          "read by index so that training resumes exactly").split()


def test_plan_shards():
  shards = preprocess.plan_shards([("a", 10), ("b", 10), ("c", 100)], 40)
  assert [[(p.source, p.start, p.stop) for p in s] for s in shards] == [
      [("a", 0, 10), ("b", 0, 10)], [("c", 0, 50)], [("c", 50, 100)]]
  # Small corpora: one shard per file, up to four.
  assert len(preprocess.plan_shards([(str(i), 5) for i in range(6)],
                                    1 << 20)) == 4
  # A source that is one document (or a dataset file) stays one piece.
  shards = preprocess.plan_shards([("a", 10), ("b", 10), ("c", 100)], 40,
                                  lambda source: source != "c")
  assert [[(p.source, p.start, p.stop) for p in s] for s in shards] == [
      [("a", 0, 10), ("b", 0, 10)], [("c", 0, 100)]]


def test_long_lines_reach_tokenizer_training_in_parts():
  # sentencepiece's trainer skips a sentence over 4192 bytes.
  assert list(preprocess._spm_sized("short one")) == ["short one"]
  parts = list(preprocess._spm_sized("ab " * 600))
  assert parts == [" ".join(["ab"] * 333), " ".join(["ab"] * 267)]


def test_documents_and_sentences_follow_the_flags(tmp_path):
  inputs = (_write_corpus(str(tmp_path / "corpus")),)
  text = "".join(open(os.path.join(tmp_path, "corpus", f"doc{f}.txt")).read()
                 for f in range(3))
  lines = [line for line in text.splitlines() if line]
  vocab = tmp_path / "vocab.txt"  # A fixed tokenizer: the same tokens.
  vocab.write_text("\n".join(["[PAD]", "[UNK]", "[unused0]", "[CLS]", "[SEP]",
                              "[MASK]", ".", *sorted(set(_WORDS))]) + "\n")
  inputs_options = dict(inputs=inputs, tokenizer=str(vocab))
  default = preprocess.preprocess(_options(tmp_path, "a", **inputs_options))
  # A line is a sentence; blank lines end the 3 x 12 documents.
  assert (default["stats"]["documents"], default["stats"]["sentences"]) == (
      36, len(lines))
  assert default["stats"]["empty_documents"] == 0
  assert (default["blanks_separate_docs"], default["split_sentences"]) == (
      True, False)
  whole = preprocess.preprocess(_options(
      tmp_path, "b", blanks_separate_docs=False, split_sentences=True,
      **inputs_options))
  # A file is a document; every "Words words." is a sentence.
  assert (whole["stats"]["documents"], whole["stats"]["sentences"]) == (
      3, text.count("."))
  assert whole["stats"]["tokens"] == default["stats"]["tokens"]
  with pytest.raises(ValueError, match="different settings "
                     r"\(blanks_separate_docs, split_sentences differ\)"):
    preprocess.preprocess(_options(tmp_path, "a", blanks_separate_docs=False,
                                   split_sentences=True, **inputs_options))


def _write_corpus(directory, num_files=3, docs_per_file=12, seed=0):
  rng = random.Random(seed)
  os.makedirs(directory, exist_ok=True)
  for f in range(num_files):
    with open(os.path.join(directory, f"doc{f}.txt"), "w") as out:
      for _ in range(docs_per_file):
        for _ in range(rng.randint(1, 4)):  # Paragraphs of sentences.
          out.write(" ".join(
              " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 9)))
              .capitalize() + "." for _ in range(rng.randint(1, 4))) + "\n")
        out.write("\n")
  return os.path.join(directory, "*.txt")


def _options(tmp_path, name="data", **kwargs):
  if "inputs" not in kwargs:
    kwargs["inputs"] = (_write_corpus(str(tmp_path / "corpus")),)
  settings = dict(vocab_size=48, max_seq_length=24, eval_fraction=0.2,
                  num_workers=1)
  settings.update(kwargs)
  return options_lib.Options(output_dir=str(tmp_path / name), **settings)


def _read_split(data_dir, split):
  with open(os.path.join(data_dir, "metadata.json")) as f:
    metadata = json.load(f)
  records = []
  for entry in metadata[f"{split}_files"]:
    reader = array_record_module.ArrayRecordReader(
        os.path.join(data_dir, entry["path"]))
    records += reader.read_all()
  return metadata, records


def test_preprocess_examples_are_well_formed(tmp_path):
  metadata = preprocess.preprocess(_options(tmp_path))
  data_dir = str(tmp_path / "data")
  assert metadata["num_shards"] == 3
  assert metadata["vocab_size"] == 48
  assert (metadata["cls_id"], metadata["sep_id"]) == (CLS, SEP)
  assert metadata["tokenizer"] == "tokenizer.model"
  assert metadata["num_eval_examples"] > 0
  for split in ("train", "eval"):
    metadata, records = _read_split(data_dir, split)
    assert len(records) == metadata[f"num_{split}_examples"]
    for record in records:
      n_a, *ids = np.frombuffer(record, metadata["record_dtype"]).tolist()
      assert 3 <= len(ids) <= 24
      assert ids[0] == CLS and ids[n_a - 1] == SEP and ids[-1] == SEP
      assert ids.count(CLS) == 1 and ids.count(SEP) in (1, 2)
      assert 0 not in ids  # No padding stored.
  assert not any(name.endswith(".tmp") for name in os.listdir(data_dir))


def test_data_spec_and_records_of_a_dataset(tmp_path):
  metadata = preprocess.preprocess(_options(tmp_path))
  data_dir = str(tmp_path / "data")
  assert metadata["record_format"] == records.FORMAT
  spec = input_pipeline.load_data_spec(data_dir)
  assert spec == data_spec.DataSpec(
      vocab_size=48, pad_id=0, cls_id=CLS, sep_id=SEP, mask_id=4,
      max_seq_length=24)
  assert spec == data_spec.DataSpec.from_metadata(metadata)
  assert spec.special_ids == (CLS, SEP, 4)
  # The written records decode to what the format says they hold.
  _, written = _read_split(data_dir, "train")
  ids, n_a, lengths = records.decode(written, metadata["record_dtype"], 24, 0)
  for k, record in enumerate(written):
    first, *rest = np.frombuffer(record, metadata["record_dtype"]).tolist()
    assert (n_a[k], lengths[k]) == (first, len(rest))
    assert ids[k].tolist() == rest + [0] * (24 - len(rest))
    assert records.encode(rest, first, records.record_dtype(48)) == record


def test_same_seed_same_output(tmp_path):
  inputs = (_write_corpus(str(tmp_path / "corpus")),)
  a = preprocess.preprocess(_options(tmp_path, "a", inputs=inputs))
  b = preprocess.preprocess(_options(tmp_path, "b", inputs=inputs,
                                     num_workers=2))
  c = preprocess.preprocess(_options(tmp_path, "c", inputs=inputs, seed=1))
  assert a["tokenizer_sha256"] == b["tokenizer_sha256"]
  assert _read_split(tmp_path / "a", "train")[1] == _read_split(
      tmp_path / "b", "train")[1]
  assert _read_split(tmp_path / "a", "train")[1] != _read_split(
      tmp_path / "c", "train")[1]
  assert c["num_train_examples"] > 0


def test_wordpiece_vocab_is_copied_and_used(tmp_path):
  vocab = tmp_path / "vocab.txt"
  vocab.write_text("\n".join(["[PAD]", "[UNK]", "[unused0]", "[CLS]", "[SEP]",
                              "[MASK]", ".", *sorted(set(_WORDS))]) + "\n")
  metadata = preprocess.preprocess(_options(tmp_path, tokenizer=str(vocab)))
  assert metadata["tokenizer"] == "vocab.txt"
  assert metadata["tokenizer_type"] == "wordpiece"
  assert (metadata["vocab_size"], metadata["cls_id"], metadata["sep_id"],
          metadata["mask_id"]) == (7 + len(set(_WORDS)), 3, 4, 5)
  _, records = _read_split(tmp_path / "data", "train")
  first = np.frombuffer(records[0], metadata["record_dtype"]).tolist()
  assert first[1] == 3 and 1 not in first  # [CLS] first; no [UNK].
  assert (tmp_path / "data" / "vocab.txt").read_text() == vocab.read_text()


def test_resume_redoes_only_unfinished_shards(tmp_path, caplog):
  options = _options(tmp_path)
  preprocess.preprocess(options)
  data_dir = tmp_path / "data"
  before = _read_split(data_dir, "train")[1]
  os.remove(data_dir / "metadata.json")
  os.remove(data_dir / "done" / "00001.json")
  os.remove(data_dir / "train-00001-of-00003.array_record")
  with caplog.at_level(logging.INFO):
    preprocess.preprocess(options)
  assert "Packing 1 of 3 shard(s)" in caplog.text
  assert _read_split(data_dir, "train")[1] == before
  with pytest.raises(ValueError, match="different settings "
                     r"\(max_seq_length differ\)"):
    preprocess.preprocess(_options(tmp_path, max_seq_length=32))


def test_cli_end_to_end(tmp_path):
  corpus = _write_corpus(str(tmp_path / "corpus"))
  out = tmp_path / "cli"
  result = subprocess.run(
      [sys.executable, "-m", "electra_jax.preprocess", f"--input={corpus}",
       f"--output_dir={out}", "--vocab_size=48", "--max_seq_length=24",
       "--num_workers=2", "--eval_fraction=0.2", "--alsologtostderr"],
      capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 0, result.stderr
  assert "Shard 3/3 done" in result.stderr
  metadata, records = _read_split(out, "train")
  assert len(records) == metadata["num_train_examples"] > 0
  assert sorted(os.listdir(out / "done")) == [
      "00000.json", "00001.json", "00002.json"]


def test_bad_inputs(tmp_path, caplog):
  corpus = tmp_path / "corpus"
  good = _write_corpus(str(corpus), num_files=1)
  (corpus / "empty.txt").write_text("")
  (corpus / "blank.txt").write_text("  \n\t\n \n")
  (corpus / "bad.txt").write_bytes(b"Fine text here. Bad \xff\xfe bytes.\n")
  (corpus / "long.txt").write_text(("word " * 300 + "\n") + "Short line.\n")
  with caplog.at_level(logging.WARNING):
    metadata = preprocess.preprocess(_options(
        tmp_path, inputs=(good,), max_line_bytes=512))
  stats = metadata["stats"]
  assert (stats["files"], stats["empty_files"]) == (5, 1)
  assert stats["whitespace_only_files"] == 1
  assert stats["invalid_utf8_lines"] == 1
  assert stats["long_lines"] == 1
  assert "empty.txt: empty file; skipped." in caplog.text
  assert "blank.txt: contains only whitespace; skipped." in caplog.text
  assert "bad.txt: 1 line(s) with invalid UTF-8" in caplog.text
  assert "long.txt: 1 line(s) longer than 512 bytes" in caplog.text


def test_a_missing_tokenizer_writes_nothing_and_the_fixed_command_runs(
    tmp_path):
  vocab = testing.write_vocab(str(tmp_path))
  with pytest.raises(ValueError, match="does not exist"):
    preprocess.preprocess(_options(tmp_path, tokenizer=str(tmp_path)))
  assert not os.path.exists(tmp_path / "data" / "settings.json")
  metadata = preprocess.preprocess(_options(tmp_path, tokenizer=vocab))
  assert metadata["num_train_examples"] > 0


def test_input_errors(tmp_path):
  with pytest.raises(ValueError, match=r"pattern '.*nothing\*' matched no"):
    preprocess.preprocess(_options(tmp_path, inputs=(
        str(tmp_path / "nothing*"),)))
  (tmp_path / "e").mkdir()
  (tmp_path / "e" / "a.txt").write_text("")
  with pytest.raises(ValueError, match=r"All 1 input file\(s\) are empty"):
    preprocess.preprocess(_options(tmp_path, inputs=(
        str(tmp_path / "e" / "*.txt"),)))
  (tmp_path / "w").mkdir()
  (tmp_path / "w" / "a.txt").write_text(" \n\n\t\n")
  with pytest.raises(ValueError, match="No text found in the input"):
    preprocess.preprocess(_options(tmp_path, "w_out", inputs=(
        str(tmp_path / "w" / "*.txt"),)))
  assert not os.path.exists(tmp_path / "w_out" / "metadata.json")
  with pytest.raises(ValueError, match="exactly one of --input or --tfds"):
    preprocess.preprocess(options_lib.Options(output_dir=str(tmp_path)))
  with pytest.raises(ValueError, match="max_seq_length must be in"):
    preprocess.preprocess(_options(tmp_path, max_seq_length=4))


def test_tfds_not_prepared(tmp_path):
  with pytest.raises(ValueError, match="Prepare it first"):
    preprocess.preprocess(options_lib.Options(
        output_dir=str(tmp_path / "out"), tfds="no_such_dataset_xyz",
        tfds_data_dir=str(tmp_path)))
