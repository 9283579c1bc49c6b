"""Reading tasks: local CSV/TSV/JSONL/CoNLL files with named columns, the
error for a wrong column, and TFDS GLUE/SQuAD without TensorFlow (the real
builders prepared from local raw files, and `tfds.testing.mock_data`)."""

import json
import os
from unittest import mock

import numpy as np
import pytest
import tensorflow_datasets as tfds

from electra_jax.finetune import data
from electra_jax.finetune import squad
from electra_jax.finetune import tasks
from tests import testing


def _write(path, text):
  with open(path, "w", encoding="utf-8") as f:
    f.write(text)
  return str(path)


def _config(task, **data_fields):
  config = testing.finetune_config(f"task={task}")
  for key, value in data_fields.items():
    setattr(config.data, key, value)
  return config


def _data(config):
  return data.DataConfig(**config.data)


def _data_config(task, **data_fields):
  return _data(_config(task, **data_fields))


def test_csv_tsv_and_jsonl_pairs(tmp_path):
  csv_file = _write(tmp_path / "a.csv", 'q,p,y\n"one, two",three,yes\nx,y,no\n')
  tsv_file = _write(tmp_path / "a.tsv", 'q\tp\ty\n"one\t"two\tyes\n')
  jsonl_file = _write(tmp_path / "a.jsonl",
                      '{"q": "one", "p": "two", "y": "yes", "id": "e7"}\n\n')
  for path in (csv_file, tsv_file, jsonl_file):
    config = _config("classification", source="files", train_file=path,
                     text_columns="q, p", label_column="y")
    examples = data.read_examples(_data(config), tasks.get_task(config.task),
                                  "train")
    assert examples[0].label == "yes" and len(examples[0].texts) == 2
  assert examples[0].id == "e7"  # From the id column, when there is one.
  csv_examples = data.read_examples(
      _data_config("classification", source="files", train_file=csv_file,
              text_columns="q,p", label_column="y"),
      tasks.get_task("classification"), "train")
  assert csv_examples[0].texts == ("one, two", "three")
  assert csv_examples[1].id == "1"  # Row numbers otherwise.


@pytest.mark.parametrize("suffix,text", [
    ("csv", "sentence,label\nhello,1\n"),
    ("jsonl", '{"sentence": "hello", "label": 1}\n')])
def test_bad_column_lists_the_columns_found(tmp_path, suffix, text):
  path = _write(tmp_path / f"train.{suffix}", text)
  config = _config("classification", source="files", train_file=path)
  with pytest.raises(ValueError) as e:
    data.read_examples(_data(config), tasks.get_task("classification"), "train")
  message = str(e.value)
  assert "'text'" in message and "columns found: sentence, label" in message
  assert path in message and "--config.data.text_columns" in message
  config.data.text_columns, config.data.label_column = "sentence", "stars"
  with pytest.raises(ValueError, match="'stars'.*sentence, label"):
    data.read_examples(_data(config), tasks.get_task("classification"), "train")


def test_tagging_conll_and_jsonl_qa(tmp_path):
  conll = _write(tmp_path / "t.conll", "-DOCSTART- O\n\nw1 B-X\nw2 I-X\n\n"
                 "w3 O\n")
  config = _config("tagging", train_file=conll)
  examples = data.read_examples(_data(config), tasks.get_task("tagging"),
                                "train")
  assert [(e.words, e.tags) for e in examples] == [
      (("w1", "w2"), ("B-X", "I-X")), (("w3",), ("O",))]
  # Span tags are learnt as BIOES (B-X I-X -> B-X E-X), as the reference.
  assert data.label_names(_data(config), tasks.get_task("tagging"),
                          examples) == ["B-X", "E-X", "O"]
  config.data.labels = "B-X,I-X,O"
  assert data.label_names(_data(config), tasks.get_task("tagging"),
                          examples) == ["B-X", "E-X", "I-X", "O", "S-X"]
  config.data.tag_encoding = "none"
  assert data.label_names(_data(config), tasks.get_task("tagging"),
                          examples) == ["B-X", "I-X", "O"]
  qa = _write(tmp_path / "qa.jsonl", "\n".join(json.dumps(r) for r in [
      {"id": "1", "question": "q?", "context": "a b c",
       "answers": [{"text": "b", "answer_start": 2}]},
      {"id": "2", "question": "q?", "context": "a b c",
       "answers": {"text": [], "answer_start": []}}]))
  examples = data.read_examples(_data_config("qa", train_file=qa),
                                tasks.get_task("qa"), "train")
  assert examples[0].answers == ("b",) and examples[0].answer_starts == (2,)
  assert examples[1].is_impossible and not examples[1].answers


def test_labels_from_config_and_unknown_labels(tmp_path):
  path = _write(tmp_path / "t.csv", "text,label\na,pos\nb,neg\nc,pos\n")
  config = _config("classification", train_file=path)
  spec = tasks.get_task("classification")
  examples = data.read_examples(_data(config), spec, "train")
  assert data.label_names(_data(config), spec, examples) == ["neg", "pos"]
  config.data.labels = "pos,neg,neutral"
  assert data.label_names(_data(config), spec, examples) == [
      "pos", "neg", "neutral"]
  config.data.labels = "neg"
  tok = tokenization_fixture(tmp_path)
  with pytest.raises(ValueError, match="not among the task's labels"):
    data.featurize(_data(config), config.max_seq_length, spec, ["neg"], tok,
                   examples, training=True)


def tokenization_fixture(tmp_path):
  # pylint: disable-next=g-import-not-at-top
  from electra_jax.data import tokenization
  return tokenization.load_tokenizer(testing.write_vocab(str(tmp_path)))


def _fake_download(raw_dir):
  def download_and_extract(self, urls):
    del self
    if isinstance(urls, dict):  # SQuAD: {"train": url, "dev": url}.
      return {k: os.path.join(raw_dir, f"squad_{k}.json") for k in urls}
    return raw_dir  # GLUE: a directory holding SST-2/, STS-B/.
  return download_and_extract


def _squad_json(path, qas, context):
  with open(path, "w") as f:
    json.dump({"data": [{"title": "t", "paragraphs": [
        {"context": context, "qas": qas}]}]}, f)


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
  """GLUE SST-2 and STS-B and SQuAD 2.0, prepared by the real TFDS builders
  from local raw files in ArrayRecord format (no network, no TF)."""
  raw = tmp_path_factory.mktemp("raw")
  out = str(tmp_path_factory.mktemp("tfds"))
  for name, header, rows in (
      ("SST-2", "sentence\tlabel", ["good w10\t1", "bad w11\t0"]),
      ("STS-B", "index\tsentence1\tsentence2\tscore",
       ["0\ta w1\tb w2\t4.5", "1\tc\td\t0.25"])):
    os.makedirs(raw / name)
    for split in ("train", "dev", "test"):
      _write(raw / name / f"{split}.tsv", "\n".join([header] + rows) + "\n")
  context = "the cat sat on the mat"
  for split in ("train", "dev"):
    _squad_json(raw / f"squad_{split}.json", [
        {"id": f"{split}1", "question": "who sat?", "is_impossible": False,
         "answers": [{"text": "the cat", "answer_start": 0},
                     {"text": "cat", "answer_start": 4}]},
        {"id": f"{split}2", "question": "who ran?", "is_impossible": True,
         "answers": [], "plausible_answers": [
             {"text": "mat", "answer_start": 19}]}], context)
  tasks.import_tfds()  # Registers the GLUE and SQuAD builders.
  with mock.patch.object(tfds.download.DownloadManager,
                         "download_and_extract", _fake_download(str(raw))):
    for name in ("glue/sst2", "glue/stsb", "squad/v2.0"):
      tfds.builder(name, data_dir=out, file_format="array_record"
                   ).download_and_prepare()
  return out


def test_tfds_glue_from_a_local_data_dir(tfds_dir):
  config = _config("sst2", tfds_data_dir=tfds_dir, eval_split="validation")
  spec = tasks.get_task("sst2")
  examples = data.read_examples(_data(config), spec, "eval")
  assert sorted((e.texts, e.label) for e in examples) == [
      (("bad w11",), "negative"), (("good w10",), "positive")]
  assert data.label_names(_data(config), spec, examples) == [
      "negative", "positive"]
  config = _config("stsb", tfds_data_dir=tfds_dir)
  examples = data.read_examples(_data(config), tasks.get_task("stsb"), "train")
  assert sorted((e.texts, e.label) for e in examples) == [
      (("a w1", "b w2"), 4.5), (("c", "d"), 0.25)]


def test_tfds_squad_v2_from_a_local_data_dir(tfds_dir):
  config = _config("squad2", tfds_data_dir=tfds_dir)
  examples = data.read_examples(_data(config), tasks.get_task("squad2"), "eval")
  by_id = {e.id: e for e in examples}
  assert by_id["dev1"].answers == ("the cat", "cat")
  assert by_id["dev1"].answer_starts == (0, 4)
  assert by_id["dev2"].is_impossible and by_id["dev2"].answers == ()
  preds = {"dev1": {"text": "cat"}, "dev2": {"text": ""}}
  assert squad.evaluate(examples, preds)["exact_match"] == 1.0


def test_unprepared_tfds_dataset_says_how_to_prepare(tmp_path):
  with pytest.raises(FileNotFoundError, match="tfds build glue/cola"):
    tasks.read_tfds("glue/cola", "train", str(tmp_path))


@pytest.mark.parametrize("task", ["mnli", "squad1"])
def test_tfds_mock_data(task):
  spec = tasks.get_task(task)
  config = _config(task)
  with tfds.testing.mock_data(num_examples=6):
    examples = data.read_examples(_data(config), spec, "eval")
  assert len(examples) == 6
  if spec.kind == "qa":
    assert all(isinstance(e.context, str) for e in examples)
    assert all(isinstance(a, str) for e in examples for a in e.answers)
  else:
    assert all(len(e.texts) == 2 for e in examples)
    assert {e.label for e in examples} <= set(spec.label_names)
  assert np.all([isinstance(e.id, str) for e in examples])


def test_column_count_and_tag_length_errors(tmp_path):
  path = _write(tmp_path / "q.jsonl", '{"question": "q", "context": "c", '
                '"answers": []}\n')
  config = _config("qa", train_file=path, text_columns="question")
  with pytest.raises(ValueError, match="reads 2 text column"):
    data.read_examples(_data(config), tasks.get_task("qa"), "train")
  path = _write(tmp_path / "t.jsonl", '{"tokens": ["a", "b"], "tags": ["O"]}'
                '\n')
  with pytest.raises(ValueError, match="2 tokens but 1 tags"):
    data.read_examples(_data_config("tagging", train_file=path),
                       tasks.get_task("tagging"), "train")
  path = _write(tmp_path / "r.jsonl", '{"text": "a", "label": "x"}\n'
                '{"txt": "b", "label": "y"}\n')
  with pytest.raises(ValueError, match=r"\(row 2\).*'text'.*txt, label"):
    data.read_examples(_data_config("classification", train_file=path),
                       tasks.get_task("classification"), "train")


@pytest.mark.parametrize("name", sorted(tasks.TASKS))
def test_defaults_follow_configure_finetuning(name):
  """Epochs, lengths and the headline metric as the reference sets them."""
  spec, config = tasks.get_task(name), testing.finetune_config(f"task={name}")
  if "squad" in name or "qa" in name:  # Its test: `"qa" in task_name`.
    epochs = 2.0
  elif name in ("rte", "stsb"):
    epochs = 10.0
  else:
    epochs = 3.0
  assert spec.num_train_epochs == config.num_train_epochs == epochs
  length = {"qa": 512, "tagging": 256}.get(spec.kind, 128)
  assert config.max_seq_length == length
  assert config.loss_reduction == "sum"
  if spec.kind == "regression":  # The paper's STS metric leads.
    assert spec.metrics == ("spearman", "pearson")


def test_tagging_predicts_bio_and_scores_spans(tmp_path):
  examples = [
      tasks.TaggingExample("a", ("w1", "w2", "w3", "w4"),
                           ("B-NP", "I-NP", "O", "B-VP")),
      tasks.TaggingExample("b", ("w5", "w6"), ("B-NP", "B-NP"))]
  d, spec = _data_config("tagging"), tasks.get_task("tagging")
  labels = data.label_names(d, spec, examples)
  assert labels == ["B-NP", "E-NP", "O", "S-NP", "S-VP"]
  split = data.featurize(d, 16, spec, labels, tokenization_fixture(tmp_path),
                         examples, training=False)
  assert split.arrays["labels"][0, 1:5].tolist() == [0, 1, 2, 4]
  predicted = [["B-NP", "E-NP", "O", "S-NP"], ["S-NP", "S-NP"]]
  outputs = np.zeros((2, 16, len(labels)), np.float32)
  for i, tags in enumerate(predicted):
    for w, tag in enumerate(tags):
      outputs[i, split.word_positions[i, w], labels.index(tag)] = 1.0
  records = data.predict(None, spec, labels, split, outputs)
  assert [r["tags"] for r in records] == [["B-NP", "I-NP", "O", "B-NP"],
                                          ["B-NP", "B-NP"]]
  # Gold spans NP 0-1, VP 3-3 | NP 0-0, NP 1-1; predicted NP 3-3 instead
  # of VP: 3 of 4 right both ways, F1 3/4; 5 of 6 tags right.
  scores = data.score(spec, labels, split, records)
  assert scores["f1"] == pytest.approx(3 / 4)
  assert scores["accuracy"] == pytest.approx(5 / 6)
