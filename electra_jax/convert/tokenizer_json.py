"""A run's tokenizer as transformers loads it: `tokenizer.json` and configs.

  tok = tokenization.load_tokenizer(path, lowercase=...)
  tokenizer_json.write(tok, out_dir, model_max_length=512)

writes `tokenizer.json` (a `tokenizers` pipeline), `tokenizer_config.json`
and `special_tokens_map.json`, so that `transformers.AutoTokenizer` gives the
ids electra_jax gives, framed as electra_jax frames its inputs:
`[CLS] a [SEP]` and `[CLS] a [SEP] b [SEP]` with segment ids 0...0 1...1.

A sentencepiece model becomes the same `tokenizers` model (Unigram, or BPE
with merges read off its scores), behind sentencepiece's normalization: its
precompiled character map (NFKC, case folding), its whitespace clean-up and
its dummy "▁" prefix. A WordPiece vocabulary gets the BERT pipeline that
`tokenization.WordPieceTokenizer` runs. Two known differences: text that
spells a special token ("[MASK]") is that token in transformers, as in
`demo.encode_with_masks`, where a sentencepiece run reads it as characters;
and where two Unigram segmentations of a run of one repeated character score
the same, sentencepiece (float32 sums) and `tokenizers` (float64) may order
the same pieces differently.
"""

import json

from etils import epath
from sentencepiece import sentencepiece_model_pb2
import tokenizers
from tokenizers import decoders
from tokenizers import implementations
from tokenizers import models
from tokenizers import normalizers
from tokenizers import pre_tokenizers
from tokenizers import processors

from electra_jax.data import tokenization

FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
# transformers' names for the special tokens, from electra_jax's id names.
SPECIAL_TOKENS = {key.replace("_id", "_token"): token
                  for key, token in tokenization.SPECIAL_TOKENS.items()}
_SPACE = "▁"  # sentencepiece's meta symbol for a space.
# ModelProto.SentencePiece.Type values.
_NORMAL, _UNKNOWN, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 4, 5, 6
_UNIGRAM, _BPE = 1, 2


class UnsupportedTokenizer(ValueError):
  """A sentencepiece model whose behaviour `tokenizers` cannot reproduce."""


def _sentencepiece_model(proto) -> models.Model:
  """The Unigram or BPE model of a sentencepiece `ModelProto`."""
  spec = proto.trainer_spec
  pieces = [(p.piece, p.score) for p in proto.pieces]
  unk_id = next(i for i, p in enumerate(proto.pieces) if p.type == _UNKNOWN)
  if spec.model_type == _UNIGRAM:
    # sentencepiece never reads a byte piece ("<0xF0>") off the text; a
    # score below any spelling of it out of normal pieces (each at least the
    # lowest score) keeps `tokenizers` from doing so either.
    lowest = min([0.0] + [p.score for p in proto.pieces if p.type == _NORMAL])
    floor = len("<0x00>") * lowest - 1.0
    pieces = [(p.piece, floor if p.type == _BYTE else p.score)
              for p in proto.pieces]
    return models.Unigram(pieces, unk_id=unk_id,
                          byte_fallback=spec.byte_fallback)
  # sentencepiece's BPE merges the adjacent pair whose joined piece scores
  # highest; as a merge list, that is every split of a piece into two
  # vocabulary pieces, pieces in falling score order.
  vocab = {piece: i for i, (piece, _) in enumerate(pieces)}
  merges = []
  for i in sorted(range(len(pieces)), key=lambda i: (-pieces[i][1], i)):
    piece = pieces[i][0]
    if proto.pieces[i].type != _NORMAL:
      continue
    splits = [(piece[:k], piece[k:]) for k in range(1, len(piece))]
    merges += sorted(((a, b) for a, b in splits if a in vocab and b in vocab),
                     key=lambda ab: (vocab[ab[0]], vocab[ab[1]]))
  return models.BPE(vocab, merges, unk_token=pieces[unk_id][0],
                    fuse_unk=True, byte_fallback=spec.byte_fallback)


def _check_sentencepiece(proto, path: str) -> None:
  """Raises UnsupportedTokenizer for what the pipeline below cannot mirror."""
  spec, kinds = proto.trainer_spec, {p.type for p in proto.pieces}
  problems = []
  if spec.model_type not in (_UNIGRAM, _BPE):
    problems.append("a word or char model (only unigram and bpe convert)")
  if spec.treat_whitespace_as_suffix:
    problems.append("treat_whitespace_as_suffix")
  if kinds & {_USER_DEFINED, _UNUSED}:
    problems.append("user-defined or unused pieces")
  if _UNKNOWN not in kinds:
    problems.append("no unknown piece")
  if problems:
    raise UnsupportedTokenizer(
        f"{path}: {'; '.join(problems)}: no tokenizer.json can reproduce "
        "this sentencepiece model.")


def _sentencepiece(path: str) -> tokenizers.Tokenizer:
  """The `tokenizers` twin of a sentencepiece `.model`."""
  proto = sentencepiece_model_pb2.ModelProto()
  proto.ParseFromString(epath.Path(path).read_bytes())
  _check_sentencepiece(proto, path)
  norm = proto.normalizer_spec
  tok = tokenizers.Tokenizer(_sentencepiece_model(proto))
  steps = []
  if norm.precompiled_charsmap:  # Empty for the "identity" rule.
    steps.append(normalizers.Precompiled(norm.precompiled_charsmap))
  if norm.remove_extra_whitespaces:
    # sentencepiece drops leading and trailing spaces and collapses runs of
    # them, after its character map (which turns tabs and the like into
    # spaces). `\A`/`\z`: whole-text anchors (`^`/`$` match at newlines).
    steps += [normalizers.Replace(tokenizers.Regex(r"\A +| +\z"), ""),
              normalizers.Replace(tokenizers.Regex(" {2,}"), " ")]
  tok.normalizer = normalizers.Sequence(steps)
  # "always": each stretch of text between special tokens gets its dummy
  # prefix, as when electra_jax encodes the text around a [MASK] on its own.
  prepend = "always" if norm.add_dummy_prefix else "never"
  tok.pre_tokenizer = pre_tokenizers.Metaspace(
      replacement=_SPACE, prepend_scheme=prepend,
      split=proto.trainer_spec.split_by_whitespace)
  metaspace = decoders.Metaspace(replacement=_SPACE, prepend_scheme=prepend,
                                 split=proto.trainer_spec.split_by_whitespace)
  tok.decoder = (decoders.Sequence([decoders.ByteFallback(), metaspace])
                 if proto.trainer_spec.byte_fallback else metaspace)
  return tok


def _wordpiece(path: str, lowercase: bool) -> tokenizers.Tokenizer:
  """BERT's pipeline on a `vocab.txt`, as `WordPieceTokenizer` builds it."""
  lines = epath.Path(path).read_text(encoding="utf-8").split("\n")
  if lines and not lines[-1]:
    lines.pop()  # The newline that ends the last line.
  vocab = {token: i for i, token in enumerate(lines)}
  # Same arguments as tokenization.WordPieceTokenizer; the export test
  # holds the two equal on real text.
  bert = implementations.BertWordPieceTokenizer(
      vocab, unk_token=SPECIAL_TOKENS["unk_token"],
      lowercase=lowercase, strip_accents=lowercase, clean_text=True,
      handle_chinese_chars=True)
  return tokenizers.Tokenizer.from_str(bert.to_str())


def build(tok: tokenization.Tokenizer) -> tokenizers.Tokenizer:
  """The `tokenizers` pipeline that gives `tok`'s ids, framed for ELECTRA.

  Args:
    tok: an electra_jax tokenizer (sentencepiece or WordPiece).

  Returns:
    A `tokenizers.Tokenizer` whose `encode(a)` / `encode(a, b)` give
    `[CLS] a [SEP]` / `[CLS] a [SEP] b [SEP]` in `tok`'s ids, with type ids.

  Raises:
    UnsupportedTokenizer: a sentencepiece model with features that the
      `tokenizers` package cannot reproduce.
  """
  if tok.kind == "sentencepiece":
    out = _sentencepiece(tok.path)
  else:
    out = _wordpiece(tok.path, tok.lowercase)
  # Special tokens match as whole strings in the raw text, before any
  # normalization, so that "[MASK]" stays the mask token in a lower-cased
  # model too.
  out.add_special_tokens([tokenizers.AddedToken(t, special=True,
                                                normalized=False)
                          for t in SPECIAL_TOKENS.values()])
  cls, sep = SPECIAL_TOKENS["cls_token"], SPECIAL_TOKENS["sep_token"]
  ids = tok.special_ids
  out.post_processor = processors.TemplateProcessing(
      single=f"{cls}:0 $A:0 {sep}:0",
      pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
      special_tokens=[(cls, ids["cls_id"]), (sep, ids["sep_id"])])
  return out


def write(tok: tokenization.Tokenizer, output: str,
          model_max_length: int) -> list[str]:
  """Writes `FILES` for `tok` into the directory `output`.

  Args:
    tok: the run's tokenizer.
    output: a transformers model directory (local or gs://).
    model_max_length: the most tokens the model takes (its position
      embeddings); transformers truncates to it when asked to.

  Returns:
    The names of the files written.

  Raises:
    UnsupportedTokenizer: see `build`.
  """
  out = epath.Path(output)
  out.mkdir(parents=True, exist_ok=True)
  (out / FILES[0]).write_text(build(tok).to_str(pretty=True))
  config = {
      # The generic class that runs tokenizer.json as it is (transformers'
      # ELECTRA class would rebuild a WordPiece pipeline of its own).
      "tokenizer_class": "PreTrainedTokenizerFast",
      "model_max_length": model_max_length,
      "clean_up_tokenization_spaces": False,
      # ELECTRA reads segment ids; the generic class leaves them out.
      "model_input_names": ["input_ids", "token_type_ids", "attention_mask"],
      **SPECIAL_TOKENS,
  }
  if tok.kind == "wordpiece":
    config["do_lower_case"] = tok.lowercase
  (out / FILES[1]).write_text(json.dumps(config, indent=2, sort_keys=True))
  (out / FILES[2]).write_text(json.dumps(SPECIAL_TOKENS, indent=2,
                                         sort_keys=True))
  return list(FILES)
