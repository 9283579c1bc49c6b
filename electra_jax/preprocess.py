r"""Builds ELECTRA pretraining data: text -> packed examples -> ArrayRecord.

  python -m electra_jax.preprocess --input='corpus/*.txt' --output_dir=data \
      --vocab_size=32000 --max_seq_length=128
  python -m electra_jax.preprocess --tfds=wikipedia/20230601.en \
      --tfds_data_dir=~/tensorflow_datasets --tokenizer=vocab.txt \
      --output_dir=data

Input text follows google-research/electra's `build_pretraining_dataset.py`:
documents are separated by blank lines and each line is a sentence or a
paragraph; paragraphs are split into sentences by a punctuation rule. A TFDS
record is one document whose lines are paragraphs. Packing is the reference's
(see `ExampleBuilder`). Whole documents go to the held-out eval split with
probability `eval_fraction`.

Output directory:
  tokenizer.model | vocab.txt          the tokenizer (trained here or copied)
  settings.json                        settings; a re-run must match them
  {train,eval}-00003-of-00008.array_record   one pair per input shard
  done/00003.json                      shard 3 is complete, with its counts
  metadata.json                        written last: the dataset is complete

Shards are written under a temporary name and renamed, then marked done; a
re-run skips done shards, so an interrupted run resumes where it stopped.

Record format ("ids_v1"): one example per record, a little-endian vector of
`record_dtype` (uint16 if vocab_size <= 65536, else int32) holding
`[n_a, ids...]`: `ids` is `[CLS] A [SEP] B [SEP]` without padding and `n_a`
is the length of `[CLS] A [SEP]` (segment 0; the rest is segment 1).
"""

import collections
from collections.abc import Iterator, Sequence
import dataclasses
import glob
import itertools
import json
import math
import multiprocessing
import os
import random
import re
import shutil
import time
from typing import Any

from absl import app
from absl import flags
from absl import logging
from array_record.python import array_record_module
import numpy as np

from electra_jax import tokenization

FORMAT_VERSION = 1
RECORD_FORMAT = "ids_v1"
_MIN_SHARDS = 4  # Small corpora: one shard per file, up to this many.
_ENCODE_CHUNK = 512  # Sentences per tokenizer call.
_MAX_WARNINGS = 10  # Per shard; the counts in the summary are complete.

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


class ExampleBuilder:
  """Packs sentences into examples as electra's `ExampleBuilder` does.

  Sentences accumulate until their length reaches the target length (or the
  document ends), then become one example `[CLS] A [SEP] B [SEP]`. With
  probability 0.1 the first segment may take everything (a single segment);
  otherwise it takes sentences up to half the target. A sentence that would
  push it over goes to A anyway half of the time if B is still empty. A is
  cut to `max_length - 2` tokens and B to what is left. With probability
  0.05 the next target length is drawn uniformly from [5, max_length].
  """

  def __init__(self, max_length: int, cls_id: int, sep_id: int,
               rng: random.Random):
    self._max_length = max_length
    self._target_length = max_length
    self._cls_id, self._sep_id = cls_id, sep_id
    self._rng = rng
    self._sentences: list[list[int]] = []
    self._length = 0

  def add_sentence(self, ids: Sequence[int]) -> tuple[list[int], int] | None:
    """Adds a tokenized sentence; returns `(ids, n_a)` when one is complete."""
    if not ids:
      return None
    self._sentences.append(list(ids))
    self._length += len(ids)
    if self._length >= self._target_length:
      return self._create_example()
    return None

  def end_document(self) -> tuple[list[int], int] | None:
    """Ends the document: what has accumulated becomes an example."""
    return self._create_example() if self._length else None

  def _create_example(self) -> tuple[list[int], int]:
    if self._rng.random() < 0.1:
      first_target = 100_000  # Only one segment, as in classification.
    else:
      first_target = (self._target_length - 3) // 2  # Room for CLS, 2 SEPs.
    first, second = [], []
    for sentence in self._sentences:
      if (not first or len(first) + len(sentence) < first_target or
          (not second and len(first) < first_target and
           self._rng.random() < 0.5)):
        first += sentence
      else:
        second += sentence
    first = first[:self._max_length - 2]
    second = second[:max(0, self._max_length - len(first) - 3)]
    self._sentences, self._length = [], 0
    if self._rng.random() < 0.05:
      self._target_length = self._rng.randint(5, self._max_length)
    else:
      self._target_length = self._max_length
    ids = [self._cls_id] + first + [self._sep_id]
    n_a = len(ids)
    if second:
      ids += second + [self._sep_id]
    return ids, n_a


def record_dtype(vocab_size: int) -> np.dtype:
  """The on-disk id type: uint16 when every id fits, else int32."""
  return np.dtype("<u2") if vocab_size <= 65536 else np.dtype("<i4")


def encode_record(ids: Sequence[int], n_a: int, dtype: np.dtype) -> bytes:
  """Serializes one example (see the module docstring)."""
  return np.asarray([n_a, *ids], dtype=dtype).tobytes()


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


@dataclasses.dataclass(frozen=True)
class Options:
  """Preprocessing settings; the flags of the same names set them."""
  output_dir: str
  inputs: tuple[str, ...] = ()
  tfds: str = ""
  tfds_split: str = "train"
  tfds_data_dir: str = ""
  text_key: str = "text"
  tokenizer: str = ""
  vocab_size: int = 32000
  model_type: str = "unigram"
  lowercase: bool = True
  character_coverage: float = 0.9995
  tokenizer_train_mb: int = 100
  max_seq_length: int = 128
  eval_fraction: float = 0.02
  seed: int = 0
  num_workers: int = 0
  shard_mb: int = 32
  tfds_docs_per_shard: int = 50_000
  max_line_bytes: int = 1 << 20


_HELP = {
    "output_dir": "Where the dataset is written (resumable).",
    "inputs": "Comma-separated globs of UTF-8 text files: one sentence or "
              "paragraph per line, blank lines between documents.",
    "tfds": "Instead of --input: a TFDS text dataset, prepared locally.",
    "tfds_split": "The TFDS split to read.",
    "tfds_data_dir": "The TFDS data_dir (empty: TFDS's default).",
    "text_key": "The TFDS feature holding the text.",
    "tokenizer": "A sentencepiece .model or a WordPiece vocab.txt; empty: "
                 "train a sentencepiece model on the input.",
    "vocab_size": "Pieces of the sentencepiece model trained here.",
    "model_type": "Type of the sentencepiece model trained here: unigram|bpe.",
    "lowercase": "Lower-case: the trained model; a WordPiece vocab also "
                 "strips accents (uncased). Sentencepiece models carry their "
                 "own normalization.",
    "character_coverage": "Characters covered by the trained model.",
    "tokenizer_train_mb": "Text (MB) read, spread over the shards, to train "
                          "the tokenizer.",
    "max_seq_length": "Tokens per example, [CLS] and [SEP]s included.",
    "eval_fraction": "Fraction of documents held out for evaluation.",
    "seed": "Seeds packing and the eval split.",
    "num_workers": "Worker processes; 0: min(4, CPUs).",
    "shard_mb": "Text (MB) per output shard.",
    "tfds_docs_per_shard": "TFDS records per output shard.",
    "max_line_bytes": "Longer lines are read in pieces of this size.",
}


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
  with open(piece.source, "rb") as f:
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


def _shard_lines(pieces: Sequence[Piece], options: "Options", stats: Stats,
                 warnings: list[str]) -> Iterator[str | None]:
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


class _ShardWriter:
  """Tokenizes and packs one shard's lines, writing train and eval files."""

  def __init__(self, index: int, options: "Options", num_shards: int,
               tokenizer_file: str):
    self._tok = tokenization.load_tokenizer(
        os.path.join(options.output_dir, tokenizer_file),
        lowercase=options.lowercase)
    ids = self._tok.special_ids
    seed = f"{options.seed}:{index}"
    self._builders = {
        split: ExampleBuilder(options.max_seq_length, ids["cls_id"],
                              ids["sep_id"], random.Random(f"{seed}:{split}"))
        for split in ("train", "eval")}
    self._split_rng = random.Random(f"{seed}:split")
    self._dtype = record_dtype(self._tok.vocab_size)
    self._options, self.stats = options, Stats()
    self._names = {split: f"{split}-{index:05d}-of-{num_shards:05d}"
                   ".array_record" for split in ("train", "eval")}
    self._writers, self._split, self._pending, self._doc_tokens = {}, "", [], 0

  def add_line(self, line: str | None) -> None:
    if line is None:
      self._flush(end_document=True)
      return
    if not self._split:
      self._split = ("eval" if self._split_rng.random() <
                     self._options.eval_fraction else "train")
    self._pending.extend(split_sentences(line))
    if len(self._pending) >= _ENCODE_CHUNK:
      self._flush(end_document=False)

  def _flush(self, end_document: bool) -> None:
    builder = self._builders[self._split or "train"]
    for ids in self._tok.encode_batch(self._pending) if self._pending else []:
      self.stats.sentences += bool(ids)
      self._doc_tokens += len(ids)
      self._write(builder.add_sentence(ids))
    self._pending = []
    if end_document:
      self._write(builder.end_document())
      self.stats.documents += bool(self._doc_tokens)
      self.stats.empty_documents += not self._doc_tokens
      self.stats.tokens += self._doc_tokens
      self._split, self._doc_tokens = "", 0

  def _write(self, example: tuple[list[int], int] | None) -> None:
    if example is None:
      return
    if self._split not in self._writers:
      path = os.path.join(self._options.output_dir, self._names[self._split])
      self._writers[self._split] = array_record_module.ArrayRecordWriter(
          path + ".tmp", "group_size:1")
    self._writers[self._split].write(encode_record(*example, self._dtype))
    setattr(self.stats, f"{self._split}_examples",
            getattr(self.stats, f"{self._split}_examples") + 1)

  def close(self) -> dict[str, str]:
    """Closes and renames the files; returns {split: file name}."""
    self._flush(end_document=True)
    files = {}
    for split, writer in self._writers.items():
      writer.close()
      path = os.path.join(self._options.output_dir, self._names[split])
      os.replace(path + ".tmp", path)
      files[split] = self._names[split]
    return files


def _process_shard(job: tuple[int, tuple[Piece, ...], "Options", int, str]
                   ) -> dict[str, Any]:
  """Builds one shard (in a worker process) and marks it done."""
  index, pieces, options, num_shards, tokenizer_file = job
  start = time.time()
  writer = _ShardWriter(index, options, num_shards, tokenizer_file)
  warnings = []
  for line in _shard_lines(pieces, options, writer.stats, warnings):
    writer.add_line(line)
  files = writer.close()
  result = {"index": index, "files": files,
            "stats": dataclasses.asdict(writer.stats),
            "warnings": warnings[:_MAX_WARNINGS],
            "num_warnings": len(warnings),
            "size": sum(p.stop - p.start for p in pieces),
            "seconds": time.time() - start}
  _write_json(_done_path(options.output_dir, index), result)
  return result


def _done_path(output_dir: str, index: int) -> str:
  return os.path.join(output_dir, "done", f"{index:05d}.json")


def _write_json(path: str, value: Any) -> None:
  """Writes JSON atomically: to a temporary name, then renamed."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + ".tmp", "w") as f:
    json.dump(value, f, indent=1, sort_keys=True)
  os.replace(path + ".tmp", path)


def _list_inputs(options: Options, warnings: list[str]
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
    matched = [p for p in glob.glob(os.path.expanduser(pattern),
                                    recursive=True) if os.path.isfile(p)]
    if not matched:
      raise ValueError(f"--input pattern {pattern!r} matched no files.")
    files.update(matched)
  sources, empty = [], 0
  for path in sorted(files):
    size = os.path.getsize(path)
    if size:
      sources.append((path, size))
    else:
      empty += 1
      warnings.append(f"{path}: empty file; skipped.")
  if not sources:
    raise ValueError(f"All {len(files)} input file(s) are empty.")
  return sources, empty


def plan_shards(sources: Sequence[tuple[str, int]], shard_size: int
                ) -> list[tuple[Piece, ...]]:
  """Groups small sources and splits large ones into about-equal shards.

  There are ceil(total / shard_size) shards, but at least one per source up
  to _MIN_SHARDS (so that small corpora still use several workers). The plan
  depends only on the sources and `shard_size`, never on the worker count.
  """
  total = sum(size for _, size in sources)
  num = max(1, math.ceil(total / shard_size), min(len(sources), _MIN_SHARDS))
  target = total / num
  shards, offset = collections.defaultdict(list), 0
  for source, size in sources:
    parts = max(1, round(size / target))
    for k in range(parts):
      start, stop = size * k // parts, size * (k + 1) // parts
      # A piece goes to the shard its middle falls in.
      shard = min(num - 1, int((offset + (start + stop) / 2) // target))
      shards[shard].append(Piece(source, start, stop, size))
    offset += size
  return [tuple(shards[k]) for k in sorted(shards)]


def _training_sentences(shards: Sequence[tuple[Piece, ...]],
                        options: Options) -> Iterator[str]:
  """Sentences for tokenizer training: the first part of every shard."""
  budget = options.tokenizer_train_mb * 2**20 // len(shards)
  for pieces in shards:
    used = 0
    for line in _shard_lines(pieces, options, Stats(), []):
      if line is not None:
        yield from split_sentences(line)
        used += len(line)
        if used >= budget:
          break


def _prepare_tokenizer(shards: Sequence[tuple[Piece, ...]],
                       options: Options) -> tokenization.Tokenizer:
  """Copies the given tokenizer next to the data, or trains one there."""
  if options.tokenizer:
    name = ("vocab.txt" if options.tokenizer.endswith(".txt")
            else "tokenizer.model")
    path = os.path.join(options.output_dir, name)
    tokenization.load_tokenizer(options.tokenizer)  # Fails early if unfit.
    if not os.path.exists(path):
      shutil.copyfile(options.tokenizer, path + ".tmp")
      os.replace(path + ".tmp", path)
    return tokenization.load_tokenizer(path, lowercase=options.lowercase)
  path = os.path.join(options.output_dir, "tokenizer.model")
  if not os.path.exists(path):
    sentences = _training_sentences(shards, options)
    first = next(sentences, None)
    if first is None:
      raise ValueError("No text found in the input: every file is empty or "
                       "whitespace-only.")
    logging.info("Training a %d-piece sentencepiece %s model on up to %d MB "
                 "of the input.", options.vocab_size, options.model_type,
                 options.tokenizer_train_mb)
    tokenization.train_sentencepiece(
        [], path[:-len(".model")], options.vocab_size,
        sentences=itertools.chain([first], sentences),
        model_type=options.model_type, lowercase=options.lowercase,
        character_coverage=options.character_coverage, seed=options.seed)
  return tokenization.load_tokenizer(path)


def _check_options(options: Options) -> None:
  if bool(options.inputs) == bool(options.tfds):
    raise ValueError("Pass exactly one of --input or --tfds.")
  if not 8 <= options.max_seq_length <= 65535:
    raise ValueError("--max_seq_length must be in [8, 65535], not "
                     f"{options.max_seq_length}.")
  if not 0 <= options.eval_fraction < 1:
    raise ValueError("--eval_fraction must be in [0, 1).")


def preprocess(options: Options) -> dict[str, Any]:
  """Builds (or completes) a dataset in `options.output_dir`.

  Args:
    options: the settings (see `Options` and the flags).

  Returns:
    The dataset's metadata (also written to `metadata.json`).
  """
  _check_options(options)
  out = options.output_dir
  os.makedirs(out, exist_ok=True)
  warnings = []
  sources, empty_files = _list_inputs(options, warnings)
  for warning in warnings:
    logging.warning("%s", warning)
  shard_size = (options.tfds_docs_per_shard if options.tfds
                else options.shard_mb * 2**20)
  shards = plan_shards(sources, shard_size)
  settings = dataclasses.asdict(options)
  for key in ("output_dir", "num_workers"):
    del settings[key]
  settings.update(format_version=FORMAT_VERSION, sources=sources,
                  num_shards=len(shards))
  settings = json.loads(json.dumps(settings))
  settings_path = os.path.join(out, "settings.json")
  if os.path.exists(settings_path):
    with open(settings_path) as f:
      old = json.load(f)
    changed = sorted(k for k in settings.keys() | old.keys()
                     if settings.get(k) != old.get(k))
    if changed:
      raise ValueError(
          f"{out} holds data built with different settings "
          f"({', '.join(changed)} differ); use a new --output_dir or delete "
          "this one.")
  else:
    _write_json(settings_path, settings)
  metadata_path = os.path.join(out, "metadata.json")
  if os.path.exists(metadata_path):
    logging.info("%s is already complete.", out)
    with open(metadata_path) as f:
      return json.load(f)

  tok = _prepare_tokenizer(shards, options)
  tokenizer_file = os.path.basename(tok.path)
  jobs = [(i, pieces, options, len(shards), tokenizer_file)
          for i, pieces in enumerate(shards)
          if not os.path.exists(_done_path(out, i))]
  num_workers = min(options.num_workers or min(4, os.cpu_count() or 1),
                    len(jobs))
  unit = "records" if options.tfds else "MB"
  scale = 1 if options.tfds else 1e6
  logging.info("Packing %d of %d shard(s) (%.1f %s of input) with %d "
               "worker(s) into %s.", len(jobs), len(shards),
               sum(s for _, s in sources) / scale, unit, num_workers, out)
  start, done = time.time(), 0
  if num_workers > 1:
    pool = multiprocessing.get_context("spawn").Pool(num_workers)
    results = pool.imap_unordered(_process_shard, jobs)
  else:
    pool, results = None, map(_process_shard, jobs)
  try:
    for k, result in enumerate(results, 1):
      done += result["size"]
      for warning in result["warnings"]:
        logging.warning("%s", warning)
      logging.info("Shard %d/%d done: %d train, %d eval examples (%.1f %s/s).",
                   k, len(jobs), result["stats"]["train_examples"],
                   result["stats"]["eval_examples"],
                   done / scale / max(time.time() - start, 1e-6), unit)
  finally:
    if pool is not None:
      pool.terminate()
  return _finish(options, tok, len(shards), sources, empty_files)


def _finish(options: Options, tok: tokenization.Tokenizer, num_shards: int,
            sources: list[tuple[str, int]], empty_files: int
            ) -> dict[str, Any]:
  """Checks that every shard is done and writes `metadata.json`."""
  out = options.output_dir
  stats = Stats(files=len(sources) + empty_files, empty_files=empty_files)
  files = collections.defaultdict(list)
  for i in range(num_shards):
    with open(_done_path(out, i)) as f:
      result = json.load(f)
    stats.add(result["stats"])
    for split, name in sorted(result["files"].items()):
      files[split].append(
          {"path": name, "num_examples": result["stats"][f"{split}_examples"]})
  stats.bytes = sum(size for _, size in sources) if not options.tfds else 0
  if not stats.train_examples:
    raise ValueError(
        f"No training examples: the {stats.files} input file(s) hold no "
        f"text ({stats.empty_files} empty, {stats.whitespace_only_files} "
        "whitespace-only).")
  if stats.invalid_utf8_lines:
    logging.warning("%d line(s) had invalid UTF-8; bad bytes were replaced "
                    "by U+FFFD.", stats.invalid_utf8_lines)
  if stats.long_lines:
    logging.warning("%d line(s) were longer than %d bytes and were read in "
                    "pieces.", stats.long_lines, options.max_line_bytes)
  if options.eval_fraction and not stats.eval_examples:
    logging.warning("The eval split is empty: too few documents for "
                    "--eval_fraction=%g.", options.eval_fraction)
  tokenizer_path = tok.path
  metadata = {
      "format_version": FORMAT_VERSION,
      "record_format": RECORD_FORMAT,
      "record_dtype": record_dtype(tok.vocab_size).name,
      "vocab_size": tok.vocab_size,
      **tok.special_ids,
      "max_seq_length": options.max_seq_length,
      "num_train_examples": stats.train_examples,
      "num_eval_examples": stats.eval_examples,
      "train_files": files["train"],
      "eval_files": files["eval"],
      "tokenizer": os.path.basename(tokenizer_path),
      "tokenizer_type": tok.kind,
      "tokenizer_sha256": tokenization.file_sha256(tokenizer_path),
      "lowercase": options.lowercase,
      "num_shards": num_shards,
      "seed": options.seed,
      "eval_fraction": options.eval_fraction,
      "source": options.tfds or list(options.inputs),
      "stats": dataclasses.asdict(stats),
  }
  _write_json(os.path.join(out, "metadata.json"), metadata)
  logging.info("Wrote %s: %d train and %d eval examples, %d tokens, from %d "
               "document(s).", out, stats.train_examples, stats.eval_examples,
               stats.tokens, stats.documents)
  return metadata


def _define_flags() -> None:
  """Defines the flags (only when run as a program, never on import)."""
  defaults = Options(output_dir="")
  for field in dataclasses.fields(Options):
    name, default, help_ = field.name, getattr(defaults, field.name), \
        _HELP[field.name]
    if name == "output_dir":
      flags.DEFINE_string(name, None, help_, required=True)
    elif name == "inputs":
      flags.DEFINE_list("input", [], help_)
    elif isinstance(default, bool):
      flags.DEFINE_bool(name, default, help_)
    elif isinstance(default, int):
      flags.DEFINE_integer(name, default, help_)
    elif isinstance(default, float):
      flags.DEFINE_float(name, default, help_)
    else:
      flags.DEFINE_string(name, default, help_)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  values = {f.name: flags.FLAGS[f.name if f.name != "inputs" else "input"].value
            for f in dataclasses.fields(Options)}
  values["inputs"] = tuple(values["inputs"])
  preprocess(Options(**values))


if __name__ == "__main__":
  _define_flags()
  app.run(main)
