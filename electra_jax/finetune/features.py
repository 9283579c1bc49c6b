"""Examples -> fixed-length model inputs, and the batches fed to the step.

Sentence (pair) inputs follow BERT/ELECTRA: `[CLS] a [SEP]` or
`[CLS] a [SEP] b [SEP]` with segment ids 0 / 1, the longer text truncated
first. Tagging follows the reference's tagging tasks: `[CLS] words [SEP]`
with segment id 1 on every token, the first token of every word labelled and
the rest ignored (-1), span tags trained as BIOES (`tag_encoding`).

Batches are dicts of numpy arrays with a leading global batch dimension.
Training batches are a fresh permutation per epoch (the last one filled up
from the start of the permutation, so every example is seen); evaluation
batches pad the tail with `weight` 0 rows so that each example counts once.
"""

from collections.abc import Iterator, Sequence

import numpy as np

from electra_jax import errors
from electra_jax.data import tokenization
from electra_jax.finetune import metrics
from electra_jax.finetune import tasks

# How tagging trains its tags: "bioes" reads span tags (B-/I-/E-/S-X, O) and
# trains their spans as BIOES, as the reference's chunking; "none" trains the
# tags as written (token-level tags such as part-of-speech).
TAG_ENCODINGS = ("bioes", "none")


def _truncate_pair(a: list[int], b: list[int], budget: int) -> None:
  """Pops from the longer list until both fit `budget` (in place)."""
  while len(a) + len(b) > budget:
    (a if len(a) > len(b) else b).pop()


def _pack(pieces: Sequence[list[int]], tok: tokenization.Tokenizer,
          max_seq_length: int) -> tuple[list[int], list[int]]:
  """Ids and segment ids of `[CLS] a [SEP] (b [SEP])`, unpadded."""
  cls, sep = tok.special_ids["cls_id"], tok.special_ids["sep_id"]
  a = list(pieces[0])
  b = list(pieces[1]) if len(pieces) > 1 else None
  if b is None:
    a = a[:max_seq_length - 2]
    return [cls] + a + [sep], [0] * (len(a) + 2)
  _truncate_pair(a, b, max_seq_length - 3)
  return ([cls] + a + [sep] + b + [sep],
          [0] * (len(a) + 2) + [1] * (len(b) + 1))


def _pad(rows: list[list[int]], length: int, value: int) -> np.ndarray:
  out = np.full((len(rows), length), value, np.int32)
  for i, row in enumerate(rows):
    out[i, :len(row)] = row
  return out


def encode_texts(examples: Sequence[tasks.TextExample],
                 tok: tokenization.Tokenizer,
                 max_seq_length: int) -> dict[str, np.ndarray]:
  """input_ids, input_mask and segment_ids [num_examples, max_seq_length]."""
  num_texts = {len(ex.texts) for ex in examples}
  if len(num_texts) != 1:
    raise errors.UserError("Examples mix single texts and pairs.")
  columns = [tok.encode_batch([ex.texts[k] for ex in examples])
             for k in range(num_texts.pop())]
  ids, segments = zip(*(_pack(pieces, tok, max_seq_length)
                        for pieces in zip(*columns)))
  return {"input_ids": _pad(ids, max_seq_length, tok.special_ids["pad_id"]),
          "input_mask": _pad([[1] * len(r) for r in ids], max_seq_length, 0),
          "segment_ids": _pad(segments, max_seq_length, 0)}


def double_unordered(
    examples: Sequence[tasks.TextExample]) -> list[tasks.TextExample]:
  """Adds each pair in the other order (the reference's `double_unordered`
  for MRPC and STS-B, whose labels ignore sentence order)."""
  swapped = [tasks.TextExample(f"{ex.id}-swapped", ex.texts[::-1], ex.label)
             for ex in examples if len(ex.texts) == 2]
  return list(examples) + swapped


def text_features(examples: Sequence[tasks.TextExample], kind: str,
                  labels: Sequence[str], label_range: tuple[float, float],
                  tok: tokenization.Tokenizer,
                  max_seq_length: int) -> dict[str, np.ndarray]:
  """Model inputs plus `label` (int class or normalised float score).

  Regression targets are mapped to [0, 1] with `label_range`, as the
  reference does for STS-B; unlabeled examples get label 0.
  """
  arrays = encode_texts(examples, tok, max_seq_length)
  if kind == "classification":
    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted({ex.label for ex in examples
                      if ex.label is not None and ex.label not in index})
    if unknown:
      raise errors.UserError(f"Labels {unknown[:5]} are not among the task's "
                       f"labels {list(labels)}; set --config.data.labels.")
    arrays["label"] = np.array([index.get(ex.label, 0) for ex in examples],
                               np.int32)
  else:
    low, high = label_range
    arrays["label"] = np.array(
        [0.0 if ex.label is None else (ex.label - low) / (high - low)
         for ex in examples], np.float32)
  return arrays


def training_tags(ex: tasks.TaggingExample,
                  tag_encoding: str) -> tuple[str, ...]:
  """The tags of `ex` as the model learns them (`TAG_ENCODINGS`)."""
  if tag_encoding not in TAG_ENCODINGS:
    raise errors.UserError(
        f"data.tag_encoding={tag_encoding!r}; expected one of "
        f"{', '.join(TAG_ENCODINGS)}.")
  if tag_encoding == "none":
    return ex.tags
  for tag in ex.tags:
    if tag != "O" and (tag[:2] not in ("B-", "I-", "E-", "S-") or
                       len(tag) < 3):
      raise errors.UserError(
          f"Tag {tag!r} of example {ex.id} is not a span tag (B-X, I-X, "
          "E-X, S-X or O); for token-level tags such as part-of-speech set "
          "--config.data.tag_encoding=none.")
  return tuple(metrics.to_bioes(ex.tags))


def tagging_features(examples: Sequence[tasks.TaggingExample],
                     tags: Sequence[str], tok: tokenization.Tokenizer,
                     max_seq_length: int,
                     tag_encoding: str) -> dict[str, np.ndarray]:
  """Model inputs plus `labels` [N, L] (-1 where not scored) and
  `word_positions` [N, L] (the token of word j, or -1).

  `tags` are the class names in the `tag_encoding` the model learns (see
  `training_tags`). Words past `max_seq_length - 2` tokens are cut off;
  their tags are then never predicted (prediction writes "O" for them).
  """
  index = {t: i for i, t in enumerate(tags)}
  cls, sep = tok.special_ids["cls_id"], tok.special_ids["sep_id"]
  unk, pad = tok.special_ids["unk_id"], tok.special_ids["pad_id"]
  n, length = len(examples), max_seq_length
  arrays = {"input_ids": np.full((n, length), pad, np.int32),
            "input_mask": np.zeros((n, length), np.int32),
            "segment_ids": np.zeros((n, length), np.int32),
            "labels": np.full((n, length), -1, np.int32),
            "word_positions": np.full((n, length), -1, np.int32)}
  for i, ex in enumerate(examples):
    ids = [cls]
    ex_tags = None if ex.tags is None else training_tags(ex, tag_encoding)
    pieces = tok.encode_batch(list(ex.words)) if ex.words else []
    for w, word_pieces in enumerate(pieces):
      word_pieces = word_pieces or [unk]
      if len(ids) + len(word_pieces) > length - 1:
        break
      arrays["word_positions"][i, w] = len(ids)
      if ex_tags is not None:
        if ex_tags[w] not in index:
          raise errors.UserError(f"Tag {ex_tags[w]!r} of example {ex.id} is not "
                           f"among the task's tags {list(tags)}.")
        arrays["labels"][i, len(ids)] = index[ex_tags[w]]
      ids.extend(word_pieces)
    ids.append(sep)
    arrays["input_ids"][i, :len(ids)] = ids
    arrays["input_mask"][i, :len(ids)] = 1
    # The reference's tagging inputs are all segment 1 (one "second"
    # segment), unlike its sentence tasks.
    arrays["segment_ids"][i, :len(ids)] = 1
  return arrays


def num_rows(arrays: dict[str, np.ndarray]) -> int:
  return len(next(iter(arrays.values())))


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  return -(-num_examples // batch_size)


def train_batches(arrays: dict[str, np.ndarray], batch_size: int, seed: int,
                  epoch: int) -> Iterator[dict[str, np.ndarray]]:
  """One epoch of shuffled, full batches (deterministic in seed, epoch);
  `weight` is 1 for every row."""
  n = num_rows(arrays)
  order = np.random.default_rng([seed, epoch]).permutation(n)
  steps = steps_per_epoch(n, batch_size)
  order = np.resize(order, steps * batch_size)  # Wraps to fill the tail.
  for step in range(steps):
    rows = order[step * batch_size:(step + 1) * batch_size]
    batch = {k: v[rows] for k, v in arrays.items()}
    batch["weight"] = np.ones(batch_size, np.float32)
    yield batch


def eval_batches(arrays: dict[str, np.ndarray],
                 batch_size: int) -> Iterator[dict[str, np.ndarray]]:
  """Every row once, in order; the last batch padded with `weight` 0."""
  n = num_rows(arrays)
  for start in range(0, n, batch_size):
    rows = np.arange(start, start + batch_size)
    valid = rows < n
    batch = {k: v[np.where(valid, rows, 0)] for k, v in arrays.items()}
    batch["weight"] = valid.astype(np.float32)
    yield batch


def local_slice(batch: dict[str, np.ndarray], process_index: int,
                process_count: int) -> dict[str, np.ndarray]:
  """This process's rows of a global batch (for `sharding.global_batch`)."""
  def one(v):
    size = len(v) // process_count
    return v[process_index * size:(process_index + 1) * size]
  return {k: one(v) for k, v in batch.items()}
