"""The built-in default corpus: English text that is already on the machine.

So that `python -m electra_jax.main --config=configs/tiny.py` works on a
fresh machine with nothing to download, a small corpus is gathered from what
every installation has: the package descriptions of the installed
distributions (`*.dist-info/METADATA`), the docstrings of the Python standard
library (parsed with `ast`; nothing is imported), the documentation files
(.rst, .md) shipped in site-packages, and their docstrings, in that
order and in sorted file order (so it is deterministic for a given
installation), until `max_bytes` of text. Code-like lines (doctests, code
blocks, tables, symbol-heavy lines) are dropped, markup is reduced to its
text, and wrapped lines are joined into paragraphs. Each docstring or file is
one document (all docstrings of a source file together); duplicates are
dropped.

It is technical English, a few MB: enough to check that pretraining works and
learns, not to train a useful model. Point `config.input.data_dir` at data
built by `python -m electra_jax.preprocess` for that.
"""

import ast
from collections.abc import Iterator
import fcntl
import functools
import glob
import hashlib
import os
import re
import sysconfig
import tempfile

from absl import logging
from etils import epath

from electra_jax.data import options as options_lib
from electra_jax.data import preprocess

# Bump when the text extraction, the split or the packing rules change (3:
# lines are no longer split into sentences).
CORPUS_VERSION = 3
_SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "__pycache__",
              "idle_test", "testing", "_vendor", "vendored", "node_modules"}
_DOC_EXTENSIONS = (".rst", ".md")  # .txt files here are mostly data.
_SKIP_FILES = re.compile(
    r"(LICEN[CS]E|COPYING|AUTHORS|NOTICE|CHANGE|HISTORY|RECORD|"
    r"entry_points|top_level|requirements|SOURCES|dependency_links|"
    r"namespace_packages|vocab|wordlist)", re.IGNORECASE)
_MIN_WORDS = 12  # Shorter documents ("Return self.") are dropped.
_MAX_FILE_BYTES = 2_000_000  # Larger files are data, not documentation.

# Markup reduced to its text: :role:`~a.b` -> a.b, `t <url>`_ -> t,
# [t](url) -> t.
_MARKUP = [
    (re.compile(r":[\w:.-]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`"), r"\1"),
    (re.compile(r"`{1,2}([^`<]+?)(?:\s*<[^>]*>)?`{1,2}_{0,2}"), r"\1"),
    (re.compile(r"!?\[([^\]]*)\]\([^)]*\)"), r"\1"),
    (re.compile(r"\*{1,2}([^*]+)\*{1,2}"), r"\1"),
    (re.compile(r"https?://\S+"), ""),
    (re.compile(r"<[^>]{1,80}>"), ""),
]
_CODE_START = re.compile(
    r"^(>>>|\.\.\.|\$ |#|\.\. |import |from \S+ import|def |class |return |"
    r"@|[-=~^*+#`_]{3,}|\||\+[-=])")
_WORD = re.compile(r"[A-Za-z]{2,}")
_LETTER = re.compile(r"[^\W\d_]| ")
_SYMBOL = re.compile(r"[{}()\[\];=<>_\\|/]")
_SENTENCE_END = re.compile(r"[.!?:](?:\s|$)")


def _prose_lines(text: str) -> Iterator[str]:
  """Yields paragraphs of prose (one per item); "" ends a paragraph."""
  in_fence = False
  for raw in text.splitlines():
    line = raw.strip()
    if line.startswith(("```", "~~~")):
      in_fence = not in_fence
      yield ""
      continue
    if in_fence or not line or _CODE_START.match(line):
      yield ""
      continue
    for pattern, repl in _MARKUP:
      line = pattern.sub(repl, line)
    letters = len(_LETTER.findall(line))
    symbols = len(_SYMBOL.findall(line))
    if (len(_WORD.findall(line)) < 2 or letters < 0.75 * len(line) or
        symbols > 0.05 * len(line)):
      yield ""
      continue
    yield line


def clean_document(text: str) -> str:
  """Prose paragraphs of a docstring or doc file, one per line."""
  paragraphs, current = [], []
  for line in _prose_lines(text):
    if line:
      current.append(line.lstrip("-*# ").strip())
    elif current:
      paragraphs.append(" ".join(current))
      current = []
  if current:
    paragraphs.append(" ".join(current))
  document = "\n".join(p for p in paragraphs if p)
  words = len(_WORD.findall(document))
  # Prose has sentences; lists of names and labels do not.
  if words < _MIN_WORDS or len(_SENTENCE_END.findall(document)) < words / 40:
    return ""
  return document


def _walk(root: str, extensions: tuple[str, ...]) -> Iterator[str]:
  """Files under root with the given extensions, in sorted order."""
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
    for name in sorted(filenames):
      if name.endswith(extensions) and not _SKIP_FILES.search(name):
        path = os.path.join(dirpath, name)
        if os.path.isfile(path) and os.path.getsize(path) < _MAX_FILE_BYTES:
          yield path


def _docstrings(path: str) -> Iterator[str]:
  """Module, class and function docstrings of a source file (not imported)."""
  try:
    with open(path, "rb") as f:
      nodes = [ast.parse(f.read())]
  except (SyntaxError, ValueError, OSError):
    return
  while nodes:  # Statements only: ast.walk would visit every expression.
    node = nodes.pop()
    docstring = ast.get_docstring(node)
    if docstring:
      yield docstring
    nodes.extend(reversed([n for n in node.body if isinstance(
        n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]))


def _read_text(path: str) -> str:
  with open(path, encoding="utf-8", errors="replace") as f:
    return f.read()


def _metadata_description(path: str) -> str:
  """The description (after the headers) of a dist-info METADATA file."""
  text = _read_text(path)
  return text.split("\n\n", 1)[1] if "\n\n" in text else ""


def iter_raw_documents() -> Iterator[str]:
  """Raw texts, in the corpus order (see the module docstring)."""
  stdlib = sysconfig.get_paths()["stdlib"]
  site = sorted({sysconfig.get_paths()["purelib"],
                 sysconfig.get_paths()["platlib"]})
  for root in site:
    for path in sorted(glob.glob(os.path.join(root, "*.dist-info",
                                              "METADATA"))):
      yield _metadata_description(path)
  for path in _walk(stdlib, (".py",)):
    yield "\n\n".join(_docstrings(path))
  for root in site:
    for path in _walk(root, _DOC_EXTENSIONS):
      if ".dist-info" not in path:
        yield _read_text(path)
  for root in site:
    for path in _walk(root, (".py",)):
      yield "\n\n".join(_docstrings(path))


def write_corpus(output_dir: str, max_bytes: int, num_files: int = 4
                 ) -> list[str]:
  """Writes the corpus as text files (documents separated by blank lines).

  Args:
    output_dir: where `part-0000.txt`... go; written atomically (a `.done`
      file marks completion), skipped if already complete.
    max_bytes: stop after this much text (UTF-8 bytes).
    num_files: documents go round-robin to this many files, so that
      preprocessing can use that many workers.

  Returns:
    The paths of the text files.
  """
  paths = [os.path.join(output_dir, f"part-{i:04d}.txt")
           for i in range(num_files)]
  if os.path.exists(os.path.join(output_dir, ".done")):
    return paths
  os.makedirs(output_dir, exist_ok=True)
  files = [open(p + ".tmp", "w", encoding="utf-8") for p in paths]
  seen, total, count = set(), 0, 0
  try:
    for raw in iter_raw_documents():
      document = clean_document(raw)
      digest = hashlib.sha1(document.encode()).digest()
      if not document or digest in seen:
        continue
      seen.add(digest)
      files[count % num_files].write(document + "\n\n")
      total += len(document.encode()) + 2
      count += 1
      if total >= max_bytes:
        break
  finally:
    for f in files:
      f.close()
  for path in paths:
    os.replace(path + ".tmp", path)
  with open(os.path.join(output_dir, ".done"), "w") as f:
    f.write(f"{count} documents, {total} bytes\n")
  logging.info("Default corpus: %d documents, %.1f MB of text in %s.", count,
               total / 1e6, output_dir)
  return paths


def build_default_dataset(cache_root: str, *, max_seq_length: int,
                          vocab_size: int, max_bytes: int, seed: int = 0,
                          num_workers: int = 0) -> str:
  """Builds the default corpus's dataset once; returns its directory.

  The dataset lives in
  `cache_root/default-v<CORPUS_VERSION>-<max_bytes>b-vocab<vocab>-len<len>/`
  (its text under `text/`). A file lock makes concurrent callers (several
  processes on one host) wait for one build; later calls return at once.

  Args:
    cache_root: parent directory of the cached datasets.
    max_seq_length: tokens per example.
    vocab_size: pieces of the sentencepiece model trained on the corpus.
    max_bytes: text to gather.
    seed: packing seed.
    num_workers: preprocessing processes (0: the default).

  Returns:
    The dataset directory (it holds `metadata.json`).
  """
  name = (f"default-v{CORPUS_VERSION}-{max_bytes}b-vocab{vocab_size}-"
          f"len{max_seq_length}")
  # A tenth held out: the corpus has few, long documents (packages' READMEs
  # come first), and the 2% preprocessing default can leave no eval split.
  options = functools.partial(
      options_lib.Options, vocab_size=vocab_size,
      max_seq_length=max_seq_length, seed=seed, eval_fraction=0.1,
      num_workers=num_workers or 1)
  if "://" in str(cache_root):
    # A bucket: the text is gathered into a local directory, and
    # preprocessing uploads the dataset (metadata.json last). Hosts that
    # build at once write the same files (the build is deterministic).
    data_dir = str(epath.Path(cache_root) / name)
    if not (epath.Path(data_dir) / "metadata.json").exists():
      text_dir = os.path.join(tempfile.gettempdir(), "electra_jax_text", name)
      write_corpus(text_dir, max_bytes)
      preprocess.preprocess(options(
          output_dir=data_dir, inputs=(os.path.join(text_dir, "*.txt"),)))
    return data_dir
  data_dir = os.path.join(cache_root, name)
  if os.path.exists(os.path.join(data_dir, "metadata.json")):
    return data_dir
  os.makedirs(cache_root, exist_ok=True)
  with open(os.path.join(cache_root, name + ".lock"), "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # Released when the file closes.
    if os.path.exists(os.path.join(data_dir, "metadata.json")):
      return data_dir
    logging.info("Building the default corpus in %s (once).", data_dir)
    text_dir = os.path.join(data_dir, "text")
    write_corpus(text_dir, max_bytes)
    preprocess.preprocess(options(
        output_dir=data_dir, inputs=(os.path.join(text_dir, "*.txt"),)))
  return data_dir
