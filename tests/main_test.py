"""The command-line entry point, run as users run it (in a subprocess)."""

import glob
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_main(*flags, timeout=600):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
  env.pop("XLA_FLAGS", None)  # One CPU device, as on a laptop.
  return subprocess.run(
      [sys.executable, "-m", "electra_jax.main", *flags], cwd=ROOT, env=env,
      capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory):
  return str(tmp_path_factory.mktemp("default_data"))


def small_corpus_flags(cache):
  return [f"--config.input.default_data_cache={cache}",
          "--config.input.default_corpus_bytes=300000",
          "--config.input.default_vocab_size=1000"]


def test_tiny_run_end_to_end(tmp_path, data_cache):
  workdir = tmp_path / "run"
  result = run_main(
      "--config=configs/tiny.py", f"--workdir={workdir}",
      "--config.num_train_steps=4", "--config.log_every_steps=2",
      "--config.eval.every_steps=4", "--config.eval.num_batches=2",
      "--config.input.batch_size=8", *small_corpus_flags(data_cache))
  assert result.returncode == 0, result.stderr[-3000:]
  log = result.stderr
  assert "step 2/4 | loss" in log and "step 4/4 | loss" in log
  assert "eval step 4:" in log and "disc_auc" in log
  config = json.loads((workdir / "config.json").read_text())
  assert config["model"]["vocab_size"] == 1000  # From the tokenizer.
  assert config["input"]["mask_id"] != 103  # Special ids from the tokenizer.
  assert glob.glob(str(workdir / "events.out.tfevents.*"))


def test_misspelt_override_fails_and_names_it(tmp_path):
  result = run_main("--config=configs/tiny.py", f"--workdir={tmp_path}",
                    "--config.model.hiden_size=8")
  assert result.returncode != 0
  assert "hiden_size" in result.stderr


def test_vocab_mismatch_with_user_data_is_a_clear_error(tmp_path, data_cache):
  # Build the default data once, then point a run at it as user data with a
  # model vocabulary that does not match its tokenizer.
  ok = run_main("--config=configs/tiny.py", f"--workdir={tmp_path / 'a'}",
                "--config.num_train_steps=1", "--config.input.batch_size=8",
                "--config.eval.num_batches=1", *small_corpus_flags(data_cache))
  assert ok.returncode == 0, ok.stderr[-3000:]
  data_dir = glob.glob(os.path.join(data_cache, "*", "metadata.json"))[0]
  result = run_main("--config=configs/tiny.py", f"--workdir={tmp_path / 'b'}",
                    f"--config.input.data_dir={os.path.dirname(data_dir)}",
                    "--config.model.vocab_size=1234")
  assert result.returncode != 0
  assert "vocab_size" in result.stderr and "1234" in result.stderr
  assert "Traceback" not in result.stderr[-2000:] or "ValueError" in (
      result.stderr)
