"""The settings of preprocessing, shared by the modules that build data.

A module of its own so that `text_sources` and `packing`, which read a few
of the settings, need not import `preprocess`, which imports them.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Options:
  """Preprocessing settings; the flags of the same names set them."""
  output_dir: str
  inputs: tuple[str, ...] = ()
  input_format: str = "auto"  # auto | text | hf (see text_sources._classify).
  text_column: str = "text"  # The `datasets` column holding the text.
  blanks_separate_docs: bool = True  # False: a file or row is one document.
  split_sentences: bool = False  # Split lines into sentences (sentencex).
  sentence_language: str = "en"  # The sentencex language code.
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
