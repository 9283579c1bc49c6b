"""The exported tokenizer: transformers gives electra_jax's ids, fill-mask runs.

Tokenizers are trained at test time on real text the installation ships
(the raw documents the default corpus starts from: package descriptions,
with their accents, emoji, tables and odd spacing), and compared with
`transformers.AutoTokenizer` line by line.
"""

import io
import itertools
import json

import numpy as np
import pytest
import sentencepiece as spm
from tokenizers import implementations

from electra_jax import demo
from electra_jax import export
from electra_jax import loop
from electra_jax.convert import tokenizer_json
from electra_jax.data import default_corpus
from electra_jax.data import tokenization
from electra_jax.finetune import features
from electra_jax.finetune import tasks
from tests import testing

transformers = pytest.importorskip("transformers")

SPECIALS = list(tokenization.SPECIAL_TOKENS.values())
# Lines no package description is sure to hold.
ODD = ["", "   ", "  Café  naïve\tcoöperate  ", "ÀÉÎÕÜ Straße ǅ İ",
       "e\u0301 (a combining accent)", "😀😀 emoji 😀 unknown ☃", "日本語のテキスト",
       "１２３ ＡＢＣ ﬁ ligature", "non\u00a0breaking \u3000ideographic",
       "tab\there\nnewline\r\nend", "zero\u200bwidth \u1680ogham \u2028sep",
       "1,234.56 + 7e-3 = 0x1F; 2024-11-30", "$%^&*()_+-=[]{}|;':\",./<>?`~",
       "a" * 60, "----------------------------------------------------",
       "control\x00\x07chars", "[mask] [cls] not special when lower-case",
       "bytes spelled out: <0xF0> <0x9F>"]


def _real_lines(num_docs: int = 400) -> list[str]:
  docs = itertools.islice(default_corpus.iter_raw_documents(), num_docs)
  return [line for doc in docs for line in doc.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def corpus():
  """(training lines, test lines): every 25th line held out, a few hundred,
  plus every held-out line with a non-ASCII character, plus ODD."""
  lines = _real_lines()
  held = lines[::25][:300]
  held += [x for x in lines[1::25] if not x.isascii()][:150]
  train = [x for i, x in enumerate(lines) if i % 25][:8000]
  assert len(train) == 8000 and len(held) > 300
  return train, held + ODD


def _train_spm(lines, path, **kwargs):
  """A sentencepiece model with ELECTRA's specials (as train_sentencepiece)
  and settings it does not expose (byte fallback, user symbols)."""
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(lines), model_writer=model, vocab_size=600,
      pad_id=0, unk_id=1, bos_id=-1, eos_id=-1, pad_piece="[PAD]",
      unk_piece="[UNK]", control_symbols=SPECIALS[2:], num_threads=1,
      minloglevel=2, **kwargs)
  path.write_bytes(model.getvalue())
  return str(path)


def _wordpiece_vocab(lines, path, lowercase):
  trainer = implementations.BertWordPieceTokenizer(
      lowercase=lowercase, strip_accents=lowercase)
  trainer.train_from_iterator(lines, vocab_size=600, special_tokens=SPECIALS)
  vocab = trainer.get_vocab()
  path.write_text("\n".join(sorted(vocab, key=vocab.get)) + "\n")
  return str(path)


TOKENIZERS = {
    "unigram": lambda lines, tmp: tokenization.train_sentencepiece(
        [], str(tmp / "uni"), 600, sentences=iter(lines), num_threads=1),
    "bpe_cased": lambda lines, tmp: tokenization.train_sentencepiece(
        [], str(tmp / "bpe"), 600, sentences=iter(lines), model_type="bpe",
        lowercase=False, num_threads=1),
    "unigram_byte_fallback": lambda lines, tmp: _train_spm(
        lines, tmp / "bf.model", byte_fallback=True),
    "wordpiece": lambda lines, tmp: _wordpiece_vocab(
        lines, tmp / "vocab.txt", True),
    "wordpiece_cased": lambda lines, tmp: _wordpiece_vocab(
        lines, tmp / "vocab.txt", False),
}


@pytest.fixture(scope="module", params=sorted(TOKENIZERS))
def pair(request, corpus, tmp_path_factory):
  """(name, electra_jax tokenizer, transformers tokenizer from its export)."""
  tmp = tmp_path_factory.mktemp(request.param)
  path = TOKENIZERS[request.param](corpus[0], tmp)
  tok = tokenization.load_tokenizer(
      path, lowercase=not request.param.endswith("cased"))
  assert tokenizer_json.write(tok, str(tmp / "out"), 96) == list(
      tokenizer_json.FILES)
  return (request.param, tok,
          transformers.AutoTokenizer.from_pretrained(str(tmp / "out")))


def test_same_ids_as_electra_jax_on_real_text(pair, corpus):
  name, tok, hf = pair
  cls, sep = tok.special_ids["cls_id"], tok.special_ids["sep_id"]
  lines = corpus[1]
  if not name.startswith("wordpiece"):
    # The other documented difference: transformers reads text that spells
    # a special token ("[CLS]") as that token, sentencepiece as characters
    # (the fill-mask test covers "[MASK]"). Such lines occur in the corpus
    # when an installed package's README names them (electra_jax's own).
    specials = [tok.id_to_token(i) for i in tok.special_ids.values()]
    lines = [x for x in lines if not any(t in x for t in specials)]
  ours = [[cls] + ids + [sep] for ids in tok.encode_batch(lines)]
  theirs = hf(lines)["input_ids"]
  ties = []
  for line, a, b in zip(lines, ours, theirs):
    if a == b:
      continue
    # The one allowed difference (module docstring of tokenizer_json): two
    # Unigram segmentations of a run of one character that score the same,
    # the same pieces in another order.
    differ = {tok.id_to_token(i) for x, y in zip(a, b) if x != y
              for i in (x, y)}
    assert (name.startswith("unigram") and sorted(a) == sorted(b)
            and len(set("".join(differ))) == 1), (
                line, [tok.id_to_token(i) for i in a],
                [tok.id_to_token(i) for i in b])
    ties.append(line)
  assert len(ties) <= len(lines) // 50, ties
  # Characters outside the vocabulary happen here: the test checks them
  # (as [UNK], or as bytes in a byte-fallback model), not only words.
  tokens = {tok.id_to_token(i) for ids in ours for i in ids}
  assert ("<0xF0>" if name.endswith("byte_fallback") else "[UNK]") in tokens


def test_framing_and_masks_as_electra_jax_builds_them(pair, corpus):
  _, tok, hf = pair
  # Lines that encode alike on their own (not the ties above): this test
  # is about what goes around them.
  texts = [x for x in corpus[1] if 0 < len(x) < 80 and tok.encode(x) ==
           hf(x, add_special_tokens=False)["input_ids"]][:40]
  assert len(texts) == 40
  examples = [tasks.TextExample(str(i), (a, b))
              for i, (a, b) in enumerate(zip(texts[::2], texts[1::2]))]
  want = features.encode_texts(examples, tok, 512)
  for k, ex in enumerate(examples):
    got = hf(*ex.texts)
    n = int(want["input_mask"][k].sum())
    assert got["input_ids"] == want["input_ids"][k, :n].tolist(), ex.texts
    assert got["token_type_ids"] == want["segment_ids"][k, :n].tolist()
  # "[MASK]" in the text is the mask token, as the demo reads it.
  for text in ("The [MASK] of a  [MASK]", "[MASK]", "Café [MASK]. Done."):
    assert hf(text)["input_ids"] == demo.encode_with_masks(tok, text), text
  assert [hf.pad_token_id, hf.unk_token_id, hf.cls_token_id,
          hf.sep_token_id, hf.mask_token_id] == [
              tok.special_ids[k] for k in tokenization.SPECIAL_TOKENS]
  assert hf.model_max_length == 96 and hf.mask_token == "[MASK]"
  assert len(hf) == tok.vocab_size


def test_a_model_transformers_cannot_mirror_is_refused(corpus, tmp_path):
  path = _train_spm(corpus[0][:2000], tmp_path / "u.model",
                    user_defined_symbols=["<br>"])
  with pytest.raises(tokenizer_json.UnsupportedTokenizer,
                     match="user-defined"):
    tokenizer_json.build(tokenization.load_tokenizer(path))


def test_cased_wordpiece_run_exports_its_casing(corpus, tmp_path):
  """The run's metadata says lower-case or not; the export follows it."""
  vocab = _wordpiece_vocab(corpus[0], tmp_path / "v.txt", False)
  testing.write_dataset(str(tmp_path / "data"), 4, 2)
  meta = json.loads((tmp_path / "data" / "metadata.json").read_text())
  meta.update(tokenizer="vocab.txt", lowercase=False)
  saved = tmp_path / "run" / "tokenizer"  # As a run keeps its tokenizer.
  saved.mkdir(parents=True)
  (saved / "metadata.json").write_text(json.dumps(meta))
  (saved / "vocab.txt").write_text(open(vocab).read())
  export._write_tokenizer(str(tmp_path / "run"), str(tmp_path / "out"), 64)
  hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "out"))
  tok = tokenization.load_tokenizer(vocab, lowercase=False)
  text = "Café Straße ÀÉÎ and the Model"
  assert hf(text)["input_ids"][1:-1] == tok.encode(text)
  assert hf(text)["input_ids"] != hf(text.lower())["input_ids"]
  assert (tmp_path / "out" / "vocab.txt").exists()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  cache = str(tmp_path_factory.mktemp("data"))
  workdir = tmp_path_factory.mktemp("run")
  loop.train_and_evaluate(testing.tiny_config(cache, steps=2), str(workdir))
  return workdir


def test_fill_mask_pipeline_on_an_export(run, tmp_path):
  """The pipeline's fills are the run's own generator's (the demo's)."""
  export.export(str(run), str(tmp_path))
  fill = transformers.pipeline("fill-mask", model=str(tmp_path / "generator"))
  text = "The [MASK] of the model is returned."
  got = fill(text, top_k=5)
  vocab_size = len(fill.tokenizer)
  ours = demo.run(str(run), text, top_k=vocab_size)["fills"][0]
  tok = tokenization.load_tokenizer(str(run / "tokenizer" / "tokenizer.model"))
  probs = {tok.token_to_id(t): p for t, p in ours}
  fifth = sorted(probs.values(), reverse=True)[4]
  assert len(got) == 5
  for row in got:
    np.testing.assert_allclose(row["score"], probs[row["token"]], atol=1e-5)
    assert row["score"] >= fifth - 1e-5
  # The discriminator's directory loads with the same tokenizer.
  hf = transformers.AutoTokenizer.from_pretrained(
      str(tmp_path / "discriminator"))
  assert hf(text)["input_ids"] == demo.encode_with_masks(tok, text)
  assert type(fill.model).__name__ == "ElectraForMaskedLM"
