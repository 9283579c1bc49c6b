"""experiments/linear_probe.py: the probe itself, and the script end to end."""

import functools
import importlib.util
import os
import subprocess
import sys

import numpy as np

from electra_jax.data import default_corpus
from tests import electra_vs_mlm_test

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "experiments", "linear_probe.py")


@functools.lru_cache(maxsize=None)  # Its absl flags can be defined once.
def load_script():
  spec = importlib.util.spec_from_file_location("linear_probe", SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def run(*args, timeout=600):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  return subprocess.run([sys.executable, *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout,
                        check=False)


def test_probe_finds_a_linear_signal_and_not_noise():
  probe = load_script().probe
  rng = np.random.default_rng(0)
  y = rng.integers(0, 2, 600)
  x = rng.normal(size=(600, 16)).astype(np.float32)
  signal = x.copy()
  signal[:, 3] += 3.0 * (2 * y - 1)  # One informative dimension.
  assert probe(signal[:400], y[:400], signal[400:], y[400:], 2, 1e-3) > 0.95
  assert probe(x[:400], y[:400], x[400:], y[400:], 2, 1e-3) < 0.65


def test_script_probes_a_run_and_its_random_init(tmp_path):
  data_dir = default_corpus.build_default_dataset(
      str(tmp_path / "cache"), max_seq_length=32, vocab_size=1000,
      max_bytes=300_000)
  workdir = tmp_path / "run"
  pretrain = run("-m", "electra_jax.main", "--config=configs/tiny.py",
                 f"--workdir={workdir}", f"--config.input.data_dir={data_dir}",
                 "--config.model.vocab_size=1000",
                 "--config.input.max_seq_length=32",
                 "--config.input.batch_size=8", "--config.num_train_steps=2",
                 "--config.eval.num_batches=1")
  assert pretrain.returncode == 0, pretrain.stderr[-3000:]
  for name, offset in (("train.csv", 0), ("dev.csv", 3)):
    electra_vs_mlm_test.write_labeled(tmp_path / name, 60, offset)
  output = tmp_path / "probe.md"
  probe = run(SCRIPT, f"--workdir={workdir}",
              f"--train_file={tmp_path / 'train.csv'}",
              f"--eval_file={tmp_path / 'dev.csv'}", "--max_seq_length=16",
              f"--output={output}")
  assert probe.returncode == 0, probe.stderr[-3000:]
  text = output.read_text()
  table, spreads = text.split("Spread of each feature")
  rows = [line for line in table.splitlines() if line.startswith("| run")
          or line.startswith("| random init")]
  assert len(rows) == 2, table
  for row in rows:
    accuracies = [float(c) for c in row.strip("|").split("|")[1:]]
    assert len(accuracies) == 3 and all(0 <= a <= 1 for a in accuracies)
    # The words decide the label here: pooled features of even a random
    # encoder hold it.
    assert max(accuracies) > 0.8, table
  assert "Dev majority class: 0.5000" in table
  spread_rows = [line for line in spreads.splitlines()
                 if line.startswith("| run") or line.startswith("| random")]
  assert len(spread_rows) == 2, spreads
  for row in spread_rows:
    values = [float(c) for c in row.strip("|").split("|")[1:]]
    assert len(values) == 3 and all(v > 0 for v in values), spreads


def test_spread_is_zero_for_a_constant_feature_and_scale_free():
  spread = load_script().spread
  rng = np.random.default_rng(0)
  row = rng.normal(size=8)
  assert spread(np.tile(row, (50, 1))) < 1e-6
  x = rng.normal(size=(500, 8))
  assert 0.9 < spread(x) < 1.1
  assert abs(spread(x) - spread(100 * x)) < 1e-9
  assert spread(x + 10) < 0.2  # A shared offset dominates the vector.


def test_missing_flags_are_one_line():
  result = run(SCRIPT, "--workdir=nowhere")
  assert result.returncode == 1
  assert "Traceback" not in result.stderr
  assert "--train_file" in result.stderr.strip().splitlines()[-1]


def test_a_dev_label_never_trained_on_is_one_line(tmp_path):
  electra_vs_mlm_test.write_labeled(tmp_path / "train.csv", 10, 0)
  with open(tmp_path / "dev.csv", "w") as f:
    f.write("text,label\nit was fine,meh\n")
  result = run(SCRIPT, "--workdir=nowhere",
               f"--train_file={tmp_path / 'train.csv'}",
               f"--eval_file={tmp_path / 'dev.csv'}")
  assert result.returncode == 1
  assert "Traceback" not in result.stderr
  assert "['meh']" in result.stderr.strip().splitlines()[-1]
