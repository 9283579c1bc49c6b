"""The benchmark harness, the FLOP count and the PyTorch baseline run."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from electra_jax import benchmark
from electra_jax import model as model_lib
from electra_jax import runtime
from electra_jax import train as train_lib
from tests import testing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny():
  config = testing.load_config("tiny")
  config.model.vocab_size = 2000
  config.input.batch_size = 8
  config.input.max_seq_length = 32
  return config


def test_flops_match_a_hand_count():
  config = _tiny()
  got = train_lib.flops_per_sequence(config, 2000)
  # Discriminator: E=32 -> H=64 projection, 2 layers of 4*64*64 + 2*64*128
  # dense params, attention 2*2*T*T*H per layer, head 64*64+64, all x3.
  t, h = 32, 64
  dense = 2 * t * (2 * (4 * h * h + 2 * h * 128) + 32 * h)
  attn = 2 * 2 * 2 * t * t * h
  head = 2 * t * (h * h + h)
  assert got["discriminator"] == 3 * (dense + attn + head)
  # Generator: width 32 (= E, no projection), 4*32 FFN, head at the
  # int((0.15 + 0.005) * 32) = 4 masked positions only.
  g = 32
  dense = 2 * t * 2 * (4 * g * g + 2 * g * 4 * g)
  attn = 2 * 2 * 2 * t * t * g
  head = 2 * 4 * (g * 32 + 32 * 2000)
  assert got["generator"] == 3 * (dense + attn + head)
  assert got["total"] == got["generator"] + got["discriminator"]


def test_benchmark_reports_consistent_figures():
  result = benchmark.run(_tiny(), steps=2, warmup=1)
  assert result["tokens_per_second"] == pytest.approx(
      8 * 32 / result["step_seconds_median"])
  assert 0 < result["mfu"] < 1.5
  assert result["measured_matmul_peak_flops"] > 1e9
  assert result["step_seconds_min"] <= result["step_seconds_median"] <= (
      result["step_seconds_max"])
  assert result["generator_flops_per_step"] + result[
      "discriminator_flops_per_step"] == result["train_flops_per_step"]
  json.dumps(result)  # The CLI prints it as one JSON line.


def test_peak_includes_the_products_between_the_timed_steps(monkeypatch):
  # A probe whose first four products (two after each timed step) are the
  # fastest: the reported peak must be theirs, not only the final burst's.
  rates = []

  def fake_probe(dtype, n=None):
    del dtype, n

    def probe():
      rates.append(5e12 if len(rates) < 4 else 1e9)
      return rates[-1]

    return probe

  monkeypatch.setattr(benchmark, "matmul_probe", fake_probe)
  result = benchmark.run(_tiny(), steps=2, warmup=1)
  assert result["measured_matmul_peak_flops"] == 5e12
  assert len(rates) >= 4 + 3  # Then at least 3 more after the steps.
  assert result["mfu"] == pytest.approx(
      result["achieved_flops_per_second_per_device"] / 5e12)


def test_no_timed_steps_is_refused():
  with pytest.raises(ValueError, match="steps >= 1"):
    benchmark.run(_tiny(), steps=0, warmup=1)


@pytest.mark.parametrize("script", [
    ["-m", "electra_jax.benchmark"], ["benchmarks/torch_baseline.py"],
    ["benchmarks/profile_step.py"]])
def test_command_lines_refuse_zero_steps(script):
  out = subprocess.run(
      [sys.executable, *script, "--config=configs/tiny.py", "--steps=0"],
      cwd=ROOT, capture_output=True, text=True, timeout=120,
      env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert out.returncode != 0
  assert "steps" in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_cudnn_attention_refuses_attention_dropout():
  config = _tiny()
  config.model.attention_impl = "cudnn"
  module = model_lib.ElectraDiscriminator(
      train_lib.discriminator_config(config, config.model.vocab_size))
  ids = jnp.ones((1, 8), jnp.int32)
  with pytest.raises(ValueError, match="attention_probs_dropout_prob=0.0"):
    module.init({"params": jax.random.key(0), "dropout": jax.random.key(1)},
                ids, deterministic=False)


def test_torch_baseline_runs():
  pytest.importorskip("torch")
  pytest.importorskip("transformers")
  out = subprocess.run(
      [sys.executable, "benchmarks/torch_baseline.py",
       "--config=configs/tiny.py", "--batch_size=4", "--seq_len=32",
       "--steps=1", "--warmup=0"], cwd=ROOT, capture_output=True,
      text=True, timeout=300, check=True,
      env=dict(os.environ, JAX_PLATFORMS="cpu"))
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result["tokens_per_second"] > 0 and result["loss"] > 0


def test_profile_step_names_the_ops_by_model_code(tmp_path):
  out = subprocess.run(
      [sys.executable, "benchmarks/profile_step.py", "--config=configs/tiny.py",
       "--batch_size=8", "--seq_len=32", "--steps=2", "--top=200",
       f"--out={tmp_path}"],
      cwd=ROOT, capture_output=True, text=True, timeout=600, check=True)
  lines = out.stdout.splitlines()
  total = float(lines[0].split("op time ")[1].split(" ms")[0])
  assert total > 0
  by_source = lines[lines.index(next(l for l in lines if "source (layers" in l))
                    + 1:]
  times = [float(l.split()[0]) for l in by_source if l.strip()]
  # Every op is attributed once: the per-source sums add up to the total.
  assert abs(sum(times) - total) < 0.01 * total + 0.1
  text = "\n".join(by_source)
  assert "generator_logits" in text and "discriminator_logits" in text
  assert "bwd " in text and "layer_*" in text
  assert (tmp_path / "train_step.hlo.txt").exists()


def test_released_host_memory_leaves_compiled_steps_valid():
  compiled = jax.jit(lambda x: x * 2 + 1).lower(jnp.ones(3)).compile()
  jitted = jax.jit(lambda x: x - 1)
  assert float(jitted(jnp.ones(()))) == 0.0
  runtime.release_host_memory()
  assert compiled(jnp.ones(3)).tolist() == [3.0, 3.0, 3.0]
  assert float(jitted(jnp.ones(()))) == 0.0  # Traced and compiled again.
