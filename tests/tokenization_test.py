"""Tests for tokenization.py: sentencepiece training/loading and WordPiece."""

import os
import random

import pytest
import sentencepiece as spm

from electra_jax.data import tokenization

_WORDS = ("the model reads text and learns which tokens were replaced by a "
          "small generator while the discriminator predicts every position "
          "data shards are written once then read by index").split()


def _write_corpus(path, num_lines=300, seed=0):
  rng = random.Random(seed)
  with open(path, "w") as f:
    for _ in range(num_lines):
      words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 12))]
      f.write(" ".join(words).capitalize() + ".\n")
  return path


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("sp")
  corpus = _write_corpus(str(tmp / "corpus.txt"))
  return tokenization.train_sentencepiece(
      [corpus], str(tmp / "sp"), vocab_size=50, num_threads=1)


def test_sentencepiece_special_ids_and_size(sp_model):
  tok = tokenization.load_tokenizer(sp_model)
  assert tok.kind == "sentencepiece"
  assert tok.vocab_size == 50
  assert tok.special_ids == {"pad_id": 0, "unk_id": 1, "cls_id": 2,
                             "sep_id": 3, "mask_id": 4}
  assert [tok.id_to_token(i) for i in range(5)] == [
      "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
  assert tok.token_to_id("[MASK]") == 4
  assert tok.token_to_id("[NOT-THERE]") is None


def test_sentencepiece_encode_decode(sp_model):
  tok = tokenization.load_tokenizer(sp_model)
  ids = tok.encode("The Model reads text.")
  assert ids and all(5 <= i < 50 for i in ids)
  assert tok.decode(ids) == "the model reads text."  # Lower-cased.
  assert tok.encode_batch(["The model.", "text"]) == [
      tok.encode("The model."), tok.encode("text")]
  # The text "[MASK]" is not the mask token (control symbols).
  assert 4 not in tok.encode("the [MASK] token")


def test_sentencepiece_training_is_deterministic(tmp_path, sp_model):
  corpus = _write_corpus(str(tmp_path / "corpus.txt"))
  again = tokenization.train_sentencepiece(
      [corpus], str(tmp_path / "again"), vocab_size=50, num_threads=1)
  first, second = (tokenization.load_tokenizer(p) for p in (sp_model, again))
  assert ([first.id_to_token(i) for i in range(50)] ==
          [second.id_to_token(i) for i in range(50)])
  # From sentences (as preprocess trains) the file itself is identical:
  # no input paths are recorded in it.
  lines = open(corpus).read().splitlines()
  a, b = (tokenization.train_sentencepiece(
      [], str(tmp_path / name), vocab_size=50, sentences=iter(lines),
      num_threads=2) for name in ("a", "b"))
  assert tokenization.file_sha256(a) == tokenization.file_sha256(b)


def test_sentencepiece_bpe_from_sentences_cased(tmp_path):
  lines = open(_write_corpus(str(tmp_path / "c.txt"))).read().splitlines()
  path = tokenization.train_sentencepiece(
      [], str(tmp_path / "bpe"), vocab_size=45, sentences=iter(lines),
      model_type="bpe", lowercase=False, num_threads=1)
  assert path == str(tmp_path / "bpe.model")
  assert not os.path.exists(path + ".tmp")
  tok = tokenization.load_tokenizer(path)
  assert tok.vocab_size == 45
  assert tok.special_ids["mask_id"] == 4
  assert tok.decode(tok.encode("The model")) == "The model"  # Cased.


def test_sentencepiece_vocab_too_large(tmp_path):
  corpus = _write_corpus(str(tmp_path / "c.txt"), num_lines=20)
  with pytest.raises(ValueError, match="too small for a vocabulary of 5000"):
    tokenization.train_sentencepiece([corpus], str(tmp_path / "x"), 5000,
                                     num_threads=1)


def test_sentencepiece_without_special_tokens(tmp_path):
  corpus = _write_corpus(str(tmp_path / "c.txt"))
  spm.SentencePieceTrainer.train(
      input=corpus, model_prefix=str(tmp_path / "plain"), vocab_size=40,
      minloglevel=2, num_threads=1)
  with pytest.raises(ValueError, match=r"lacks the special token\(s\) "
                     r"\[PAD\], \[UNK\], \[CLS\], \[SEP\], \[MASK\]"):
    tokenization.load_tokenizer(str(tmp_path / "plain.model"))


_VOCAB = ["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the",
          "cafe", "hello", "world", "##s", ".", ","]


def _write_vocab(tmp_path, tokens):
  path = tmp_path / "vocab.txt"
  path.write_text("\n".join(tokens) + "\n")
  return str(path)


def test_wordpiece_vocab(tmp_path):
  tok = tokenization.load_tokenizer(_write_vocab(tmp_path, _VOCAB))
  assert tok.kind == "wordpiece"
  assert tok.vocab_size == 13
  assert tok.special_ids == {"pad_id": 0, "unk_id": 2, "cls_id": 3,
                             "sep_id": 4, "mask_id": 5}
  # Lower-cased, accents stripped, sub-words, unknown words.
  assert tok.encode("Hello Worlds, the CAFÉ xyz.") == [8, 9, 10, 12, 6, 7, 2,
                                                       11]
  assert tok.id_to_token(10) == "##s"
  assert tok.token_to_id("cafe") == 7
  assert tok.decode([8, 9, 10]) == "hello worlds"


def test_wordpiece_cased(tmp_path):
  tok = tokenization.load_tokenizer(
      _write_vocab(tmp_path, _VOCAB + ["Hello"]), lowercase=False)
  assert tok.encode("Hello hello") == [13, 8]


def test_wordpiece_missing_special_token(tmp_path):
  path = _write_vocab(tmp_path, [t for t in _VOCAB if t != "[MASK]"])
  with pytest.raises(ValueError, match=r"lacks the special token\(s\) "
                     r"\[MASK\]"):
    tokenization.load_tokenizer(path)


def test_load_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    tokenization.load_tokenizer(str(tmp_path / "nope.model"))
  bad = tmp_path / "bad.model"
  bad.write_bytes(b"not a model")
  with pytest.raises(ValueError, match="sentencepiece .model file or a "
                     "WordPiece vocab.txt"):
    tokenization.load_tokenizer(str(bad))
