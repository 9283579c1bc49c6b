"""experiments/electra_vs_mlm.py end to end at toy size, run as users run it."""

import csv
import json
import os
import subprocess
import sys

import pytest

from electra_jax import train as train_lib
from electra_jax.data import default_corpus
from tests import testing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "experiments", "electra_vs_mlm.py")
STAGES = ("electra", "mlm", "ft_electra", "ft_mlm", "ft_scratch", "curves")
POSITIVE = ("good", "great", "happy", "lovely", "wonderful", "bright")
NEGATIVE = ("bad", "awful", "sad", "terrible", "dreadful", "gloomy")


def run_script(*flags, timeout=600):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
  env.pop("XLA_FLAGS", None)  # One CPU device: faster on small machines.
  return subprocess.run([sys.executable, SCRIPT, *flags], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout,
                        check=False)


def write_labeled(path, rows, offset):
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["text", "label"])
    for i in range(rows):
      words = POSITIVE if i % 2 else NEGATIVE
      text = " ".join(words[(i + offset + j) % len(words)] for j in range(4))
      writer.writerow([f"it was {text}", "pos" if i % 2 else "neg"])


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("evm_inputs")
  data_dir = default_corpus.build_default_dataset(
      str(tmp / "cache"), max_seq_length=32, vocab_size=1000,
      max_bytes=300_000)
  write_labeled(tmp / "train.csv", 40, 0)
  write_labeled(tmp / "dev.csv", 40, 3)
  return data_dir, str(tmp / "train.csv"), str(tmp / "dev.csv")


def tiny_flags(root, inputs):
  data_dir, train, dev = inputs
  return [f"--root={root}", "--config=configs/tiny.py",
          f"--data_dir={data_dir}", f"--train_file={train}",
          f"--eval_file={dev}", "--electra_steps=4", "--seeds=2",
          "--ft_epochs=1", "--ft_max_seq_length=32",
          "--override=--config.input.batch_size=8",
          "--override=--config.eval.num_batches=1",
          "--override=--config.log_every_steps=2",
          "--ft_override=--config.optimizer.layerwise_lr_decay=0"]


def expected_mlm_steps(data_dir, electra_steps):
  """round(steps * F_electra / F_mlm), from the preset and the data."""
  with open(os.path.join(data_dir, "metadata.json")) as f:
    metadata = json.load(f)
  config = testing.load_config("tiny")
  config.model.vocab_size = metadata["vocab_size"]
  config.input.max_seq_length = metadata["max_seq_length"]
  vocab = config.model.vocab_size
  f_electra = train_lib.flops_per_sequence(config, vocab)["total"]
  config.objective.electra_objective = False
  f_mlm = train_lib.flops_per_sequence(config, vocab)["total"]
  assert f_electra != f_mlm
  return round(electra_steps * f_electra / f_mlm)


def test_end_to_end_and_resume(tmp_path, inputs):
  root = tmp_path / "evm"
  first = run_script(*tiny_flags(root, inputs))
  assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]

  with open(root / "results.json") as f:
    results = json.load(f)
  assert list(results["models"]) == ["electra", "mlm", "scratch"]
  for model in results["models"].values():
    assert [t["seed"] for t in model["trials"]] == [0, 1]
    for t in model["trials"]:
      assert 0.0 <= t["final"] <= t["best"] <= 1.0
  steps_mlm = expected_mlm_steps(inputs[0], 4)
  mlm = results["models"]["mlm"]
  assert mlm["pretraining_steps"] == steps_mlm
  assert (root / "mlm" / "checkpoints" / str(steps_mlm)).is_dir()
  assert (root / "electra" / "checkpoints" / "4").is_dir()
  # Equal compute, up to the rounding of one step.
  electra = results["models"]["electra"]
  assert abs(mlm["pretraining_flops"] - electra["pretraining_flops"]) <= (
      8 * results["flops_per_sequence"]["mlm"]["total"])
  assert results["models"]["scratch"]["pretraining_flops"] == 0
  # All three fine-tuned the same architecture and vocabulary.
  tasks = [json.loads((root / f"ft_{m}" / "task.json").read_text())["model"]
           for m in ("electra", "mlm", "scratch")]
  assert tasks[0] == tasks[1] == tasks[2]
  for name in ("electra_vs_mlm.png", "pretraining_curves.png", "results.md"):
    assert (root / name).stat().st_size > 1000, name
  report = (root / "results.md").read_text()
  assert "| MLM-only | %d |" % steps_mlm in report
  assert "electra_jax.finetune" in report
  ft_lines = [l for l in report.splitlines() if "electra_jax.finetune" in l]
  assert len(ft_lines) == 3 and all(
      "--config.optimizer.layerwise_lr_decay=0" in l for l in ft_lines)
  assert all(json.loads((root / f"ft_{m}" / "config.json").read_text())
             ["optimizer"]["layerwise_lr_decay"] == 0
             for m in ("electra", "mlm", "scratch"))

  results_files = [root / f"ft_{m}" / "results.json"
                   for m in ("electra", "mlm", "scratch")]
  mtimes = [p.stat().st_mtime_ns for p in results_files]
  again = run_script(*tiny_flags(root, inputs))
  assert again.returncode == 0, again.stderr[-3000:]
  for stage in STAGES:
    assert f"{stage}: skipped (output complete)" in again.stdout, stage
  assert [p.stat().st_mtime_ns for p in results_files] == mtimes
  assert "skipped" in (root / "logs" / "electra.log").read_text()

  # --stages runs only the named stages, and no report unless named.
  report_mtime = (root / "results.md").stat().st_mtime_ns
  subset = run_script(*tiny_flags(root, inputs), "--stages=curves")
  assert subset.returncode == 0, subset.stderr[-3000:]
  assert "electra: not selected (--stages)" in subset.stdout
  assert "curves: skipped (output complete)" in subset.stdout
  assert (root / "results.md").stat().st_mtime_ns == report_mtime


@pytest.mark.parametrize("problem", ["train_file", "metadata"])
def test_user_mistakes_are_one_line(tmp_path, inputs, problem):
  flags = tiny_flags(tmp_path / "evm", inputs)
  if problem == "train_file":
    flags.append(f"--train_file={tmp_path / 'missing.csv'}")
    expected = f"--train_file={tmp_path / 'missing.csv'}: no such file."
  else:
    flags.append(f"--data_dir={tmp_path}")
    expected = f"--data_dir={tmp_path} has no metadata.json"
  result = run_script(*flags, timeout=120)
  assert result.returncode == 1
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1, result.stderr
  assert lines[0].startswith("electra_jax: error: ")
  assert expected in lines[0]
  assert not (tmp_path / "evm").exists()

