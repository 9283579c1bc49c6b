"""Builds ELECTRA pretraining data: text -> packed examples -> ArrayRecord.

The command line is `python -m electra_jax.preprocess`; its docstring (in
`electra_jax/preprocess.py`, shown by `--help`) describes the input text and
the output directory. `preprocess(options)` plans the shards, copies or
trains the tokenizer, packs the shards in worker processes (reading:
`text_sources`; packing: `packing.ShardWriter`), marks each shard done so
that a re-run resumes, and writes `metadata.json` last, naming the record
format (`records`) that readers check.
"""

import collections
from collections.abc import Callable, Iterator, Sequence
import dataclasses
import hashlib
import itertools
import json
import math
import multiprocessing
import os
import shutil
import tempfile
import time
from typing import Any

from absl import app
from absl import flags
from absl import logging
from etils import epath

from electra_jax import errors
from electra_jax.data import options as options_lib
from electra_jax.data import packing
from electra_jax.data import records
from electra_jax.data import text_sources
from electra_jax.data import tokenization

FORMAT_VERSION = 1
_MIN_SHARDS = 4  # Small corpora: one shard per file, up to this many.
_MAX_WARNINGS = 10  # Per shard; the counts in the summary are complete.
# Characters of a tokenizer-training sentence: 4 UTF-8 bytes each at most
# stay under sentencepiece's default max_sentence_length of 4192 bytes.
_SPM_MAX_CHARS = 1000


_HELP = {
    "output_dir": "Where the dataset is written (resumable).",
    "inputs": "Comma-separated globs of UTF-8 text files (a sentence or "
              "paragraph per line, blank lines between documents), of "
              ".parquet/.json/.jsonl/.csv/.arrow files, or directories of "
              "datasets saved with save_to_disk (read with Hugging Face "
              "datasets, streaming).",
    "input_format": "auto: by extension (.parquet, .json, .jsonl, .csv, "
                    ".arrow and saved-dataset directories are datasets, the "
                    "rest text); text: every file is text; hf: every input "
                    "must be a dataset.",
    "text_column": "The column of a dataset (--input) holding the text.",
    "blanks_separate_docs": "Blank lines end documents, as in electra's "
                            "build_pretraining_dataset.py. Off: a whole file "
                            "or dataset row is one document, blank lines "
                            "skipped (its openwebtext build); use it for rows "
                            "holding whole articles (Wikipedia).",
    "split_sentences": "Split each line into sentences (needs the sentencex "
                       "package). Off, as in electra: a line is a sentence.",
    "sentence_language": "Language code for --split_sentences (en, de, "
                         "ja...).",
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


def _process_shard(
    job: tuple[int, tuple[text_sources.Piece, ...], options_lib.Options, int,
               str]
) -> dict[str, Any]:
  """Builds one shard (in a worker process) and marks it done."""
  index, pieces, options, num_shards, tokenizer_file = job
  start = time.time()
  writer = packing.ShardWriter(index, options, num_shards, tokenizer_file)
  warnings = []
  for line in text_sources.shard_lines(pieces, options, writer.stats,
                                       warnings):
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


def plan_shards(sources: Sequence[tuple[str, int]], shard_size: int,
                splittable: Callable[[str], bool] = lambda source: True
                ) -> list[tuple[text_sources.Piece, ...]]:
  """Groups small sources and splits large ones into about-equal shards.

  There are ceil(total / shard_size) shards, but at least one per source up
  to _MIN_SHARDS (so that small corpora still use several workers). A source
  for which `splittable` is false stays one piece. The plan depends only on
  the sources, `shard_size` and `splittable`, never on the worker count.
  """
  total = sum(size for _, size in sources)
  num = max(1, math.ceil(total / shard_size), min(len(sources), _MIN_SHARDS))
  target = total / num
  shards, offset = collections.defaultdict(list), 0
  for source, size in sources:
    parts = max(1, round(size / target)) if splittable(source) else 1
    for k in range(parts):
      start, stop = size * k // parts, size * (k + 1) // parts
      # A piece goes to the shard its middle falls in.
      shard = min(num - 1, int((offset + (start + stop) / 2) // target))
      shards[shard].append(text_sources.Piece(source, start, stop, size))
    offset += size
  return [tuple(shards[k]) for k in sorted(shards)]


def _training_sentences(shards: Sequence[tuple[text_sources.Piece, ...]],
                        options: options_lib.Options) -> Iterator[str]:
  """Sentences for tokenizer training: the first part of every shard."""
  budget = options.tokenizer_train_mb * 2**20 // len(shards)
  split = text_sources.sentence_splitter(options)
  for pieces in shards:
    used = 0
    for line in text_sources.shard_lines(pieces, options,
                                         text_sources.Stats(), []):
      if line is not None:
        for sentence in split(line):
          yield from _spm_sized(sentence)
        used += len(line)
        if used >= budget:
          break


def _spm_sized(sentence: str) -> Iterator[str]:
  """A sentence, in parts of whole words if sentencepiece's trainer would
  skip it whole (over 4192 bytes: a paragraph per line, unsplit)."""
  if len(sentence) <= _SPM_MAX_CHARS:
    yield sentence
    return
  part, size = [], 0
  for word in sentence.split():
    if part and size + len(word) > _SPM_MAX_CHARS:
      yield " ".join(part)
      part, size = [], 0
    part.append(word)
    size += len(word) + 1
  if part:
    yield " ".join(part)


def _prepare_tokenizer(shards: Sequence[tuple[text_sources.Piece, ...]],
                       options: options_lib.Options) -> tokenization.Tokenizer:
  """Copies the given tokenizer next to the data, or trains one there."""
  if options.tokenizer:
    name = ("vocab.txt" if options.tokenizer.endswith(".txt")
            else "tokenizer.model")
    path = os.path.join(options.output_dir, name)
    tokenization.load_tokenizer(options.tokenizer)  # Fails early if unfit.
    if not os.path.exists(path):
      epath.Path(options.tokenizer).copy(path + ".tmp", overwrite=True)
      os.replace(path + ".tmp", path)
    return tokenization.load_tokenizer(path, lowercase=options.lowercase)
  path = os.path.join(options.output_dir, "tokenizer.model")
  if not os.path.exists(path):
    sentences = _training_sentences(shards, options)
    first = next(sentences, None)
    if first is None:
      raise errors.UserError("No text found in the input: every file is "
                             "empty or whitespace-only.")
    logging.info("Training a %d-piece sentencepiece %s model on up to %d MB "
                 "of the input.", options.vocab_size, options.model_type,
                 options.tokenizer_train_mb)
    tokenization.train_sentencepiece(
        [], path[:-len(".model")], options.vocab_size,
        sentences=itertools.chain([first], sentences),
        model_type=options.model_type, lowercase=options.lowercase,
        character_coverage=options.character_coverage, seed=options.seed)
  return tokenization.load_tokenizer(path)


def _check_options(options: options_lib.Options) -> None:
  if bool(options.inputs) == bool(options.tfds):
    raise errors.UserError("Pass exactly one of --input or --tfds.")
  if not 8 <= options.max_seq_length <= 65535:
    raise errors.UserError("--max_seq_length must be in [8, 65535], not "
                           f"{options.max_seq_length}.")
  if not 0 <= options.eval_fraction < 1:
    raise errors.UserError("--eval_fraction must be in [0, 1).")
  if options.input_format not in text_sources.INPUT_FORMATS:
    raise errors.UserError(
        f"--input_format must be one of {', '.join(text_sources.INPUT_FORMATS)}"
        f", not {options.input_format!r}.")
  text_sources.sentence_splitter(options)  # Fails now if sentencex is absent.
  if options.tokenizer:
    # Before settings.json exists: a mistyped path must not tie the output
    # directory to itself, so that the corrected command can run there.
    tokenization.load_tokenizer(options.tokenizer)


def preprocess(options: options_lib.Options) -> dict[str, Any]:
  """Builds (or completes) a dataset in `options.output_dir`.

  Args:
    options: the settings (see `options.Options` and the flags).

  Returns:
    The dataset's metadata (also written to `metadata.json`).
  """
  _check_options(options)
  if "://" in options.output_dir:
    return _preprocess_to_bucket(options)
  out = options.output_dir
  os.makedirs(out, exist_ok=True)
  warnings = []
  sources, empty_files = text_sources.list_inputs(options, warnings)
  for warning in warnings:
    logging.warning("%s", warning)
  shard_size = (options.tfds_docs_per_shard if options.tfds
                else options.shard_mb * 2**20)
  shards = plan_shards(
      sources, shard_size,
      lambda source: text_sources.splittable(source, options))
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
      raise errors.UserError(
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


def _staging_dir(output_dir: str) -> str:
  """A local directory for building `output_dir`'s files: the same for the
  same destination, so that an interrupted build resumes there."""
  digest = hashlib.sha256(output_dir.encode()).hexdigest()[:16]
  return os.path.join(tempfile.gettempdir(), "electra_jax_staging", digest)


def _preprocess_to_bucket(options: options_lib.Options) -> dict[str, Any]:
  """Builds the dataset in a local staging directory, then uploads it.

  The shard writer and sentencepiece need local files. `metadata.json`,
  which marks a dataset complete, is uploaded last: a reader sees the whole
  dataset or none.
  """
  remote = epath.Path(options.output_dir)
  if (remote / "metadata.json").exists():
    logging.info("%s is already complete.", remote)
    return json.loads((remote / "metadata.json").read_text())
  staging = _staging_dir(options.output_dir)
  metadata = preprocess(dataclasses.replace(options, output_dir=staging))
  shards = metadata["train_files"] + metadata["eval_files"]
  names = [metadata["tokenizer"], "settings.json",
           *(f["path"] for f in shards)]
  logging.info("Uploading %d file(s) to %s.", len(names) + 1, remote)
  remote.mkdir(parents=True, exist_ok=True)
  for name in names:
    epath.Path(staging, name).copy(remote / name, overwrite=True)
  epath.Path(staging, "metadata.json").copy(remote / "metadata.json",
                                            overwrite=True)
  shutil.rmtree(staging, ignore_errors=True)
  return metadata


def _finish(options: options_lib.Options, tok: tokenization.Tokenizer,
            num_shards: int, sources: list[tuple[str, int]], empty_files: int
            ) -> dict[str, Any]:
  """Checks that every shard is done and writes `metadata.json`."""
  out = options.output_dir
  stats = text_sources.Stats(files=len(sources) + empty_files,
                             empty_files=empty_files)
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
    raise errors.UserError(
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
      "record_format": records.FORMAT,
      "record_dtype": records.record_dtype(tok.vocab_size).name,
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
      # How text became examples (settings.json has every setting).
      "blanks_separate_docs": options.blanks_separate_docs,
      "split_sentences": options.split_sentences,
      "source": options.tfds or list(options.inputs),
      "stats": dataclasses.asdict(stats),
  }
  _write_json(os.path.join(out, "metadata.json"), metadata)
  logging.info("Wrote %s: %d train and %d eval examples, %d tokens, from %d "
               "document(s).", out, stats.train_examples, stats.eval_examples,
               stats.tokens, stats.documents)
  return metadata


def define_flags() -> None:
  """Defines the flags of `main` (called by `electra_jax/preprocess.py`).

  Only when run as a program, never on import: the modules that import this
  one (`default_corpus`, tests) define flags of their own.
  """
  defaults = options_lib.Options(output_dir="")
  for field in dataclasses.fields(options_lib.Options):
    name, default, help_ = field.name, getattr(defaults, field.name), \
        _HELP[field.name]
    if name == "output_dir":
      flags.DEFINE_string(name, None, help_, required=True)
    elif name == "inputs":
      flags.DEFINE_list("input", [], help_)
    elif name == "input_format":
      flags.DEFINE_enum(name, default, text_sources.INPUT_FORMATS, help_)
    elif isinstance(default, bool):
      flags.DEFINE_bool(name, default, help_)
    elif isinstance(default, int):
      flags.DEFINE_integer(name, default, help_)
    elif isinstance(default, float):
      flags.DEFINE_float(name, default, help_)
    else:
      flags.DEFINE_string(name, default, help_)


def main(argv: Sequence[str]) -> None:
  """Builds the dataset the flags describe (see `define_flags`)."""
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  values = {f.name: flags.FLAGS[f.name if f.name != "inputs" else "input"].value
            for f in dataclasses.fields(options_lib.Options)}
  values["inputs"] = tuple(values["inputs"])
  errors.check_writable(values["output_dir"])
  preprocess(options_lib.Options(**values))

