"""Tests for data/records.py: the bytes of a record, decoding, the check."""

import numpy as np
import pytest

from electra_jax.data import records

CLS, SEP = 2, 3


def test_bytes_are_the_ids_v1_format():
  # Fixed bytes: datasets already written must keep decoding the same.
  assert records.FORMAT == "ids_v1"
  assert records.record_dtype(30522) == np.dtype("<u2")
  assert records.record_dtype(65536) == np.dtype("<u2")
  assert records.record_dtype(70000) == np.dtype("<i4")
  assert records.encode([CLS, 7, SEP, 9, SEP], 3, records.record_dtype(
      30522)) == bytes([3, 0, CLS, 0, 7, 0, SEP, 0, 9, 0, SEP, 0])
  assert records.encode([CLS, 66000, SEP], 3, records.record_dtype(
      70000)) == np.array([3, CLS, 66000, SEP], "<i4").tobytes()
  assert records.encode([CLS, 65535, SEP], 3, np.dtype("<u2"))[4:6] == (
      b"\xff\xff")


@pytest.mark.parametrize("vocab_size", [1000, 70000])
def test_encode_decode_round_trip(vocab_size):
  dtype = records.record_dtype(vocab_size)
  rng = np.random.default_rng(0)
  examples = []
  for length in (2, 3, 5, 11, 16):  # [CLS] A [SEP] at least; 16: a full row.
    ids = [CLS, *rng.integers(5, vocab_size, length - 2).tolist(), SEP]
    examples.append((ids, int(rng.integers(2, length + 1))))
  encoded = [records.encode(ids, n_a, dtype) for ids, n_a in examples]
  ids, n_a, lengths = records.decode(encoded, dtype.name, 16, 0)
  assert ids.shape == (5, 16) and ids.dtype == np.int32
  for k, (expected, expected_n_a) in enumerate(examples):
    assert ids[k].tolist() == expected + [0] * (16 - len(expected))
    assert (n_a[k], lengths[k]) == (expected_n_a, len(expected))
  # Any subset and order decodes the same rows; none gives an empty batch.
  again = records.decode([encoded[3], encoded[0]], dtype, 16, 0)[0]
  assert (again == ids[[3, 0]]).all()
  assert records.decode([], dtype, 16, 0)[0].shape == (0, 16)


def test_check_metadata():
  records.check_metadata({"record_format": "ids_v1",
                          "record_dtype": "uint16"}, "d/metadata.json")
  with pytest.raises(ValueError) as error:
    records.check_metadata({"record_format": "ids_v2",
                            "record_dtype": "uint16"}, "d/metadata.json")
  message = str(error.value)
  assert message == (
      "d/metadata.json: record_format is 'ids_v2', but this version reads "
      "'ids_v1'; re-run preprocessing (python -m electra_jax.preprocess) "
      "into a new --output_dir.")
  with pytest.raises(ValueError, match="record_format is missing, but this "
                     "version reads 'ids_v1'; re-run preprocessing"):
    records.check_metadata({"record_dtype": "uint16"}, "d/metadata.json")
  with pytest.raises(ValueError, match="record_dtype is 'int8'"):
    records.check_metadata({"record_format": "ids_v1",
                            "record_dtype": "int8"}, "d/metadata.json")
