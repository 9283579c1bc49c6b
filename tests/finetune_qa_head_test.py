"""The ELECTRA QA head: its loss against a numpy re-derivation of the
reference's formulas, the context-restricted softmax, the start beam's
end predictions, TF's glorot-uniform init, and a SQuAD 2.0-style run of
the CLI on a small local file of real text."""

import json
import math
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from electra_jax import errors
from electra_jax import model as model_lib
from electra_jax.data import tokenization
from electra_jax.finetune import heads
from electra_jax.finetune import qa_head
from electra_jax.finetune import squad_eval
from tests import testing

B, T, H = 3, 8, 32
CFG = model_lib.ModelConfig(**testing.TINY)
QA = qa_head.QAConfig(head="electra", beam_size=3, answerable_weight=0.5,
                      n_best_size=5, max_answer_length=4, na_threshold=-2.75)
# [CLS] q q [SEP] c c c [SEP], the last row padded after 6 tokens.
INPUT_MASK = np.array([[1] * 8, [1] * 8, [1] * 6 + [0] * 2], np.int32)
SEGMENT_IDS = np.array([[0] * 4 + [1] * 4, [0] * 4 + [1] * 4,
                        [0] * 3 + [1] * 3 + [0] * 2], np.int32)
BATCH = {"input_mask": INPUT_MASK, "segment_ids": SEGMENT_IDS,
         "start_positions": np.array([5, 0, 4], np.int32),
         "end_positions": np.array([6, 0, 5], np.int32),
         "is_impossible": np.array([0, 1, 0], np.int32),
         "weight": np.array([1.0, 1.0, 0.5], np.float32)}


@pytest.fixture(scope="module")
def head_and_params():
  x = jax.random.normal(jax.random.key(1), (B, T, H))
  head = qa_head.ElectraQAHead(CFG, beam_size=3)
  params = nn.unbox(head.init(jax.random.key(0), x, INPUT_MASK, SEGMENT_IDS,
                              BATCH["start_positions"]))["params"]
  # Non-zero biases, so that the numpy side checks where they go.
  params = jax.tree.map(lambda p: p + 0.1 if p.ndim == 1 else p, params)
  return head, params, x


def _gelu(v):
  return 0.5 * v * (1 + np.vectorize(math.erf)(v / np.sqrt(2)))


def _log_softmax(v):
  v = v - v.max(-1, keepdims=True)
  return v - np.log(np.exp(v).sum(-1, keepdims=True))


def _numpy_loss(p, x):
  """The reference's `get_prediction_module` (training branch) in numpy."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
  x = np.asarray(x, np.float64)
  mask = INPUT_MASK * SEGMENT_IDS + np.eye(T)[0]  # + one_hot(0).
  start = x @ p["start"]["kernel"][:, 0] + p["start"]["bias"][0]
  start = start + 1000.0 * (mask - 1)
  gold = x[np.arange(B), BATCH["start_positions"]]  # [B, H]
  pair = np.concatenate([np.repeat(gold[:, None], T, 1), x], -1)
  hidden = _gelu(pair @ p["qa_hidden"]["kernel"] + p["qa_hidden"]["bias"])
  end = hidden @ p["qa_logits"]["kernel"][:, 0] + p["qa_logits"]["bias"][0]
  end = end + 1000.0 * (mask - 1)
  start_p = np.exp(_log_softmax(start))
  feat = np.concatenate([x[:, 0], np.einsum("bt,bth->bh", start_p, x)], -1)
  a = _gelu(feat @ p["answerable_hidden"]["kernel"]
            + p["answerable_hidden"]["bias"])
  logit = a @ p["answerable"]["kernel"][:, 0] + p["answerable"]["bias"][0]
  z = BATCH["is_impossible"]
  bce = np.maximum(logit, 0) - logit * z + np.log1p(np.exp(-abs(logit)))
  rows = np.arange(B)
  ce_start = -_log_softmax(start)[rows, BATCH["start_positions"]]
  ce_end = -_log_softmax(end)[rows, BATCH["end_positions"]]
  per = (ce_start + ce_end) / 2 + 0.5 * bce
  return (per * BATCH["weight"]).sum(), BATCH["weight"].sum()


def test_loss_matches_the_reference_formula(head_and_params):
  head, params, x = head_and_params
  out = head.apply({"params": params}, x, INPUT_MASK, SEGMENT_IDS,
                   BATCH["start_positions"])
  total, count = qa_head.loss(QA, out, BATCH)
  want_total, want_count = _numpy_loss(params, x)
  np.testing.assert_allclose(total, want_total, rtol=1e-5)
  assert count == want_count == 2.5
  # The answerable term counts: without it the loss is smaller.
  no_answerable = qa_head.loss(
      qa_head.QAConfig(**{**QA.__dict__, "answerable_weight": 0.0}), out,
      BATCH)[0]
  assert no_answerable < total - 1e-3


def test_softmax_is_restricted_to_context_and_cls(head_and_params):
  head, params, x = head_and_params
  out = head.apply({"params": params}, x, INPUT_MASK, SEGMENT_IDS,
                   BATCH["start_positions"])
  allowed = (INPUT_MASK * SEGMENT_IDS).astype(bool)
  allowed[:, 0] = True
  for key in ("start_logits", "end_logits"):
    p = np.asarray(jax.nn.softmax(out[key]))
    assert (p[~allowed] == 0).all(), key  # Question tokens, padding.
    assert (p[allowed] > 0).all(), key
    np.testing.assert_allclose(p.sum(-1), 1, rtol=1e-6)


def test_beam_ends_are_the_ends_given_each_start(head_and_params):
  head, params, x = head_and_params
  out = head.apply({"params": params}, x, INPUT_MASK, SEGMENT_IDS)
  assert out["start_top_index"].shape == (B, 3)
  assert out["end_top_index"].shape == out["end_top_log_probs"].shape == (
      B, 3, 3)
  start_lp = jax.nn.log_softmax(out["start_logits"])
  np.testing.assert_allclose(
      out["start_top_log_probs"],
      np.take_along_axis(start_lp, out["start_top_index"], 1), rtol=1e-6)
  for i in range(3):  # Each start of the beam, as a gold start.
    given = head.apply({"params": params}, x, INPUT_MASK, SEGMENT_IDS,
                       out["start_top_index"][:, i])
    end_lp = np.asarray(jax.nn.log_softmax(given["end_logits"]))
    want = -np.sort(-end_lp, axis=-1)[:, :3]
    np.testing.assert_allclose(out["end_top_log_probs"][:, i], want,
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out["end_top_index"][:, i],
                                  np.argsort(-end_lp, axis=-1)[:, :3])


def test_glorot_uniform_init():
  model = heads.TaskModel(CFG, "qa", qa=QA)
  ids = np.ones((2, 16), np.int32)
  params = nn.unbox(model.init(jax.random.key(0), ids, ids, ids))["params"]
  head = params["head"]
  shapes = {k: v["kernel"].shape for k, v in head.items()}
  assert shapes == {"start": (H, 1), "qa_hidden": (2 * H, 512),
                    "qa_logits": (512, 1), "answerable_hidden": (2 * H, 512),
                    "answerable": (512, 1)}
  for name in ("qa_hidden", "answerable_hidden"):
    k = np.asarray(head[name]["kernel"])
    bound = np.sqrt(6 / (2 * H + 512))
    assert np.abs(k).max() <= bound
    assert np.abs(k).max() > 0.99 * bound  # Uniform up to the bound.
    np.testing.assert_allclose(k.std(), bound / np.sqrt(3), rtol=0.02)
    assert not np.asarray(head[name]["bias"]).any()
  # The BERT-style head keeps its dense(2).
  bert = heads.TaskModel(CFG, "qa",
                         qa=qa_head.QAConfig(**{**QA.__dict__, "head": "bert"}))
  out = jax.eval_shape(lambda: bert.init_with_output(
      jax.random.key(0), ids, ids, ids)[0])
  assert out["start_logits"].shape == out["end_logits"].shape == (2, 16)


# SQuAD 2.0-style data from real sentences; the same passages answer some
# questions and not others.
PASSAGES = [
    ("The Eiffel Tower was completed in 1889 for the World's Fair in Paris.",
     [("When was the Eiffel Tower completed?", "1889"),
      ("Who designed the Sydney Opera House?", None)]),
    ("Marie Curie won the Nobel Prize in Physics in 1903 and in Chemistry "
     "in 1911.", [("When did Marie Curie win the prize in Chemistry?",
                   "1911"), ("Where was Marie Curie born?", None)]),
    ("The Amazon river flows through Brazil, Peru and Colombia before it "
     "reaches the Atlantic Ocean.",
     [("Which ocean does the Amazon reach?", "the Atlantic Ocean"),
      ("How long is the Nile?", None)]),
    ("Mount Everest, at 8,849 metres, is the highest mountain above sea "
     "level.", [("How high is Mount Everest?", "8,849 metres"),
                ("Who first climbed Everest?", None)]),
]


def _squad2_rows():
  rows = []
  for p, (context, qas) in enumerate(PASSAGES):
    for q, (question, answer) in enumerate(qas):
      answers = {"text": [], "answer_start": []}
      if answer:
        answers = {"text": [answer], "answer_start": [context.index(answer)]}
      rows.append({"id": f"p{p}q{q}", "question": question,
                   "context": context, "answers": answers})
  return rows


def _vocab(path, rows):
  """A WordPiece vocab.txt of every basic token of the texts."""
  path.write_text("\n".join(testing.SPECIALS) + "\n")
  basic = squad_eval.basic_tokenizer(tokenization.load_tokenizer(str(path)))
  words = {w for r in rows for w in basic(r["question"] + " " + r["context"])}
  path.write_text("\n".join(testing.SPECIALS + sorted(words)) + "\n")
  return str(path), len(testing.SPECIALS) + len(words)


def test_squad2_cli_run_reports_official_scores(tmp_path):
  rows = _squad2_rows()
  path = tmp_path / "squad2.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  workdir = str(tmp_path / "work")
  vocab, vocab_size = _vocab(tmp_path / "vocab.txt", rows)
  cmd = [sys.executable, "-m", "electra_jax.finetune",
         "--config=configs/finetune.py:task=qa,size=tiny",
         f"--workdir={workdir}",
         f"--config.tokenizer={vocab}",
         f"--config.model.vocab_size={vocab_size}",
         f"--config.data.train_file={path}", f"--config.data.eval_file={path}",
         f"--config.data.predict_file={path}",
         "--config.max_seq_length=32", "--config.data.doc_stride=8",
         "--config.data.max_query_length=12", "--config.batch_size=8",
         "--config.eval_batch_size=8", "--config.num_train_epochs=20",
         "--config.optimizer.learning_rate=1e-3"]
  env = {**os.environ, "JAX_DISABLE_MOST_OPTIMIZATIONS": "1",
         "PYTHONPATH": testing.ROOT}
  proc = subprocess.run(cmd, cwd=testing.ROOT, env=env, capture_output=True,
                        text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = json.loads(open(os.path.join(workdir, "results.json")).read())
  final = results["trials"][0]["final"]
  print("final:", json.dumps(final))
  for key in ("exact_match", "f1", "HasAns_exact", "HasAns_f1",
              "NoAns_exact", "NoAns_f1", "best_exact", "best_exact_thresh",
              "best_f1", "best_f1_thresh"):
    assert key in final, key
  # The threshold search includes the configured threshold's cut.
  assert final["best_f1"] >= final["f1"] - 1e-9
  assert final["best_exact"] >= final["exact_match"] - 1e-9
  assert 0 <= final["f1"] <= 1
  # It learnt: the questions are the training questions.
  assert final["best_f1"] >= 0.75, final
  assert "best_f1" in proc.stderr  # Logged per epoch.
  # Predict mode restored the ELECTRA head; "" iff na_score > -2.75.
  with open(os.path.join(workdir, "predictions.jsonl")) as f:
    records = [json.loads(line) for line in f]
  assert len(records) == len(rows)
  for r in records:
    assert r["answer"] == ("" if r["na_score"] > -2.75 else r["best_span"])
    assert r["best_span"] == r["nbest"][0]["text"]


@pytest.mark.parametrize("head", qa_head.HEADS)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_outputs_are_float32_and_params_too(head, dtype):
  cfg = model_lib.ModelConfig(**testing.TINY, dtype=jnp.dtype(dtype))
  model = heads.TaskModel(
      cfg, "qa", qa=qa_head.QAConfig(**{**QA.__dict__, "head": head}))
  ids = np.ones((2, 8), np.int32)
  variables = jax.eval_shape(lambda: nn.unbox(model.init(
      jax.random.key(0), ids, ids, ids)))
  for start in (None, np.zeros(2, np.int32)):  # Evaluating, training.
    out = jax.eval_shape(lambda v, s=start: model.apply(
        v, ids, ids, ids, start_positions=s), variables)
    floats = {k: v.dtype for k, v in out.items() if "index" not in k}
    assert set(floats.values()) == {np.dtype("float32")}, floats
  assert {x.dtype for x in jax.tree.leaves(variables)} == {np.dtype("float32")}


def test_config_mistakes_are_user_errors():
  with pytest.raises(errors.UserError, match="--config.qa.head to one of"):
    qa_head.QAConfig(**{**QA.__dict__, "head": "xlnet"})
  with pytest.raises(errors.UserError, match="--config.qa.beam_size"):
    qa_head.QAConfig(**{**QA.__dict__, "beam_size": 0})


def test_each_head_has_its_own_no_answer_threshold():
  # The answerable logit (electra) and null minus best span score (bert)
  # live on different scales; the shipped config gives each its reference's.
  q = testing.finetune_config("task=squad2").qa
  electra = qa_head.QAConfig(**q)
  bert = qa_head.QAConfig(**{**q.to_dict(), "head": "bert"})
  assert (electra.threshold, bert.threshold) == (-2.75, 0.0)
