r"""Builds ELECTRA pretraining data: text -> packed examples -> ArrayRecord.

  python -m electra_jax.preprocess --input='corpus/*.txt' --output_dir=data \
      --vocab_size=32000 --max_seq_length=128
  python -m electra_jax.preprocess --tfds=wikipedia/20230601.en \
      --tfds_data_dir=~/tensorflow_datasets --tokenizer=vocab.txt \
      --noblanks_separate_docs --output_dir=data
  python -m electra_jax.preprocess --input='owt/*.parquet' \
      --text_column=text --noblanks_separate_docs --output_dir=data
  python -m electra_jax.preprocess --input=saved_dataset_dir --output_dir=data

Input text follows google-research/electra's `build_pretraining_dataset.py`:
each line is a sentence (or a paragraph) and blank lines separate documents.
With --noblanks_separate_docs a whole file is one document and blank lines
are skipped (the reference's OpenWebText build). --split_sentences splits
lines into sentences with the optional sentencex package (off, as in the
reference). A TFDS record, or a row of a Hugging Face dataset (a directory
written by `save_to_disk`, or .parquet/.json/.jsonl/.csv/.arrow files, read
with `datasets` streaming, --text_column naming the text), is read as a
file's contents. Packing is the reference's. Whole documents go to the
held-out eval split with probability `eval_fraction`.

Output directory:
  tokenizer.model | vocab.txt          the tokenizer (trained here or copied)
  settings.json                        settings; a re-run must match them
  {train,eval}-00003-of-00008.array_record   one pair per input shard
  done/00003.json                      shard 3 is complete, with its counts
  metadata.json                        written last: the dataset is complete

Shards are written under a temporary name and renamed, then marked done; a
re-run skips done shards, so an interrupted run resumes where it stopped.

Record format ("ids_v1"): one example per record, `[n_a, ids...]`; see
`electra_jax/data/records.py`.

This file is only the command line (this docstring is its `--help`); the
code is in `electra_jax/data/`.
"""

from absl import flags

from electra_jax import errors
from electra_jax.data import preprocess


def cli() -> None:
  """The `electra-preprocess` console script."""
  preprocess.define_flags()
  # The flags are defined in electra_jax.data.preprocess; adopting them
  # makes `--help` list them as this program's own.
  flags.adopt_module_key_flags(preprocess)
  errors.run(preprocess.main)


if __name__ == "__main__":
  cli()
