"""benchmarks/gradient_shares.py on a real (tiny) run's checkpoint."""

import functools
import importlib.util
import math
import os
import subprocess
import sys

import pytest

from electra_jax import errors
from electra_jax import loop
from tests import testing

SCRIPT = os.path.join(testing.ROOT, "benchmarks", "gradient_shares.py")


@functools.cache
def load_script():
  spec = importlib.util.spec_from_file_location("gradient_shares", SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_each_term_reaches_only_its_own_weights(tmp_path):
  shares = load_script().shares
  config = testing.tiny_config(str(tmp_path / "data"), steps=2)
  loop.train_and_evaluate(config, str(tmp_path / "run"))
  step, table, clips = shares(str(tmp_path / "run"), None, 2)
  assert step == 2 and len(clips) == 2
  assert all(0 < c <= 1 for c in clips)
  assert set(table) == {"embeddings.word", "embeddings.other",
                        "generator.encoder", "generator.head",
                        "discriminator"}
  assert table["discriminator"]["mlm_share"] == 0
  assert table["discriminator"]["mlm_adam_step"] == 0
  for group in ("generator.encoder", "generator.head"):
    assert table[group]["mlm_share"] == 1 and table[group]["rtd_norm"] == 0
    assert 0 < table[group]["mlm_adam_step"] < math.inf
  # The shared embeddings take both terms.
  assert 0 < table["embeddings.word"]["mlm_share"] < 1
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  cli = subprocess.run(
      [sys.executable, SCRIPT, f"--workdir={tmp_path / 'run'}", "--batches=1"],
      cwd=testing.ROOT, env=env, capture_output=True, text=True, timeout=600,
      check=False)
  assert cli.returncode == 0, cli.stderr[-3000:]
  assert "at step 2: clip factor" in cli.stdout
  assert cli.stdout.count("generator.") == 2, cli.stdout


def test_a_directory_that_is_not_a_run_is_a_clear_error(tmp_path):
  with pytest.raises(errors.UserError, match="the workdir of"):
    load_script().shares(str(tmp_path), None, 1)
  with pytest.raises(errors.UserError, match="--batches must be at least 1"):
    load_script().shares(str(tmp_path), None, 0)
