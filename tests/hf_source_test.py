"""Tests for data/hf_source.py: Hugging Face datasets as preprocessing input.

Rows hold words `wN` of the tests' WordPiece vocabulary (id N + 5), so the
tokens every document must contribute are known by hand.
"""

import json
import os
import sys

from array_record.python import array_record_module
import numpy as np
import pytest

from electra_jax import errors
from electra_jax.data import hf_source
from electra_jax.data import options as options_lib
from electra_jax.data import preprocess
from electra_jax.data import text_sources
from tests import testing

datasets = pytest.importorskip("datasets")

# Row 0 holds two documents when blank lines separate them; rows 2 and 3
# hold none.
ROWS = ["w1 w2\nw3\n\n w4 w5 \n", "w6\n\n\nw7 w8 w9", None, " \n", "w10"]
IDS = {"w1 w2": [6, 7], "w3": [8], "w4 w5": [9, 10], "w6": [11],
       "w7 w8 w9": [12, 13, 14], "w10": [15]}


def _write(tmp_path, kind):
  """ROWS (with an `id` column) as a saved dataset or a data file."""
  tmp_path = tmp_path / "in"
  ds = datasets.Dataset.from_dict({"id": list(range(len(ROWS))),
                                   "text": ROWS})
  if kind == "saved":
    path = str(tmp_path / "saved")
    ds.save_to_disk(path, num_shards=2)  # Two Arrow files: rows 0-2, 3-4.
    return path
  path = str(tmp_path / f"rows.{kind}")
  if kind == "parquet":
    ds.to_parquet(path)
  else:
    ds.to_json(path)  # JSON lines.
  return path


def _options(tmp_path, inputs, **kwargs):
  os.makedirs(tmp_path / "vocab", exist_ok=True)
  settings = dict(tokenizer=testing.write_vocab(str(tmp_path / "vocab")),
                  max_seq_length=64, eval_fraction=0.0, num_workers=1)
  settings.update(kwargs)
  return options_lib.Options(output_dir=str(tmp_path / "out"),
                             inputs=tuple(inputs), **settings)


def _lines(options):
  sources, _ = text_sources.list_inputs(options, [])
  pieces = preprocess.plan_shards(
      sources, 1 << 20, lambda s: text_sources.splittable(s, options))
  stats = text_sources.Stats()
  lines = [line for shard in pieces for line in text_sources.shard_lines(
      shard, options, stats, [])]
  return lines, stats


@pytest.mark.parametrize("kind", ["saved", "parquet", "jsonl"])
def test_rows_become_documents_by_the_blank_line_rule(tmp_path, kind):
  path = _write(tmp_path, kind)
  lines, stats = _lines(_options(tmp_path, [path]))
  assert lines == ["w1 w2", "w3", None, "w4 w5", None, "w6", None,
                   "w7 w8 w9", None, "w10", None]
  assert stats.empty_documents == 2  # The null row and the blank one.
  lines, _ = _lines(_options(tmp_path, [path], blanks_separate_docs=False))
  assert lines == ["w1 w2", "w3", "w4 w5", None, "w6", "w7 w8 w9", None,
                   "w10", None]


def _records(data_dir):
  with open(os.path.join(data_dir, "metadata.json")) as f:
    metadata = json.load(f)
  out = []
  for entry in metadata["train_files"]:
    reader = array_record_module.ArrayRecordReader(
        os.path.join(data_dir, entry["path"]))
    out += [np.frombuffer(r, metadata["record_dtype"]).tolist()[1:]
            for r in reader.read_all()]
  return metadata, out


@pytest.mark.parametrize("kind,separate,docs,workers", [
    ("saved", True, 5, 2), ("parquet", False, 3, 1), ("jsonl", True, 5, 1)])
def test_preprocess_from_a_dataset(tmp_path, kind, separate, docs, workers):
  path = _write(tmp_path, kind)
  # The saved dataset's two files are two shards, built by two workers.
  metadata = preprocess.preprocess(_options(
      tmp_path, [path], blanks_separate_docs=separate, num_workers=workers))
  assert metadata["num_shards"] == (2 if kind == "saved" else 1)
  stats = metadata["stats"]
  assert (stats["documents"], stats["sentences"], stats["tokens"]) == (
      docs, 6, 10)
  assert metadata["blanks_separate_docs"] is separate
  _, examples = _records(tmp_path / "out")
  # A document is shorter than the shortest target length packing draws
  # (5): one example each, holding its tokens in order.
  assert len(examples) == docs
  body = [i for ids in examples for i in ids if i not in (2, 3)]
  assert body == [i for line in IDS for i in IDS[line]]
  assert all(ids[0] == 2 and ids[-1] == 3 for ids in examples)


def test_reading_streams_without_an_arrow_cache(tmp_path, monkeypatch):
  # load_dataset without streaming converts files into Arrow files in its
  # cache first (a second copy of the corpus); streaming writes none.
  cache = tmp_path / "hf_cache"
  monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(cache))
  path = _write(tmp_path, "parquet")
  texts = hf_source.texts(hf_source.source_name("parquet", path), "text")
  assert not isinstance(texts, list)
  assert list(texts) == ROWS
  written = [f for _, _, files in os.walk(cache) for f in files]
  assert not [f for f in written if f.endswith(".arrow")], written


def test_saved_dataset_files_and_auto_format(tmp_path):
  saved = _write(tmp_path, "saved")
  parquet = _write(tmp_path, "parquet")
  (tmp_path / "in" / "notes.txt").write_text("w1 w2\n")
  (tmp_path / "in" / "sub").mkdir()  # Matched by the glob: skipped.
  sources, _ = text_sources.list_inputs(
      _options(tmp_path, [saved, str(tmp_path / "in" / "*")]), [])
  names = [s for s, _ in sources]
  assert names == sorted(
      [f"hf:arrow:{saved}/data-00000-of-00002.arrow",
       f"hf:arrow:{saved}/data-00001-of-00002.arrow",
       f"hf:parquet:{parquet}", str(tmp_path / "in" / "notes.txt")])
  # As text, the same glob matches the text files only (a dataset
  # directory is skipped, the .parquet read as text is binary).
  with pytest.raises(errors.UserError, match="looks like a binary file"):
    text_sources.list_inputs(_options(tmp_path, [str(tmp_path / "in" / "*")],
                                      input_format="text"), [])


def test_errors(tmp_path, monkeypatch):
  path = _write(tmp_path, "parquet")

  def fails(match, inputs, **kwargs):
    with pytest.raises(errors.UserError, match=match):
      preprocess.preprocess(_options(tmp_path, inputs, **kwargs))

  fails(r"--text_column='body' is not a column of .*rows.parquet; it has "
        r"id, text\.", [path], text_column="body")
  fails(r"Column 'id' of .*rows.parquet holds int, not text", [path],
        text_column="id")
  (tmp_path / "plain").mkdir()
  fails(r"plain is a directory but not a dataset saved with "
        r"Dataset.save_to_disk", [str(tmp_path / "plain")])
  datasets.DatasetDict({"train": datasets.Dataset.from_dict(
      {"text": ["w1"]})}).save_to_disk(str(tmp_path / "dict"))
  fails(r"holds a DatasetDict \(splits train\); pass one split's directory, "
        r"e.g. --input=.*dict/train\.", [str(tmp_path / "dict")])
  (tmp_path / "a.txt").write_text("w1\n")
  fails("--input_format=hf: .*a.txt is not a saved dataset nor a file",
        [str(tmp_path / "a.txt")], input_format="hf")
  fails("--input_format must be one of auto, text, hf, not 'arrow'", [path],
        input_format="arrow")
  monkeypatch.setitem(sys.modules, "datasets", None)  # As if not installed.
  fails(r"needs the `datasets` package: pip install datasets==", [path])


def test_a_dataset_in_a_bucket_reads_as_the_local_one(tmp_path):
  from etils import epath  # pylint: disable=g-import-not-at-top
  local = {kind: _write(tmp_path / kind, kind) for kind in ("saved", "parquet")}
  with testing.gcs_emulator("hf-test"):
    for kind, path in local.items():
      source = epath.Path(path)
      files = sorted(source.iterdir()) if source.is_dir() else [source]
      for f in (f for f in files if f.is_file()):
        name = f.relative_to(source.parent)
        f.copy(epath.Path(f"gs://hf-test/{kind}/{name}"), overwrite=True)
      remote = f"gs://hf-test/{kind}/{source.name}"
      assert _lines(_options(tmp_path, [remote])) == _lines(
          _options(tmp_path, [path])), kind
