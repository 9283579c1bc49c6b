"""Fine-tuning tasks and their readers: TFDS (GLUE, SQuAD) and local files.

A task is a `TaskSpec`: its kind (classification, regression, tagging, qa),
its metrics (the first is the headline) and the defaults that
`configs/finetune.py` copies into the config, as the reference's
`configure_finetuning.py` sets them: 3 epochs, 10 for RTE and STS-B, 2 for
every task named like squad or qa; 128 tokens, 512 for QA, 256 for tagging
(the reference's chunking). Reading goes through the
config alone (`config.data.*`), so a user's own task is a file and a few
fields:

  --config=configs/finetune.py:task=classification \
      --config.data.train_file=train.csv --config.data.eval_file=dev.csv \
      --config.data.text_columns=review --config.data.label_column=stars

Records become `TextExample`s (classification, regression),
`TaggingExample`s or `squad.QAExample`s.

TFDS is read with `tfds.data_source` (ArrayRecord, random access, no
TensorFlow). Datasets prepared in the TFRecord format can only be read with
TensorFlow installed; without it the error says how to convert them.
"""

import csv
import dataclasses
import io
import json
from typing import Any, Iterable

from etils import epath
import numpy as np

from electra_jax import errors
from electra_jax.finetune import squad

KINDS = ("classification", "regression", "tagging", "qa")


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """What a task is; the data fields are defaults for `config.data`."""

  name: str
  kind: str
  metrics: tuple[str, ...]
  text_columns: tuple[str, ...]
  label_column: str
  label_names: tuple[str, ...] = ()  # TFDS label order (GLUE).
  tfds_name: str = ""  # Empty: read local files.
  eval_split: str = "validation"
  num_train_epochs: float = 3.0  # As the reference's configure_finetuning.
  max_seq_length: int = 128  # Tokens per input (window, for QA).
  label_range: tuple[float, float] = (0.0, 1.0)  # Regression targets.
  unordered: bool = False  # Sentence order does not matter (MRPC, STS-B).
  squad_v2: bool = False  # Unanswerable questions exist.


def _glue(name, metrics, columns, labels, **kw) -> TaskSpec:
  return TaskSpec(name=name, kind="classification", metrics=metrics,
                  text_columns=columns, label_column="label",
                  label_names=labels, tfds_name=f"glue/{name}", **kw)


_ENTAIL = ("entailment", "not_entailment")
TASKS: dict[str, TaskSpec] = {t.name: t for t in (
    _glue("cola", ("mcc", "accuracy"), ("sentence",),
          ("unacceptable", "acceptable")),
    _glue("sst2", ("accuracy",), ("sentence",), ("negative", "positive")),
    _glue("mrpc", ("accuracy", "f1"), ("sentence1", "sentence2"),
          ("not_equivalent", "equivalent"), unordered=True),
    _glue("qqp", ("accuracy", "f1"), ("question1", "question2"),
          ("not_duplicate", "duplicate")),
    _glue("mnli", ("accuracy",), ("premise", "hypothesis"),
          ("entailment", "neutral", "contradiction"),
          eval_split="validation_matched"),
    _glue("qnli", ("accuracy",), ("question", "sentence"), _ENTAIL),
    _glue("rte", ("accuracy",), ("sentence1", "sentence2"), _ENTAIL,
          num_train_epochs=10.0),
    # Spearman first: the paper's STS metric (Pearson reported beside it).
    TaskSpec("stsb", "regression", ("spearman", "pearson"),
             ("sentence1", "sentence2"), "label", tfds_name="glue/stsb",
             num_train_epochs=10.0, label_range=(0.0, 5.0), unordered=True),
    TaskSpec("squad1", "qa", ("f1", "exact_match"), ("question", "context"),
             "answers", tfds_name="squad/v1.1", num_train_epochs=2.0,
             max_seq_length=512),
    TaskSpec("squad2", "qa", ("f1", "exact_match"), ("question", "context"),
             "answers", tfds_name="squad/v2.0", num_train_epochs=2.0,
             max_seq_length=512, squad_v2=True),
    # Bring-your-own tasks, read from local files.
    TaskSpec("classification", "classification", ("accuracy",), ("text",),
             "label"),
    TaskSpec("regression", "regression", ("spearman", "pearson"), ("text",),
             "label"),
    TaskSpec("tagging", "tagging", ("f1", "accuracy"), ("tokens",), "tags",
             max_seq_length=256),
    TaskSpec("qa", "qa", ("f1", "exact_match"), ("question", "context"),
             "answers", num_train_epochs=2.0, max_seq_length=512,
             squad_v2=True),
)}
TASKS["squad"] = TASKS["squad1"]


def get_task(name: str) -> TaskSpec:
  if name not in TASKS:
    raise errors.UserError(f"Unknown task {name!r}; known tasks: "
                     f"{', '.join(sorted(TASKS))}.")
  return TASKS[name]


@dataclasses.dataclass(frozen=True)
class TextExample:
  """One classification/regression example: 1 or 2 texts and a label."""

  id: str
  texts: tuple[str, ...]
  label: Any = None  # str (classification), float (regression) or None.


@dataclasses.dataclass(frozen=True)
class TaggingExample:
  """Words and one tag per word (None when unlabeled)."""

  id: str
  words: tuple[str, ...]
  tags: tuple[str, ...] | None = None


# --- Raw records ------------------------------------------------------------


def _text(value: Any) -> str:
  if isinstance(value, bytes):
    return value.decode("utf-8")
  if isinstance(value, np.ndarray) and value.ndim == 0:
    return _text(value.item())
  return str(value)


def file_format(path: str, declared: str = "") -> str:
  """`declared`, or the format implied by the file's extension."""
  if declared:
    return declared
  ext = epath.Path(path).suffix.lower()
  formats = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl",
             ".json": "jsonl", ".conll": "conll"}
  if ext not in formats:
    raise errors.UserError(f"Cannot tell the format of {path} from its extension; "
                     "set --config.data.file_format to csv, tsv, jsonl or "
                     "conll.")
  return formats[ext]


def _conll_records(f) -> Iterable[dict[str, Any]]:
  """CoNLL columns: a token per line (first column), its tag last; blank
  lines end sentences; `-DOCSTART-` lines are skipped."""
  tokens, tags = [], []
  for line in list(f) + [""]:
    parts = line.split()
    if parts and parts[0] == "-DOCSTART-":
      continue
    if parts:
      tokens.append(parts[0])
      tags.append(parts[-1] if len(parts) > 1 else "O")
    elif tokens:
      yield {"tokens": tokens, "tags": tags}
      tokens, tags = [], []


def read_file(path: str, fmt: str = "") -> list[dict[str, Any]]:
  """Rows of a CSV/TSV (with a header), JSONL or CoNLL file as dicts."""
  if not epath.Path(path).is_file():
    raise errors.MissingFile(f"Data file {path} does not exist.")
  fmt = file_format(path, fmt)
  # Text read whole (newline="" semantics: csv sees the raw line ends).
  text = epath.Path(path).read_bytes().decode("utf-8")
  with io.StringIO(text, newline="") as f:
    if fmt == "csv":
      return list(csv.DictReader(f))
    if fmt == "tsv":  # GLUE's TSVs hold unescaped quotes.
      return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    if fmt == "conll":
      return list(_conll_records(f))
    if fmt == "jsonl":
      rows = []
      for i, line in enumerate(f):
        if line.strip():
          try:
            rows.append(json.loads(line))
          except json.JSONDecodeError as e:
            raise errors.UserError(f"{path}:{i + 1}: not JSON ({e}).") from None
      return rows
  raise errors.UserError(f"Unknown file format {fmt!r}; expected csv, tsv, jsonl "
                   "or conll.")


def import_tfds():
  """`tensorflow_datasets`, with the GLUE and SQuAD builders registered
  (without TensorFlow, importing `tfds` alone does not register them;
  neither builder module needs TensorFlow)."""
  # pylint: disable=g-import-not-at-top,unused-import
  import tensorflow_datasets as tfds
  from tensorflow_datasets.datasets.squad import squad_dataset_builder
  from tensorflow_datasets.text import glue
  # pylint: enable=g-import-not-at-top,unused-import
  return tfds


def read_tfds(name: str, split: str, data_dir: str) -> list[dict[str, Any]]:
  """All records of a prepared TFDS split, without downloading.

  Args:
    name: e.g. "glue/sst2" or "squad/v2.0".
    split: e.g. "train", "validation_matched" or "train[:10%]".
    data_dir: the TFDS data directory; empty for TFDS's default.

  Returns:
    The records as dicts of numpy values (text as bytes or str).
  """
  tfds = import_tfds()
  builder = tfds.builder(name, data_dir=data_dir or None)
  try:
    source = builder.as_data_source(split=split)
  except (NotImplementedError, AssertionError, FileNotFoundError):
    if not builder.is_prepared():
      raise errors.MissingFile(
          f"TFDS dataset {name} is not prepared in {builder.data_dir}. "
          "Prepare it where there is network access, e.g. `tfds build "
          f"{name} --data_dir=DIR --file_format=array_record`, and set "
          "--config.data.tfds_data_dir=DIR.") from None
    # Prepared as TFRecord, which has no random access.
    return _read_tfds_with_tensorflow(builder, split)
  return [source[i] for i in range(len(source))]


def _read_tfds_with_tensorflow(builder, split: str) -> list[dict]:
  """Reads a TFRecord-format split through tf.data (needs TensorFlow)."""
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise RuntimeError(
        f"TFDS dataset {builder.name} in {builder.data_dir} is stored as "
        "TFRecord, which only TensorFlow reads. Install tensorflow-cpu, or "
        "convert it once to ArrayRecord where TensorFlow is installed "
        f"(`tfds convert_format --dataset_version_dir={builder.data_dir} "
        "--out_file_format=array_record`); ArrayRecord needs no "
        "TensorFlow.") from None
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], "GPU")  # Keep TF off the accelerators.
  return list(tfds.as_numpy(builder.as_dataset(split=split)))


# --- Records -> examples ------------------------------------------------------


def _check_columns(rows: list[dict[str, Any]], columns: Iterable[str],
                   source: str) -> None:
  if not rows:
    raise errors.UserError(f"{source} holds no examples.")
  for i, row in enumerate(rows):
    missing = [c for c in columns if c not in row]
    if missing:
      where = f" (row {i + 1})" if i else ""
      raise errors.UserError(
          f"{source}{where} has no column(s) "
          f"{', '.join(map(repr, missing))}; columns found: "
          f"{', '.join(row)}. Set --config.data.text_columns "
          "(comma-separated) and --config.data.label_column to match.")


def _ids(rows, id_column: str) -> list[str]:
  if id_column and id_column in rows[0]:
    return [_text(r[id_column]) for r in rows]
  return [str(i) for i in range(len(rows))]


def _sequence(value: Any) -> tuple[str, ...]:
  """A list column: a JSON list, a numpy array, or a space-joined string."""
  if isinstance(value, (str, bytes)):
    return tuple(_text(value).split())
  return tuple(_text(v) for v in value)


def _answers(value: Any) -> tuple[tuple[str, ...], tuple[int, ...]]:
  """Answer texts and character starts from SQuAD-style answer columns:
  `{"text": [...], "answer_start": [...]}` (TFDS, HF datasets) or a list of
  `{"text", "answer_start"}` dicts (SQuAD JSON)."""
  if isinstance(value, dict):
    texts, starts = value["text"], value["answer_start"]
  else:
    texts = [a["text"] for a in value]
    starts = [a["answer_start"] for a in value]
  return (tuple(_text(t) for t in texts),
          tuple(int(s) for s in np.asarray(starts).reshape(-1)))


def _class_label(value: Any, index_names: tuple[str, ...]) -> str:
  """A class label as text; integer labels index `index_names` (TFDS)."""
  if index_names and isinstance(value, (int, np.integer, np.ndarray)):
    index = int(value)
    if not 0 <= index < len(index_names):
      raise errors.UserError(f"Label {index} is outside the task's "
                       f"{len(index_names)} classes {list(index_names)}.")
    return index_names[index]
  return _text(value)


def to_examples(spec: TaskSpec, rows: list[dict[str, Any]], *,
                text_columns: tuple[str, ...], label_column: str,
                id_column: str, labeled: bool, source: str,
                index_names: tuple[str, ...] = ()) -> list[Any]:
  """Turns raw records into the examples of `spec.kind`.

  Args:
    spec: the task.
    rows: records as `read_file` or `read_tfds` give them.
    text_columns: the input columns (one or two; question and context for
      qa; the token list for tagging).
    label_column: the target column; ignored when `labeled` is False.
    id_column: a column with example ids; row numbers when absent.
    index_names: class names for integer labels (TFDS ClassLabel order).
    labeled: whether to read labels (False for prediction inputs).
    source: names the data in error messages.

  Raises:
    ValueError: on a missing column, listing the columns found.
  """
  needed = list(text_columns) + ([label_column] if labeled else [])
  _check_columns(rows, needed, source)
  ids = _ids(rows, id_column)
  expected = {"qa": (2,), "tagging": (1,)}.get(spec.kind, (1, 2))
  if len(text_columns) not in expected:
    counts = " or ".join(map(str, expected))
    raise errors.UserError(
        f"Task {spec.name} ({spec.kind}) reads {counts} text column(s), got "
        f"{list(text_columns)}; set --config.data.text_columns.")
  if spec.kind == "qa":
    q_col, c_col = text_columns
    out = []
    for i, r in zip(ids, rows):
      texts, starts = _answers(r[label_column]) if labeled else ((), ())
      impossible = bool(r.get("is_impossible", not texts)) if labeled else False
      out.append(squad.QAExample(
          id=i, question=_text(r[q_col]), context=_text(r[c_col]),
          answers=() if impossible else texts,
          answer_starts=() if impossible else starts,
          is_impossible=impossible))
    return out
  if spec.kind == "tagging":
    out = [TaggingExample(i, _sequence(r[text_columns[0]]),
                          _sequence(r[label_column]) if labeled else None)
           for i, r in zip(ids, rows)]
    for ex in out:
      if ex.tags is not None and len(ex.tags) != len(ex.words):
        raise errors.UserError(f"{source}: example {ex.id} has {len(ex.words)} "
                         f"tokens but {len(ex.tags)} tags.")
    return out
  out = []
  for i, r in zip(ids, rows):
    label = None
    if labeled:
      label = r[label_column]
      label = (float(label) if spec.kind == "regression"
               else _class_label(label, index_names))
    out.append(TextExample(i, tuple(_text(r[c]) for c in text_columns),
                           label))
  return out
