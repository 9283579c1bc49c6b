"""Tests for data/packing.py: ELECTRA example packing."""

from electra_jax.data import packing

CLS, SEP = 2, 3


class _Scripted:
  """A stand-in for random.Random returning scripted values."""

  def __init__(self, values, randint=None):
    self._values, self._randint = list(values), randint

  def random(self):
    return self._values.pop(0)

  def randint(self, a, b):
    assert (a, b) == (5, 16)
    return self._randint


def _builder(values, randint=None):
  return packing.ExampleBuilder(16, CLS, SEP, _Scripted(values, randint))


def test_two_segments_and_truncation():
  b = _builder([0.99, 0.99, 0.99])  # Two segments; B not moved; full target.
  a, bb, c, d = [10, 11, 12], [20, 21, 22, 23], list(range(30, 36)), [40] * 4
  assert b.add_sentence(a) is None  # 3 tokens.
  assert b.add_sentence(bb) is None  # 7.
  assert b.add_sentence(c) is None  # 13 < 16.
  ids, n_a = b.add_sentence(d)  # 17 >= 16: an example.
  # A holds sentence a (half target = 6); the rest goes to B, cut to
  # 16 - 3 - 3 = 10 tokens.
  assert ids == [CLS, 10, 11, 12, SEP, 20, 21, 22, 23, 30, 31, 32, 33, 34, 35,
                 SEP]
  assert n_a == 5 and len(ids) == 16
  assert b.end_document() is None  # Nothing left over: the rest is dropped.


def test_sentence_moves_to_first_segment_half_the_time():
  b = _builder([0.5, 0.4, 0.99])  # 0.4 < 0.5: the 2nd sentence joins A.
  b.add_sentence([10, 11, 12])
  b.add_sentence([20, 21, 22, 23, 24])
  ids, n_a = b.add_sentence([30] * 9)
  assert ids[:n_a] == [CLS, 10, 11, 12, 20, 21, 22, 23, 24, SEP]
  assert ids[n_a:] == [30] * 5 + [SEP]  # B cut to 16 - 8 - 3 = 5.


def test_single_segment():
  b = _builder([0.05, 0.99])  # < 0.1: only one segment.
  b.add_sentence(list(range(10, 20)))
  ids, n_a = b.add_sentence(list(range(20, 30)))
  assert ids == [CLS] + list(range(10, 24)) + [SEP]  # A cut to 16 - 2.
  assert n_a == 16


def test_long_single_sentence_is_cut():
  b = _builder([0.99, 0.99])
  ids, n_a = b.add_sentence(list(range(100, 140)))
  assert ids == [CLS] + list(range(100, 114)) + [SEP]
  assert n_a == 16


def test_document_end_and_random_target_length():
  b = _builder([0.99, 0.01, 0.99, 0.99], randint=7)
  b.add_sentence([10, 11])
  b.add_sentence([12, 13, 14])
  ids, n_a = b.end_document()  # 0.01 < 0.05: the next target is 7.
  assert (ids, n_a) == ([CLS, 10, 11, 12, 13, 14, SEP], 7)  # 5 < 16 // 2.
  assert b.end_document() is None
  b.add_sentence([50, 51, 52])
  ids, n_a = b.add_sentence([60, 61, 62, 63])  # 7 >= 7.
  # Half of (7 - 3) is 2, so A gets one sentence, B the other.
  assert (ids, n_a) == ([CLS, 50, 51, 52, SEP, 60, 61, 62, 63, SEP], 5)

