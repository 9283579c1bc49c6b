"""The on-disk format of preprocessed examples: one example per record.

Format "ids_v1": each ArrayRecord record is a little-endian vector of
`record_dtype(vocab_size)` (uint16 if every id fits, else int32) holding
`[n_a, ids...]`, where `ids` is `[CLS] A [SEP] B [SEP]` without padding and
`n_a` is the length of `[CLS] A [SEP]` (segment 0; the rest is segment 1).

`preprocess` stores `FORMAT` and the dtype's name in `metadata.json`
(`record_format`, `record_dtype`), and readers call `check_metadata` before
they `decode`, so that data written in another format fails with a message
instead of decoding into wrong ids. A change to the bytes needs a new
`FORMAT`.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np

from electra_jax import errors

FORMAT = "ids_v1"
_DTYPES = ("uint16", "int32")  # The names `record_dtype` can return.


def record_dtype(vocab_size: int) -> np.dtype:
  """The on-disk id type: uint16 when every id fits, else int32."""
  return np.dtype("<u2") if vocab_size <= 65536 else np.dtype("<i4")


def encode(ids: Sequence[int], n_a: int, dtype: np.dtype) -> bytes:
  """Serializes one example.

  Args:
    ids: `[CLS] A [SEP]` or `[CLS] A [SEP] B [SEP]`, unpadded.
    n_a: the length of `[CLS] A [SEP]`.
    dtype: `record_dtype(vocab_size)`.

  Returns:
    The record's bytes.
  """
  return np.asarray([n_a, *ids], dtype=dtype).tobytes()


def decode(records: Sequence[bytes], dtype: np.dtype | str, max_length: int,
           pad_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Deserializes a batch of records (vectorized: no loop over records).

  Args:
    records: records written by `encode`, none longer than `max_length` ids.
    dtype: their dtype (`metadata["record_dtype"]`).
    max_length: the length rows are padded to.
    pad_id: the id they are padded with.

  Returns:
    `(ids, n_a, lengths)`: int32 ids [len(records), max_length] padded with
    `pad_id`, and [len(records)] the length of `[CLS] A [SEP]` and the
    number of ids of each record.
  """
  dtype = np.dtype(dtype)
  # All records in one buffer; record r starts with its n_a.
  sizes = np.fromiter((len(r) for r in records), np.int64, len(records))
  sizes //= dtype.itemsize
  flat = np.frombuffer(b"".join(records), dtype).astype(np.int32)
  starts = np.cumsum(sizes) - sizes
  n_a, lengths = flat[starts], sizes - 1
  values = np.delete(flat, starts)
  row = np.repeat(np.arange(len(records)), lengths)
  col = np.arange(len(values)) - np.repeat(np.cumsum(lengths) - lengths,
                                           lengths)
  ids = np.full((len(records), max_length), pad_id, np.int32)
  ids[row, col] = values
  return ids, n_a, lengths


def check_metadata(metadata: dict[str, Any], path: str) -> None:
  """Raises unless `metadata` (read from `path`) describes this format.

  Every `metadata.json` that `preprocess` has written holds
  `record_format`, so a missing one is refused like a different one.
  """
  found = metadata.get("record_format")
  if found != FORMAT:
    found = repr(found) if found is not None else "missing"
    raise errors.UserError(
        f"{path}: record_format is {found}, but this version reads "
        f"{FORMAT!r}; re-run preprocessing (python -m electra_jax.preprocess)"
        " into a new --output_dir.")
  if metadata.get("record_dtype") not in _DTYPES:
    raise errors.UserError(
        f"{path}: record_dtype is {metadata.get('record_dtype')!r}, not one "
        f"of {_DTYPES}; re-run preprocessing (python -m "
        "electra_jax.preprocess) into a new --output_dir.")
