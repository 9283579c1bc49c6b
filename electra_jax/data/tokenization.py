"""Tokenizers: sentencepiece (trained here or loaded) and WordPiece vocabs.

Both kinds sit behind one small interface, `Tokenizer`, so that the
preprocessing code never asks which one it has:

  tok = tokenization.load_tokenizer("data/tokenizer.model")  # or vocab.txt
  ids = tok.encode("Hello world.")
  tok.special_ids  # {"pad_id": 0, "unk_id": 1, "cls_id": 2, ...}

Special tokens are looked up by name ([PAD], [UNK], [CLS], [SEP], [MASK]) in
the vocabulary itself and never assumed to sit at BERT's ids; a vocabulary
that lacks one fails with a message naming it. Models trained by
`train_sentencepiece` put them at ids 0-4: [PAD] and [UNK] as sentencepiece's
pad and unk pieces, [CLS], [SEP] and [MASK] as control symbols (so the text
"[MASK]" in a corpus is never encoded as the mask id).
"""

import abc
from collections.abc import Iterable, Sequence
import hashlib
import io
import os

from etils import epath
import sentencepiece as spm
from tokenizers import implementations

from electra_jax import errors


SPECIAL_TOKENS = {
    "pad_id": "[PAD]",
    "unk_id": "[UNK]",
    "cls_id": "[CLS]",
    "sep_id": "[SEP]",
    "mask_id": "[MASK]",
}


class Tokenizer(abc.ABC):
  """Text to ids and back, plus the special ids the model needs."""

  kind: str  # "sentencepiece" or "wordpiece".
  path: str  # The file it was loaded from.

  @property
  @abc.abstractmethod
  def vocab_size(self) -> int:
    """Number of ids, special tokens included."""

  @abc.abstractmethod
  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    """Encodes texts without adding special tokens."""

  @abc.abstractmethod
  def decode(self, ids: Sequence[int]) -> str:
    """Decodes ids to text (special tokens are dropped or kept as text)."""

  @abc.abstractmethod
  def token_to_id(self, token: str) -> int | None:
    """Returns the id of a vocabulary entry, or None if it is absent."""

  @abc.abstractmethod
  def id_to_token(self, token_id: int) -> str:
    """Returns the vocabulary entry of an id."""

  def encode(self, text: str) -> list[int]:
    """Encodes one text without adding special tokens."""
    return self.encode_batch([text])[0]

  def _find_special_ids(self) -> dict[str, int]:
    """Looks the special tokens up by name; raises if any is missing."""
    ids, missing = {}, []
    for key, token in SPECIAL_TOKENS.items():
      token_id = self.token_to_id(token)
      if token_id is None:
        missing.append(token)
      else:
        ids[key] = token_id
    if missing:
      raise errors.UserError(
          f"Tokenizer {self.path} lacks the special token(s) "
          f"{', '.join(missing)}; ELECTRA needs all of "
          f"{', '.join(SPECIAL_TOKENS.values())}. Train a sentencepiece model "
          "with electra_jax.data.tokenization.train_sentencepiece (or run "
          "electra_jax.preprocess with --vocab_size), or add them to the "
          "vocabulary.")
    return ids


class SentencePieceTokenizer(Tokenizer):
  """A sentencepiece `.model` (unigram or BPE)."""

  kind = "sentencepiece"

  def __init__(self, path: str):
    self.path = path
    # From bytes, so that the model may live in a bucket (gs://...).
    self._sp = spm.SentencePieceProcessor(
        model_proto=epath.Path(path).read_bytes())
    self.special_ids = self._find_special_ids()

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return self._sp.encode(list(texts))

  def decode(self, ids: Sequence[int]) -> str:
    return self._sp.decode([int(i) for i in ids])

  def token_to_id(self, token: str) -> int | None:
    token_id = self._sp.piece_to_id(token)
    # Unknown pieces map to unk_id; only a real match counts.
    return token_id if self._sp.id_to_piece(token_id) == token else None

  def id_to_token(self, token_id: int) -> str:
    return self._sp.id_to_piece(int(token_id))


class WordPieceTokenizer(Tokenizer):
  """A BERT/ELECTRA `vocab.txt`, via the `tokenizers` package."""

  kind = "wordpiece"

  def __init__(self, path: str, lowercase: bool = True):
    self.path = path
    self.lowercase = lowercase
    vocab = epath.Path(path).read_text(encoding="utf-8").split("\n")
    if vocab and not vocab[-1]:
      vocab.pop()  # The newline that ends the last line.
    if not any(vocab):
      raise errors.UserError(f"WordPiece vocabulary {path} is empty.")
    self._vocab = {token: i for i, token in enumerate(vocab)}
    self.special_ids = self._find_special_ids()
    # BERT's basic tokenizer: clean text, split CJK characters, lower-case
    # and strip accents for uncased vocabularies.
    self._tok = implementations.BertWordPieceTokenizer(
        path, lowercase=lowercase, strip_accents=lowercase, clean_text=True,
        handle_chinese_chars=True)

  @property
  def vocab_size(self) -> int:
    return self._tok.get_vocab_size()

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    encodings = self._tok.encode_batch(list(texts), add_special_tokens=False)
    return [e.ids for e in encodings]

  def decode(self, ids: Sequence[int]) -> str:
    return self._tok.decode([int(i) for i in ids])

  def token_to_id(self, token: str) -> int | None:
    return self._vocab.get(token)

  def id_to_token(self, token_id: int) -> str:
    return self._tok.id_to_token(int(token_id))


def load_tokenizer(path: str, *, lowercase: bool = True) -> Tokenizer:
  """Loads a sentencepiece `.model` or a WordPiece `vocab.txt`.

  Args:
    path: a `.model` file (sentencepiece) or a `.txt` file with one WordPiece
      token per line (BERT's `vocab.txt`).
    lowercase: WordPiece only: lower-case and strip accents (uncased
      vocabularies such as ELECTRA's). Sentencepiece models carry their own
      normalization.

  Returns:
    A `Tokenizer` with `special_ids` read from the vocabulary.
  """
  if not epath.Path(path).is_file():
    raise errors.MissingFile(f"Tokenizer file {path} does not exist.")
  if path.endswith(".txt"):
    return WordPieceTokenizer(path, lowercase=lowercase)
  try:
    return SentencePieceTokenizer(path)
  except (RuntimeError, OSError) as e:
    raise errors.UserError(
        f"Could not load {path} as a sentencepiece model ({e}). Pass a "
        "sentencepiece .model file or a WordPiece vocab.txt.") from e


def train_sentencepiece(
    files: Sequence[str],
    output_prefix: str,
    vocab_size: int,
    *,
    sentences: Iterable[str] | None = None,
    model_type: str = "unigram",
    lowercase: bool = True,
    character_coverage: float = 0.9995,
    input_sentence_size: int = 1_000_000,
    num_threads: int = 8,
    seed: int = 0,
) -> str:
  """Trains a sentencepiece model with ELECTRA's special tokens at ids 0-4.

  Args:
    files: text files, one sentence (or paragraph) per line. May be empty if
      `sentences` is given.
    output_prefix: the model is written to `output_prefix + ".model"`,
      atomically (a crash never leaves a truncated model behind).
    vocab_size: number of pieces, the five special tokens included.
    sentences: an iterable of sentences to train on instead of files.
    model_type: "unigram" or "bpe".
    lowercase: case-fold during normalization (NFKC + case folding).
    character_coverage: fraction of characters covered by the vocabulary;
      the rest map to [UNK].
    input_sentence_size: at most this many sentences are sampled for
      training (sentencepiece samples uniformly from all it reads).
    num_threads: training threads. The model depends on it, so the default
      is fixed rather than the machine's CPU count: the same corpus gives
      the same model on every machine.
    seed: sampling seed; training is deterministic given it and the
      thread count.

  Returns:
    The path of the written `.model` file.
  """
  if model_type not in ("unigram", "bpe"):
    raise errors.UserError(f"model_type must be unigram or bpe, not {model_type!r}.")
  if bool(files) == (sentences is not None):
    raise ValueError("Pass exactly one of `files` or `sentences`.")
  if vocab_size <= len(SPECIAL_TOKENS):
    raise errors.UserError(f"vocab_size must exceed {len(SPECIAL_TOKENS)}.")
  kwargs = {"input": list(files)} if files else {"sentence_iterator": sentences}
  model = io.BytesIO()
  spm.set_random_generator_seed(seed)  # Process-global; used for sampling.
  try:
    spm.SentencePieceTrainer.train(
        **kwargs,
        model_writer=model,
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=character_coverage,
        normalization_rule_name="nmt_nfkc_cf" if lowercase else "nmt_nfkc",
        pad_id=0, unk_id=1, bos_id=-1, eos_id=-1,
        pad_piece=SPECIAL_TOKENS["pad_id"], unk_piece=SPECIAL_TOKENS["unk_id"],
        control_symbols=[SPECIAL_TOKENS[k] for k in
                         ("cls_id", "sep_id", "mask_id")],
        input_sentence_size=input_sentence_size,
        shuffle_input_sentence=True,
        num_threads=num_threads,
        minloglevel=2)
  except RuntimeError as e:
    if "Vocabulary size" in str(e) and "too high" in str(e):
      raise errors.UserError(
          f"The corpus is too small for a vocabulary of {vocab_size} "
          f"pieces; lower --vocab_size. sentencepiece said: {e}") from e
    raise
  path = output_prefix + ".model"
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    f.write(model.getvalue())
  os.replace(tmp, path)
  return path


def file_sha256(path: str) -> str:
  """Hex SHA-256 of a file (recorded next to the data it tokenized)."""
  digest = hashlib.sha256()
  with epath.Path(path).open("rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()
