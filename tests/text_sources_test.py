"""Tests for text_sources.py: documents and sentences, reading in pieces."""

import os
import sys

import pytest

from electra_jax import errors
from electra_jax.data import options as options_lib
from electra_jax.data import text_sources


def _options(**kwargs):
  return options_lib.Options(output_dir="unused", **kwargs)


def test_a_line_is_a_sentence_unless_split():
  line = "It works. Does it? Mr. Smith paid 3.5 dollars. \"Yes!\" he said."
  assert text_sources.sentence_splitter(_options())(line) == [line]
  split = text_sources.sentence_splitter(_options(split_sentences=True))
  assert split(line) == ["It works.", "Does it?", "Mr. Smith paid 3.5 "
                         "dollars.", "\"Yes!\" he said."]
  assert split("   ") == []


def test_splitting_without_sentencex_says_what_to_install(monkeypatch):
  monkeypatch.setitem(sys.modules, "sentencex", None)  # Not installed.
  with pytest.raises(errors.UserError,
                     match="pip install sentencex==1.0.32"):
    text_sources.sentence_splitter(_options(split_sentences=True))
  text_sources.sentence_splitter(_options())  # Off: not needed.


_TEXT = "A b.\n  c d  \n\n\n\ne.\n \t \nf g.\n"


@pytest.mark.parametrize("separate,expected", [
    (True, ["A b.", "c d", None, "e.", None, "f g.", None]),
    (False, ["A b.", "c d", "e.", "f g.", None])])
def test_blank_lines_end_documents_or_a_file_is_one(tmp_path, separate,
                                                    expected):
  path = tmp_path / "t.txt"
  path.write_text(_TEXT)
  size = os.path.getsize(path)
  options = _options(blanks_separate_docs=separate)
  piece = text_sources.Piece(str(path), 0, size, size)
  assert list(text_sources.shard_lines(
      [piece], options, text_sources.Stats(), [])) == expected
  # A TFDS record or a dataset row is read the same way.
  assert list(text_sources._record_lines(_TEXT, separate)) == expected
  assert text_sources.splittable(str(path), options) is separate
  assert not text_sources.splittable("hf:json:x.jsonl", options)


def test_file_pieces_read_every_line_once(tmp_path):
  path = tmp_path / "t.txt"
  lines = [f"line {i} " + "é" * (i % 7) for i in range(200)]
  path.write_text("\n".join(lines) + "\n")
  size = os.path.getsize(path)
  stats, read = text_sources.Stats(), []
  for k in range(7):  # Cuts fall inside lines and inside characters.
    piece = text_sources.Piece(str(path), size * k // 7,
                               size * (k + 1) // 7, size)
    read += list(text_sources._file_lines(piece, stats, 1 << 20))
  assert [line.rstrip("\n") for line in read] == lines
  assert stats.invalid_utf8_lines == 0


def test_multibyte_character_at_a_line_cut(tmp_path):
  path = tmp_path / "t.txt"
  path.write_text("é" * 500 + "\n")  # Cuts every 63 bytes split an é.
  stats = text_sources.Stats()
  lines = list(text_sources._file_lines(
      text_sources.Piece(str(path), 0, 1001, 1001), stats, 63))
  assert "".join(lines) == "é" * 500 + "\n"
  assert (stats.long_lines, stats.invalid_utf8_lines) == (1, 0)
