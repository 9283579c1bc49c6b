"""Examples -> model inputs: sentence pairs, truncation, tagging labels on
first sub-tokens (as BIOES for span tags), and the train/eval batchers."""

import numpy as np
import pytest

from electra_jax import errors
from electra_jax.data import tokenization
from electra_jax.finetune import features
from electra_jax.finetune import tasks
from tests import testing

CLS, SEP, PAD = 2, 3, 0


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
  return tokenization.load_tokenizer(
      testing.write_vocab(str(tmp_path_factory.mktemp("vocab"))))


def _id(word):
  return 5 + int(word[1:])  # The fixture vocabulary: specials, w0, w1, ...


def test_pairs_and_longest_first_truncation(tok):
  ex = [tasks.TextExample("a", ("w1 w2 w3 w4 w5 w6", "w7 w8"), "x"),
        tasks.TextExample("b", ("w9", "w10"), "y")]
  arrays = features.text_features(ex, "classification", ["x", "y"], (0, 1),
                                  tok, max_seq_length=8)
  # Budget 8 - 3 = 5: the longer first text loses tokens until it fits.
  assert list(arrays["input_ids"][0]) == [
      CLS, _id("w1"), _id("w2"), _id("w3"), SEP, _id("w7"), _id("w8"), SEP]
  assert list(arrays["segment_ids"][0]) == [0, 0, 0, 0, 0, 1, 1, 1]
  assert list(arrays["input_ids"][1]) == [
      CLS, _id("w9"), SEP, _id("w10"), SEP, PAD, PAD, PAD]
  assert list(arrays["input_mask"][1]) == [1] * 5 + [0] * 3
  assert list(arrays["label"]) == [0, 1]


def test_regression_targets_are_normalised(tok):
  ex = [tasks.TextExample("a", ("w1",), 5.0),
        tasks.TextExample("b", ("w2",), 1.25)]
  arrays = features.text_features(ex, "regression", [], (0.0, 5.0), tok, 4)
  np.testing.assert_allclose(arrays["label"], [1.0, 0.25])


def test_double_unordered_adds_swapped_pairs():
  ex = [tasks.TextExample("a", ("p", "q"), "1")]
  out = features.double_unordered(ex)
  assert [(e.id, e.texts) for e in out] == [("a", ("p", "q")),
                                            ("a-swapped", ("q", "p"))]


def test_tagging_labels_first_subtoken_only(tok):
  # "zzz" is not in the vocabulary: WordPiece makes it [UNK] (one token).
  ex = [tasks.TaggingExample("a", ("w1", "zzz", "w2", "w3"),
                             ("B-X", "O", "B-X", "I-X")),
        tasks.TaggingExample("b", ("w4",), ("O",))]
  arrays = features.tagging_features(ex, ["B-X", "I-X", "O"], tok, 5, "none")
  # [CLS] w1 zzz w2 [SEP]: w3 no longer fits.
  assert list(arrays["input_ids"][0]) == [CLS, _id("w1"), 1, _id("w2"), SEP]
  assert list(arrays["labels"][0]) == [-1, 0, 2, 0, -1]
  assert list(arrays["word_positions"][0]) == [1, 2, 3, -1, -1]
  # The reference's tagging segment ids: 1 on every token, 0 on padding.
  assert list(arrays["segment_ids"][0]) == [1] * 5
  assert list(arrays["segment_ids"][1]) == [1, 1, 1, 0, 0]
  with pytest.raises(ValueError, match="not among the task's tags"):
    features.tagging_features(ex, ["O"], tok, 5, "none")


def test_tagging_trains_span_tags_as_bioes(tok):
  ex = [tasks.TaggingExample("a", ("w1", "w2", "w3", "w4"),
                             ("B-X", "O", "B-X", "I-X"))]
  bioes = ["B-X", "E-X", "I-X", "O", "S-X"]  # Index 4, 3, 0, 1 below.
  assert features.training_tags(ex[0], "bioes") == ("S-X", "O", "B-X", "E-X")
  arrays = features.tagging_features(ex, bioes, tok, 8, "bioes")
  assert list(arrays["labels"][0]) == [-1, 4, 3, 0, 1, -1, -1, -1]
  pos = [tasks.TaggingExample("p", ("w1", "w2"), ("NN", "VB"))]
  with pytest.raises(errors.UserError, match="tag_encoding=none"):
    features.tagging_features(pos, ["NN", "VB"], tok, 8, "bioes")
  assert list(features.tagging_features(
      pos, ["NN", "VB"], tok, 8, "none")["labels"][0][:3]) == [-1, 0, 1]
  with pytest.raises(errors.UserError, match="tag_encoding='bio'"):
    features.training_tags(pos[0], "bio")


def test_batchers():
  arrays = {"x": np.arange(10)}
  seen = np.concatenate([b["x"] for b in features.train_batches(
      arrays, 4, seed=0, epoch=0)])
  assert len(seen) == 12 and set(seen) == set(range(10))  # Wraps to fill.
  other = np.concatenate([b["x"] for b in features.train_batches(
      arrays, 4, seed=0, epoch=1)])
  assert not np.array_equal(seen, other)  # A new order every epoch.
  again = np.concatenate([b["x"] for b in features.train_batches(
      arrays, 4, seed=0, epoch=0)])
  np.testing.assert_array_equal(seen, again)  # Deterministic.
  batches = list(features.eval_batches(arrays, 4))
  assert [len(b["x"]) for b in batches] == [4, 4, 4]
  assert list(batches[-1]["weight"]) == [1, 1, 0, 0]
  assert list(np.concatenate([b["x"] for b in batches])[:10]) == list(
      range(10))
  local = features.local_slice(batches[0], process_index=1, process_count=2)
  assert list(local["x"]) == [2, 3]
