"""The reference's fine-tuning step (summed loss, clipped), heads and
headline; then end to end: a tiny pretrained (transformers) model
fine-tunes on small learnable synthetic tasks (classification, QA spans,
regression, tagging), and the CLI trains from a local CSV in a subprocess,
then predicts."""

import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from electra_jax import model as model_lib
from electra_jax import train as train_lib
from electra_jax.finetune import data as data_lib
from electra_jax.finetune import heads
from electra_jax.finetune import train as ft_train
from tests import testing
from tests.testing import fast_compiles  # pylint: disable=W0611
from tests.testing import hf_dir  # pylint: disable=unused-import


def _write_jsonl(path, rows):
  with open(path, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
  return str(path)


def _cfg(dropout=0.0, hidden=16):
  return model_lib.ModelConfig(
      vocab_size=40, embedding_size=hidden, hidden_size=hidden,
      num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
      hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
      max_position_embeddings=16)


@pytest.mark.parametrize("kind", ["classification", "tagging"])
def test_summed_loss_step_is_the_references(kind):
  """One step on a fixed batch equals grad of the summed per-example losses,
  clipped to global norm 1.0, then the optimizer; "mean" differs."""
  b, t, c, lr = 8, 6, 3, 0.1
  rng = np.random.default_rng(0)
  mask = np.ones((b, t), np.int32)
  mask[::2, -2:] = 0
  batch = {"input_ids": rng.integers(5, 40, (b, t)).astype(np.int32),
           "input_mask": mask, "segment_ids": np.zeros((b, t), np.int32),
           "weight": np.ones(b, np.float32)}
  if kind == "classification":
    batch["label"] = rng.integers(0, c, b).astype(np.int32)
    count = b
  else:  # -1: not a word's first token.
    batch["labels"] = np.where(mask > 0, rng.integers(-1, c, (b, t)), -1)
    count = int(np.sum(batch["labels"] >= 0))
  model = heads.TaskModel(_cfg(), kind, c)
  ids = jnp.asarray(batch["input_ids"])
  params = nn.unbox(model.init(jax.random.key(1), ids, ids, ids)["params"])

  def summed(p):  # The reference's: one-hot cross-entropy, summed.
    logp = jax.nn.log_softmax(model.apply(
        {"params": p}, batch["input_ids"], batch["input_mask"],
        batch["segment_ids"]))
    target = batch["label"] if kind == "classification" else batch["labels"]
    return -jnp.sum(jax.nn.one_hot(target, c) * logp)  # -1: all zeros.

  grads = jax.grad(summed)(params)
  norm = float(optax.tree.norm(grads))
  assert norm > 1.0  # The summed gradient is clipped.
  for clip in (1.0, 1e9):  # The reference's clip; none, to see the scale.
    tx = optax.chain(optax.clip_by_global_norm(clip), optax.sgd(lr))
    got = {}
    for reduction, scale in (("sum", 1.0), ("mean", 1.0 / count)):
      state = train_lib.TrainState(step=jnp.zeros((), jnp.int32),
                                   params=params, opt_state=tx.init(params),
                                   tx=tx)
      got[reduction], _ = ft_train.train_step(
          state, jax.tree.map(jnp.asarray, batch), jax.random.key(2),
          model=model, schedule=lambda step: jnp.full((), lr),
          loss_reduction=reduction)
      factor = min(1.0, clip / (norm * scale))  # clip_by_global_norm.
      want = jax.tree.map(lambda p, g: p - lr * factor * scale * g, params,
                          grads)  # sgd: p - lr * clipped g.
      jax.tree.map(lambda x, y: np.testing.assert_allclose(
          x, y, rtol=2e-5, atol=1e-6), got[reduction].params, want)
    delta = max(jax.tree.leaves(jax.tree.map(
        lambda x, y: float(jnp.max(jnp.abs(x - y))), got["sum"].params,
        got["mean"].params)))
    # Unclipped, the sum's step is `count` times the mean's.
    assert (delta > 1e-3) == (clip > 1.0), (clip, delta)


@pytest.mark.parametrize("kind", ["classification", "tagging"])
def test_head_init_and_dropout_follow_the_style(kind):
  """"official": TF's glorot uniform, U(+-sqrt(6 / (fan_in + fan_out))),
  and for tagging no dropout; "transformers": the model's 0.02 init."""
  hidden, n = 64, 50
  ids = jnp.ones((1, 4), jnp.int32)
  for style in heads.HEAD_STYLES:
    model = heads.TaskModel(_cfg(dropout=0.5, hidden=hidden), kind, n,
                            style)
    params = nn.unbox(model.init(jax.random.key(0), ids, ids, ids)["params"])
    kernel = np.asarray(params["head"]["output"]["kernel"])
    fan_in = kernel.shape[0]
    assert kernel.shape == (fan_in, n)
    bound = np.sqrt(6 / (fan_in + n))
    if style == "official":
      assert np.abs(kernel).max() <= bound
      assert np.abs(kernel).max() > 0.95 * bound
      assert np.std(kernel) == pytest.approx(bound / np.sqrt(3), rel=0.05)
    else:
      assert np.std(kernel) < 0.021
    if kind == "tagging":
      head = model.bind({"params": params},
                        rngs={"dropout": jax.random.key(3)}).head
      x = jax.random.normal(jax.random.key(4), (2, 4, hidden))
      same = np.allclose(head(x, deterministic=False),
                         head(x, deterministic=True))
      assert same == (style == "official")


def test_headline_is_the_final_epoch_and_predict_uses_it(tmp_path):
  evals = [[{"epoch": 1, "step": 10, "accuracy": 0.70, "f1": 0.50},
            {"epoch": 2, "step": 20, "accuracy": 0.80, "f1": 0.60},
            {"epoch": 3, "step": 30, "accuracy": 0.75, "f1": 0.70}],
           [{"epoch": 1, "step": 10, "accuracy": 0.90, "f1": 0.90},
            {"epoch": 2, "step": 20, "accuracy": 0.60, "f1": 0.40},
            {"epoch": 3, "step": 30, "accuracy": 0.65, "f1": 0.45}]]
  trials = [data_lib.trial_results(k, 7 + k, "accuracy", e)
            for k, e in enumerate(evals)]
  assert trials[0]["final"] == {"accuracy": 0.75, "f1": 0.70}
  assert (trials[0]["best_epoch"], trials[0]["best_step"]) == (2, 20)
  assert trials[0]["best_epoch_accuracy"] == 0.80
  assert trials[0]["best"] == {"accuracy": 0.80, "f1": 0.60}
  assert trials[1]["best_epoch"] == 1 and trials[1]["seed"] == 8
  summary = data_lib.summarize_trials(trials)
  assert summary["final"]["accuracy"]["mean"] == pytest.approx(0.70)
  assert summary["final"]["accuracy"]["std"] == pytest.approx(0.05)
  assert summary["best"]["accuracy"]["median"] == pytest.approx(0.85)
  # Predict takes the trial whose final model scored best (0.75 > 0.65),
  # not the one with the best epoch (0.90).
  (tmp_path / "results.json").write_text(json.dumps(
      {"main_metric": "accuracy", "trials": trials}))
  assert ft_train.best_trial(str(tmp_path))["trial"] == 0


def test_classification_learns(tmp_path, hf_dir):
  train = testing.write_csv(tmp_path / "train.csv", ["id", "text", "label"],
                            testing.classification_rows(0, 256))
  dev = testing.write_csv(tmp_path / "dev.csv", ["id", "text", "label"],
                          testing.classification_rows(1, 64))
  config = testing.finetune_run_config(
      "classification", hf_dir, num_train_epochs=6,
      **{"data.train_file": train, "data.eval_file": dev})
  results = ft_train.train_and_evaluate(config, str(tmp_path / "work"))
  trial = results["trials"][0]
  assert trial["final"]["accuracy"] >= 0.95, trial["evals"]
  assert trial["evals"][0]["accuracy"] < 0.95  # It had to learn.
  assert results["summary"]["final"]["accuracy"]["n"] == 1
  assert results["headline"]["metric"] == "accuracy"
  assert results["headline"]["mean"] == trial["final"]["accuracy"]


def _qa_rows(seed, n):
  """The answer is "w5 X" (X in w10..w19); no other word is w5 or w10-19.
  Contexts of 16-48 words span one to four 32-token windows."""
  rng = np.random.default_rng(seed)
  rows = []
  for i in range(n):
    words = testing.random_words(rng, rng.integers(16, 49))
    answer = f"w5 w{rng.integers(10, 20)}"
    at = int(rng.integers(0, len(words) - 1))
    context = " ".join(words[:at] + [answer] + words[at + 2:])
    rows.append({"id": f"q{i}", "question": "w7", "context": context,
                 "answers": {"text": [answer],
                             "answer_start": [context.index(answer)]}})
  return rows


def test_qa_spans_learn_high_exact_match(tmp_path, hf_dir):
  train = _write_jsonl(tmp_path / "train.jsonl", _qa_rows(0, 256))
  dev = _write_jsonl(tmp_path / "dev.jsonl", _qa_rows(1, 48))
  config = testing.finetune_run_config(
      "qa", hf_dir, num_train_epochs=2, max_seq_length=32,
      **{"data.train_file": train, "data.eval_file": dev,
         "data.doc_stride": 8, "data.max_query_length": 4})
  results = ft_train.train_and_evaluate(config, str(tmp_path / "work"))
  best = results["trials"][0]["best"]
  assert results["num_train_steps"] > 2 * 256 // 16  # Several windows.
  assert best["exact_match"] >= 0.9, results["trials"][0]["evals"]
  assert best["f1"] >= best["exact_match"]


def test_regression_and_tagging_run(tmp_path, hf_dir):
  rng = np.random.default_rng(0)
  rows = []
  for _ in range(192):  # Score: how many of the words are w2.
    words = testing.random_words(rng, 6)
    k = int(rng.integers(0, 4))
    words[:k] = ["w2"] * k
    rng.shuffle(words)
    rows.append([" ".join(words), float(k)])
  train = testing.write_csv(tmp_path / "r.csv", ["text", "label"], rows[:160])
  dev = testing.write_csv(tmp_path / "rd.csv", ["text", "label"], rows[160:])
  config = testing.finetune_run_config(
      "regression", hf_dir, num_train_epochs=4,
      **{"data.train_file": train, "data.eval_file": dev})
  best = ft_train.train_and_evaluate(
      config, str(tmp_path / "reg"))["trials"][0]["best"]
  assert best["pearson"] > 0.8 and best["spearman"] > 0.7, best

  def tagged(n):  # w10..w19 are entities ("B-E"), everything else "O".
    out = []
    for _ in range(n):
      words = testing.random_words(rng, 8, 10, 60)
      out.append({"tokens": words, "tags": [
          "B-E" if int(w[1:]) < 20 else "O" for w in words]})
    return out
  config = testing.finetune_run_config(
      "tagging", hf_dir, num_train_epochs=3,
      **{"data.train_file": _write_jsonl(tmp_path / "t.jsonl", tagged(128)),
         "data.eval_file": _write_jsonl(tmp_path / "td.jsonl", tagged(32))})
  best = ft_train.train_and_evaluate(
      config, str(tmp_path / "tag"))["trials"][0]["best"]
  assert best["f1"] > 0.8 and best["accuracy"] > 0.9, best


def test_cli_end_to_end_then_predict(tmp_path, hf_dir):
  rows = testing.classification_rows(2, 48)
  header = ["id", "text", "label"]
  train = testing.write_csv(tmp_path / "train.csv", header, rows)
  dev = testing.write_csv(tmp_path / "dev.csv", header, rows[:16])
  unlabeled = testing.write_csv(tmp_path / "test.csv", ["id", "text"],
                                [[r[0], r[1]] for r in rows[:5]])
  workdir = str(tmp_path / "work")
  env = {**os.environ, "JAX_DISABLE_MOST_OPTIMIZATIONS": "1",
         "PYTHONPATH": testing.ROOT}
  cmd = [sys.executable, "-m", "electra_jax.finetune",
         "--config=configs/finetune.py:task=classification",
         f"--workdir={workdir}", f"--config.init_from={hf_dir}",
         f"--config.data.train_file={train}",
         f"--config.data.eval_file={dev}",
         f"--config.data.predict_file={unlabeled}",
         "--config.num_train_epochs=1", "--config.num_trials=2",
         "--config.max_seq_length=16", "--config.batch_size=16",
         "--config.eval_batch_size=16", "--config.head=transformers"]
  proc = subprocess.run(cmd, cwd=testing.ROOT, env=env, capture_output=True,
                        text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  assert [t["seed"] for t in results["trials"]] == [0, 1]
  assert set(results["summary"]["final"]["accuracy"]) >= {"mean", "median",
                                                           "std"}
  assert os.path.isfile(os.path.join(workdir, "vocab.txt"))
  assert any(n.startswith("events.out.tfevents")
             for n in os.listdir(os.path.join(workdir, "trial_1")))
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["model"]["hidden_size"] == 32  # The checkpoint's.
  with open(os.path.join(workdir, "predictions.jsonl")) as f:
    written = [json.loads(line) for line in f]
  assert [p["id"] for p in written] == [r[0] for r in rows[:5]]
  assert all(p["label"] in ("neg", "pos") for p in written)
  # Predict mode, in process, from the workdir alone (no init_from).
  os.remove(os.path.join(workdir, "predictions.jsonl"))
  config = testing.finetune_config("task=classification")
  config.mode = "predict"  # The head style comes from the workdir.
  config.max_seq_length, config.eval_batch_size = 16, 16
  config.data.predict_file = unlabeled
  path = ft_train.run(config, workdir)
  with open(path) as f:
    again = [json.loads(line) for line in f]
  for a, b in zip(written, again):
    assert a["label"] == b["label"]
    np.testing.assert_allclose(list(a["probabilities"].values()),
                               list(b["probabilities"].values()), rtol=1e-4)
