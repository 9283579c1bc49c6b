"""Reads the input text of preprocessing: files or a TFDS dataset, as lines.

Input text follows google-research/electra's `build_pretraining_dataset.py`:
documents are separated by blank lines and each line is a sentence or a
paragraph; paragraphs are split into sentences by a punctuation rule
(`split_sentences`). A TFDS record is one document whose lines are
paragraphs.

A source is read in `Piece`s (byte ranges of a file, or record ranges of a
TFDS split) so that shards can be built in parallel. Bad input is counted in
`Stats` rather than fatal: invalid UTF-8 is replaced by U+FFFD, and lines
longer than `max_line_bytes` are read in pieces of that size.
"""

from collections.abc import Iterator, Sequence
import dataclasses
import glob
import io
import os
import re
from typing import Any

from etils import epath

from electra_jax import errors
from electra_jax.data import options as options_lib

# Split after ., ! or ? (and closing quotes/brackets) when whitespace and an
# upper-case letter, digit or opening quote follow. Not after initials or a
# few common abbreviations.
_BOUNDARY = re.compile(r"""[.!?]["')\]]*(?=\s+["'(\[]?[A-Z0-9])""")
_ABBREVIATION = re.compile(
    r"(?:^|\s)(?:[A-Za-z]|Mr|Mrs|Ms|Dr|Prof|St|vs|etc|e\.g|i\.e|cf|al|Fig|No)"
    r"\.$")


def split_sentences(text: str) -> list[str]:
  """Splits a paragraph into sentences (a simple punctuation rule)."""
  sentences, start = [], 0
  for match in _BOUNDARY.finditer(text):
    if _ABBREVIATION.search(text, start, match.start() + 1):
      continue
    sentences.append(text[start:match.end()].strip())
    start = match.end()
  sentences.append(text[start:].strip())
  return [s for s in sentences if s]


@dataclasses.dataclass
class Stats:
  """Counts kept while reading; summed over shards and kept in metadata."""
  files: int = 0
  bytes: int = 0
  empty_files: int = 0
  whitespace_only_files: int = 0
  invalid_utf8_lines: int = 0
  long_lines: int = 0
  documents: int = 0
  empty_documents: int = 0
  sentences: int = 0
  tokens: int = 0
  train_examples: int = 0
  eval_examples: int = 0

  def add(self, other: dict[str, int]) -> None:
    for key, value in other.items():
      setattr(self, key, getattr(self, key) + value)


@dataclasses.dataclass(frozen=True)
class Piece:
  """A byte range [start, stop) of a file, or records of a TFDS split."""
  source: str  # A file path, or "tfds:NAME:SPLIT".
  start: int
  stop: int
  size: int  # Size of the whole source (bytes or records).


def _utf8_tail(data: bytes) -> int:
  """Length of an incomplete UTF-8 sequence at the end of `data`."""
  for i in range(1, min(4, len(data)) + 1):
    byte = data[-i]
    if byte & 0xC0 == 0x80:
      continue  # A continuation byte: look further back.
    need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
    return i if byte >= 0xC0 and need > i else 0
  return 0


def _decode(data: bytes, stats: Stats) -> str:
  try:
    return data.decode("utf-8")
  except UnicodeDecodeError:
    stats.invalid_utf8_lines += 1
    return data.decode("utf-8", errors="replace")


def _file_lines(piece: Piece, stats: Stats,
                max_line_bytes: int) -> Iterator[str]:
  """Lines starting in [start, stop); longer lines come in pieces."""
  with epath.Path(piece.source).open("rb") as raw:
    # A bucket's file object (fsspec) has no `readline(size)`; a buffered
    # reader over it does, and keeps `tell` exact.
    f = raw if hasattr(raw, "peek") else io.BufferedReader(raw, 1 << 20)
    if piece.start:
      f.seek(piece.start - 1)
      # The line running into `start` belongs to the piece before.
      while (skipped := f.readline(max_line_bytes)) and skipped[-1:] != b"\n":
        pass
    carry, continuing = b"", False
    while continuing or f.tell() < piece.stop:
      data = f.readline(max_line_bytes)
      if not data:
        break
      cut = not data.endswith(b"\n") and len(data) == max_line_bytes
      if cut and not continuing:
        stats.long_lines += 1
      data, carry = carry + data, b""
      tail = _utf8_tail(data) if cut else 0
      if tail:  # Keep a character split by the cut whole.
        data, carry = data[:-tail], data[-tail:]
      continuing = cut
      yield _decode(data, stats).replace("\ufeff", "")
    if carry:
      yield _decode(carry, stats)


def _tfds_builder(name: str, data_dir: str):
  """A prepared TFDS builder; TFDS never downloads here."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    builder = tfds.builder(name, data_dir=data_dir or None)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(
        f"TFDS dataset {name!r}: {str(e).splitlines()[0]} Prepare it first "
        f"(`tfds build {name} --data_dir=DIR`), then pass "
        "--tfds_data_dir=DIR.") from e
  if not builder.is_prepared():
    raise ValueError(
        f"TFDS dataset {name!r} is not prepared in "
        f"{data_dir or 'the default data_dir'}; run `tfds build {name} "
        "--data_dir=DIR` first and pass --tfds_data_dir=DIR.")
  return builder


def _tfds_texts(piece: Piece, data_dir: str, text_key: str) -> Iterator[Any]:
  """The `text_key` feature of the records of a TFDS piece."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  _, name, split = piece.source.split(":", 2)
  builder = _tfds_builder(name, data_dir)
  if builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD:
    source = builder.as_data_source(split=split)  # Random access, no TF.
    examples = (source[i] for i in range(piece.start, piece.stop))
  else:
    try:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError(
          f"TFDS dataset {name!r} is stored as {builder.info.file_format}, "
          "which needs TensorFlow to read: `pip install tensorflow-cpu`, or "
          f"prepare it with `tfds build {name} --file_format=array_record`."
      ) from e
    tf.config.set_visible_devices([], "GPU")
    examples = tfds.as_numpy(builder.as_dataset(
        split=f"{split}[{piece.start}:{piece.stop}]", shuffle_files=False))
  for example in examples:
    if text_key not in example:
      raise ValueError(f"--text_key={text_key!r} is not a feature of "
                       f"{name!r}; it has {sorted(example)}.")
    yield example[text_key]


def shard_lines(pieces: Sequence[Piece], options: options_lib.Options,
                stats: Stats, warnings: list[str]) -> Iterator[str | None]:
  """Non-blank stripped lines of a shard; None marks a document's end."""
  for piece in pieces:
    if piece.source.startswith("tfds:"):
      for text in _tfds_texts(piece, options.tfds_data_dir, options.text_key):
        if isinstance(text, bytes):
          text = _decode(text, stats)
        lines = [line.strip() for line in str(text).splitlines()]
        lines = [line for line in lines if line]
        if not lines:
          stats.empty_documents += 1
          continue
        yield from lines
        yield None
      continue
    any_text = in_document = False
    before = dataclasses.replace(stats)
    for line in _file_lines(piece, stats, options.max_line_bytes):
      line = line.strip()
      if line:
        any_text = in_document = True
        yield line
      elif in_document:
        in_document = False
        yield None
    if in_document:
      yield None
    if not any_text and piece.start == 0 and piece.stop >= piece.size:
      stats.whitespace_only_files += 1
      warnings.append(f"{piece.source}: contains only whitespace; skipped.")
    if bad := stats.invalid_utf8_lines - before.invalid_utf8_lines:
      warnings.append(f"{piece.source}: {bad} line(s) with invalid UTF-8; "
                      "bad bytes replaced by U+FFFD.")
    if cut := stats.long_lines - before.long_lines:
      warnings.append(
          f"{piece.source}: {cut} line(s) longer than "
          f"{options.max_line_bytes} bytes, read in pieces of that size (is "
          "this text?).")


def _glob(pattern: str) -> list[str]:
  """Paths matching `pattern`: local (`~` and `**` expanded) or in a bucket
  (gs://bucket/dir/*.txt)."""
  if "://" in pattern:
    root, _, rest = pattern.partition("://")
    bucket, _, inner = rest.partition("/")
    base = epath.Path(f"{root}://{bucket}")
    return [str(p) for p in base.glob(inner)] if inner else [pattern]
  return glob.glob(os.path.expanduser(pattern), recursive=True)


def list_inputs(options: options_lib.Options, warnings: list[str]
                ) -> tuple[list[tuple[str, int]], int]:
  """Returns the sources with their sizes, and the number of empty files."""
  if options.tfds:
    builder = _tfds_builder(options.tfds, options.tfds_data_dir)
    if options.tfds_split not in builder.info.splits:
      raise ValueError(f"TFDS dataset {options.tfds!r} has no split "
                       f"{options.tfds_split!r}; it has "
                       f"{sorted(builder.info.splits)}.")
    count = builder.info.splits[options.tfds_split].num_examples
    return [(f"tfds:{options.tfds}:{options.tfds_split}", count)], 0
  files = set()
  for pattern in options.inputs:
    matched = [p for p in _glob(pattern) if epath.Path(p).is_file()]
    if not matched:
      raise errors.UserError(f"--input pattern {pattern!r} matched no files.")
    files.update(matched)
  sources, empty = [], 0
  for path in sorted(files):
    with epath.Path(path).open("rb") as f:
      head = f.read(8192)
    if b"\x00" in head:  # Text never holds NUL bytes; binaries do.
      raise errors.UserError(
          f"{path} looks like a binary file (it holds NUL bytes), not text; "
          "pass text files with --input.")
    size = epath.Path(path).stat().length
    if size:
      sources.append((path, size))
    else:
      empty += 1
      warnings.append(f"{path}: empty file; skipped.")
  if not sources:
    raise errors.UserError(f"All {len(files)} input file(s) are empty.")
  return sources, empty

