"""Packs tokenized sentences into ELECTRA examples and writes them as records.

Packing is the reference's (see `ExampleBuilder`). `ShardWriter` tokenizes
one shard's lines (each a sentence, or split into sentences when
`split_sentences` is on), packs them and writes the shard's train and eval
ArrayRecord files; whole documents go to the eval split with probability
`eval_fraction`. Each example is one record in the format of `records`.
"""

from collections.abc import Sequence
import os
import random

from array_record.python import array_record_module

from electra_jax.data import options as options_lib
from electra_jax.data import records
from electra_jax.data import text_sources
from electra_jax.data import tokenization

_ENCODE_CHUNK = 512  # Sentences per tokenizer call.


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


class ShardWriter:
  """Tokenizes and packs one shard's lines, writing train and eval files."""

  def __init__(self, index: int, options: options_lib.Options,
               num_shards: int, tokenizer_file: str):
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
    self._dtype = records.record_dtype(self._tok.vocab_size)
    self._options, self.stats = options, text_sources.Stats()
    self._sentences = text_sources.sentence_splitter(options)
    self._names = {split: f"{split}-{index:05d}-of-{num_shards:05d}"
                   ".array_record" for split in ("train", "eval")}
    self._writers, self._split, self._pending, self._doc_tokens = {}, "", [], 0

  def add_line(self, line: str | None) -> None:
    """Adds a line of the shard; None ends the current document."""
    if line is None:
      self._flush(end_document=True)
      return
    if not self._split:
      self._split = ("eval" if self._split_rng.random() <
                     self._options.eval_fraction else "train")
    self._pending.extend(self._sentences(line))
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
    self._writers[self._split].write(records.encode(*example, self._dtype))
    setattr(self.stats, f"{self._split}_examples",
            getattr(self.stats, f"{self._split}_examples") + 1)

  def close(self) -> dict[str, str]:
    """Closes and renames the files; returns {split: file name}."""
    if self._split:  # A document is still open (its end was not marked).
      self._flush(end_document=True)
    files = {}
    for split, writer in self._writers.items():
      writer.close()
      path = os.path.join(self._options.output_dir, self._names[split])
      os.replace(path + ".tmp", path)
      files[split] = self._names[split]
    return files
