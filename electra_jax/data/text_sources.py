"""Reads the input text of preprocessing: files, TFDS or `datasets`, as lines.

Input text follows google-research/electra's `build_pretraining_dataset.py`:
a line is the unit packing works with (a sentence or a paragraph), and blank
lines separate documents. With `blanks_separate_docs=False` blank lines are
skipped and a whole file is one document, as the reference's
`build_openwebtext_pretraining_dataset.py` reads OpenWebText. A TFDS record
or a `datasets` row (`hf_source`) is read as a file's contents: one
document, also cut at blank lines unless `blanks_separate_docs` is off.
Lines are split further into sentences only if `split_sentences` is on
(`sentence_splitter`, with the optional `sentencex` package).

A source is read in `Piece`s (byte ranges of a file, record ranges of a
TFDS split, whole `datasets` files) so that shards can be built in parallel.
Bad input is counted in `Stats` rather than fatal: invalid UTF-8 is replaced
by U+FFFD, and lines longer than `max_line_bytes` are read in pieces of that
size.
"""

from collections.abc import Callable, Iterable, Iterator, Sequence
import dataclasses
import glob
import io
import os
from typing import Any

from etils import epath

from electra_jax import errors
from electra_jax.data import hf_source
from electra_jax.data import options as options_lib

INPUT_FORMATS = ("auto", "text", "hf")


def sentence_splitter(options: options_lib.Options
                      ) -> Callable[[str], list[str]]:
  """What a line becomes for packing: itself, or its sentences.

  The reference packs lines as they are; `split_sentences` splits them with
  sentencex (rule-based, many languages, no model files), for corpora that
  hold a paragraph per line.
  """
  if not options.split_sentences:
    return lambda line: [line]
  try:
    import sentencex  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise errors.UserError(
        "--split_sentences needs the sentencex package: pip install "
        "sentencex==1.0.32 (or leave --split_sentences off: a line is then "
        "one sentence).") from e
  language = options.sentence_language

  def split(line: str) -> list[str]:
    return [s.strip() for s in sentencex.segment(language, line) if s.strip()]
  return split


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
  """A byte range [start, stop) of a file, records of a TFDS split, or a
  whole `datasets` file (its bytes)."""
  source: str  # A file path, "tfds:NAME:SPLIT" or "hf:BUILDER:PATH".
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
    raise errors.UserError(
        f"TFDS dataset {name!r}: {str(e).splitlines()[0]} Prepare it first "
        f"(`tfds build {name} --data_dir=DIR`), then pass "
        "--tfds_data_dir=DIR.") from e
  if not builder.is_prepared():
    raise errors.UserError(
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
      raise errors.UserError(f"--text_key={text_key!r} is not a feature of "
                       f"{name!r}; it has {sorted(example)}.")
    yield example[text_key]


def _record_lines(text: str, blanks_separate_docs: bool
                  ) -> Iterator[str | None]:
  """A TFDS record's or a row's lines, read as a file's contents: None ends
  each document."""
  in_document = False
  for line in text.split("\n"):
    line = line.strip()
    if line:
      in_document = True
      yield line
    elif in_document and blanks_separate_docs:
      in_document = False
      yield None
  if in_document:
    yield None


def _records(piece: Piece, options: options_lib.Options) -> Iterable[Any]:
  """The texts of a TFDS piece's records or a `datasets` file's rows."""
  if piece.source.startswith(hf_source.PREFIX):
    return hf_source.texts(piece.source, options.text_column)
  return _tfds_texts(piece, options.tfds_data_dir, options.text_key)


def splittable(source: str, options: options_lib.Options) -> bool:
  """Whether a source may be read in several byte ranges.

  Only text files whose documents end at blank lines: a file that is one
  document stays whole, so that it is one document of one shard (and of one
  split); `datasets` files are read row by row from their start.
  """
  return (options.blanks_separate_docs and
          not source.startswith((hf_source.PREFIX, "tfds:")))


def shard_lines(pieces: Sequence[Piece], options: options_lib.Options,
                stats: Stats, warnings: list[str]) -> Iterator[str | None]:
  """Non-blank stripped lines of a shard; None marks a document's end."""
  for piece in pieces:
    if piece.source.startswith(("tfds:", hf_source.PREFIX)):
      for text in _records(piece, options):
        if isinstance(text, bytes):
          text = _decode(text, stats)
        lines = list(_record_lines(text or "", options.blanks_separate_docs))
        if not lines:
          stats.empty_documents += 1
        yield from lines
      continue
    any_text = in_document = False
    before = dataclasses.replace(stats)
    for line in _file_lines(piece, stats, options.max_line_bytes):
      line = line.strip()
      if line:
        any_text = in_document = True
        yield line
      elif in_document and options.blanks_separate_docs:
        in_document = False
        yield None
    if in_document:  # A piece is whole when blank lines do not end documents.
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


def _classify(pattern: str, input_format: str) -> list[str]:
  """The sources a pattern names: text file paths, or `hf_source` names.

  A directory is a saved dataset (unless `input_format` is "text"); one that
  is not is an error when named outright and skipped when a glob matched it.
  A file is a `datasets` file by its extension under "auto", always under
  "hf", never under "text".
  """
  sources = []
  for path in sorted(_glob(pattern)):
    p = epath.Path(path)
    if p.is_dir():
      if input_format == "text":
        continue
      if hf_source.is_dataset_dir(path) or not glob.has_magic(pattern):
        sources += [hf_source.source_name("arrow", f)
                    for f in hf_source.saved_dataset_files(path)]
    elif p.is_file():
      builder = hf_source.builder_of(path) if input_format != "text" else None
      if input_format == "hf" and builder is None:
        raise errors.UserError(
            f"--input_format=hf: {path} is not a saved dataset nor a file "
            f"of a kind `datasets` reads ({', '.join(hf_source.BUILDERS)}); "
            "pass --input_format=text for plain text.")
      sources.append(hf_source.source_name(builder, path) if builder else path)
  return sources


def list_inputs(options: options_lib.Options, warnings: list[str]
                ) -> tuple[list[tuple[str, int]], int]:
  """Returns the sources with their sizes, and the number of empty files."""
  if options.tfds:
    builder = _tfds_builder(options.tfds, options.tfds_data_dir)
    if options.tfds_split not in builder.info.splits:
      raise errors.UserError(f"TFDS dataset {options.tfds!r} has no split "
                       f"{options.tfds_split!r}; it has "
                       f"{sorted(builder.info.splits)}.")
    count = builder.info.splits[options.tfds_split].num_examples
    return [(f"tfds:{options.tfds}:{options.tfds_split}", count)], 0
  files = set()
  for pattern in options.inputs:
    matched = _classify(pattern, options.input_format)
    if not matched:
      raise errors.UserError(f"--input pattern {pattern!r} matched no files.")
    files.update(matched)
  sources, empty = [], 0
  for source in sorted(files):
    is_hf = source.startswith(hf_source.PREFIX)
    path = source.split(":", 2)[2] if is_hf else source
    if not is_hf:
      with epath.Path(path).open("rb") as f:
        head = f.read(8192)
      if b"\x00" in head:  # Text never holds NUL bytes; binaries do.
        raise errors.UserError(
            f"{path} looks like a binary file (it holds NUL bytes), not "
            "text; pass text files with --input.")
    size = epath.Path(path).stat().length
    if size:
      sources.append((source, size))
    else:
      empty += 1
      warnings.append(f"{path}: empty file; skipped.")
  if not sources:
    raise errors.UserError(f"All {len(files)} input file(s) are empty.")
  if hf := [s for s, _ in sources if s.startswith(hf_source.PREFIX)]:
    hf_source.check_column(hf[0], options.text_column)
  return sources, empty
