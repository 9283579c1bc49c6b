"""Hugging Face `datasets` as a text source of preprocessing.

Two kinds of input are read through `datasets`, never the hub:
  * a dataset saved with `Dataset.save_to_disk` (a directory holding
    `state.json` and its Arrow files), and
  * local (or bucket) data files: .parquet, .json/.jsonl (JSON lines), .csv
    and .arrow.
Each is read with `load_dataset(..., streaming=True)`, one data file at a
time, so a corpus larger than memory is never loaded whole and no Arrow copy
of it is written to the `datasets` cache. A data file is the unit of
parallelism: each is one piece of one shard (`text_sources.Piece`), read in
row order, so the build is deterministic.

A row's `--text_column` value is one record; `text_sources` turns it into
documents and lines by the same rules as a text file's contents.

`datasets` is an optional dependency, imported only when such an input is
used.
"""

from collections.abc import Iterator
import json

from etils import epath

from electra_jax import errors

PREFIX = "hf:"  # Source names are "hf:<builder>:<path>".
# File extension -> the `datasets` packaged builder that reads it.
BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json",
            ".csv": "csv", ".arrow": "arrow"}


def _datasets():
  """The `datasets` module, or a one-line error saying how to install it."""
  try:
    import datasets  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise errors.UserError(
        "Reading a Hugging Face dataset or .parquet/.json/.jsonl/.csv/.arrow "
        "files needs the `datasets` package: pip install datasets==5.2.0 "
        "(or pass --input_format=text to read the files as plain text)."
    ) from e
  return datasets


def builder_of(path: str) -> str | None:
  """The `datasets` builder for a data file, by its extension; None if
  the extension is not one of `BUILDERS`."""
  suffix = epath.Path(path).suffix.lower()
  return BUILDERS.get(suffix)


def is_dataset_dir(path: str) -> bool:
  """Whether `path` is a directory written by `save_to_disk`."""
  p = epath.Path(path)
  return (p / "state.json").exists() or (p / "dataset_dict.json").exists()


def saved_dataset_files(path: str) -> list[str]:
  """The Arrow files of a dataset saved with `save_to_disk`, in row order.

  Args:
    path: the directory `save_to_disk` wrote.

  Returns:
    The paths of its data files.

  Raises:
    UserError: `path` is a `DatasetDict` (one split must be chosen) or not a
      saved dataset at all.
  """
  p = epath.Path(path)
  if (p / "dataset_dict.json").exists():
    splits = json.loads((p / "dataset_dict.json").read_text())["splits"]
    raise errors.UserError(
        f"{path} holds a DatasetDict (splits {', '.join(splits)}); pass one "
        f"split's directory, e.g. --input={p / splits[0]}.")
  if not (p / "state.json").exists():
    raise errors.UserError(
        f"{path} is a directory but not a dataset saved with "
        "Dataset.save_to_disk (it has no state.json); pass a saved dataset, "
        "or its files with a glob (DIR/*.parquet, DIR/*.txt).")
  state = json.loads((p / "state.json").read_text())
  return [str(p / entry["filename"]) for entry in state["_data_files"]]


def source_name(builder: str, path: str) -> str:
  return f"{PREFIX}{builder}:{path}"


def texts(source: str, text_column: str) -> Iterator[str | None]:
  """Streams the `text_column` values of one data file, in row order.

  Args:
    source: a name made by `source_name`.
    text_column: the column holding the text.

  Yields:
    Each row's text; None for a missing (null) value.

  Raises:
    UserError: the column is missing or does not hold text.
  """
  builder, path = source[len(PREFIX):].split(":", 1)
  datasets = _datasets()
  rows = datasets.load_dataset(builder, data_files=[path], split="train",
                               streaming=True)
  for row in rows:
    if text_column not in row:
      raise errors.UserError(
          f"--text_column={text_column!r} is not a column of {path}; it has "
          f"{', '.join(sorted(row))}.")
    value = row[text_column]
    if value is not None and not isinstance(value, str):
      raise errors.UserError(
          f"Column {text_column!r} of {path} holds {type(value).__name__}, "
          "not text; name a text column with --text_column.")
    yield value


def check_column(source: str, text_column: str) -> None:
  """Fails early, before any shard is built, if the first row lacks text."""
  next(texts(source, text_column), None)
