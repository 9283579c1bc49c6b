"""End to end: a tiny pretrained (transformers) model fine-tunes on small
learnable synthetic tasks (classification, QA spans, regression, tagging),
and the CLI trains from a local CSV in a subprocess, then predicts."""

import json
import os
import subprocess
import sys

import numpy as np

from electra_jax.finetune import train as ft_train
from tests import testing
from tests.testing import fast_compiles  # pylint: disable=W0611
from tests.testing import hf_dir  # pylint: disable=unused-import


def _write_jsonl(path, rows):
  with open(path, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
  return str(path)


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
  assert trial["best"]["accuracy"] >= 0.95, trial["evals"]
  assert trial["evals"][0]["accuracy"] < 0.95  # It had to learn.
  assert results["summary"]["best"]["accuracy"]["n"] == 1


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
  assert set(results["summary"]["best"]["accuracy"]) >= {"mean", "median",
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
