"""`DataSpec`: what the model and the objective need to know about the data.

Read once from a dataset's `metadata.json` (`input_pipeline.load_data_spec`
reads and checks the file) and passed down as a frozen dataclass, so that
the training code never looks tokenizer facts up in the run config. A module
of its own, with no I/O, so that `train.py` can take a `DataSpec` without
importing the input pipeline.
"""

import dataclasses
from typing import Any

from electra_jax import errors


@dataclasses.dataclass(frozen=True)
class DataSpec:
  """The vocabulary, the special ids and the example length of a dataset."""
  vocab_size: int
  pad_id: int
  cls_id: int
  sep_id: int
  mask_id: int
  max_seq_length: int

  @classmethod
  def from_metadata(cls, metadata: dict[str, Any]) -> "DataSpec":
    """The spec of a dataset, from its (already read) `metadata.json`."""
    names = [f.name for f in dataclasses.fields(cls)]
    missing = [name for name in names if name not in metadata]
    if missing:
      raise errors.UserError(f"The data's metadata lacks {missing}; re-run "
                       "preprocessing.")
    spec = cls(**{name: int(metadata[name]) for name in names})
    ids = (spec.pad_id, *spec.special_ids)
    if len(set(ids)) != len(ids) or not all(
        0 <= i < spec.vocab_size for i in ids):
      raise errors.UserError(
          f"The data's [PAD], [CLS], [SEP] and [MASK] ids {ids} must be "
          f"distinct ids below vocab_size={spec.vocab_size}; re-run "
          "preprocessing.")
    return spec

  @property
  def special_ids(self) -> tuple[int, int, int]:
    """[CLS], [SEP] and [MASK]: never masked, never sampled as fakes."""
    return self.cls_id, self.sep_id, self.mask_id
