"""Tests for text_sources.py: sentence splitting, reading files in pieces."""

import os

from electra_jax.data import text_sources


def test_split_sentences():
  assert text_sources.split_sentences(
      "It works. Does it? Yes! \"Quoted.\" Then e.g. This stays. Mr. Smith "
      "too. A.  Two spaces.  ") == [
          "It works.", "Does it?", "Yes!", "\"Quoted.\"",
          "Then e.g. This stays.", "Mr. Smith too.", "A.  Two spaces."]
  assert text_sources.split_sentences("no end 3.5 and v1.2 here") == [
      "no end 3.5 and v1.2 here"]
  assert text_sources.split_sentences("   ") == []


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
