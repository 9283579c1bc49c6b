"""Two processes x 4 CPU devices train exactly like one process x 8, and
their checkpoint resumes in one process (jax.distributed over localhost)."""

import os
import re
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from electra_jax import pretrained

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _flags(cache, workdir, steps):
  return ["--config=configs/tiny.py", f"--workdir={workdir}",
          "--config.input.batch_size=8", "--config.input.max_seq_length=32",
          f"--config.num_train_steps={steps}", "--config.log_every_steps=1",
          "--config.eval.every_steps=4", "--config.eval.num_batches=1",
          "--config.checkpoint.every_steps=2",
          "--config.checkpoint.every_minutes=0",
          f"--config.input.default_data_cache={cache}",
          "--config.input.default_corpus_bytes=300000",
          "--config.input.default_vocab_size=1000"]


def _env(devices, **extra):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  env.update({k: str(v) for k, v in extra.items()})
  return env


def _main(args, env):
  return subprocess.Popen([sys.executable, "-m", "electra_jax.main", *args],
                          cwd=ROOT, env=env, stderr=subprocess.PIPE,
                          text=True)


def _losses(log):
  return [float(x) for x in re.findall(r"step \d+/\d+ \| loss ([\d.]+)", log)]


@pytest.fixture(scope="module")
def data_cache(tmp_path_factory):
  return str(tmp_path_factory.mktemp("data"))


def test_two_processes_match_one_and_resume_in_one(tmp_path, data_cache):
  # One process, 8 devices (also builds the data cache first).
  one = _main(_flags(data_cache, tmp_path / "one", 4), _env(8))
  one_log = one.communicate(timeout=600)[1]
  assert one.returncode == 0, one_log[-3000:]

  port = _free_port()
  procs = [_main(_flags(data_cache, tmp_path / "two", 4), _env(
      4, JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES=2,
      JAX_PROCESS_ID=i)) for i in range(2)]
  logs = [p.communicate(timeout=600)[1] for p in procs]
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-3000:]
  assert "JAX process 1/2, 4 local / 8 global devices" in logs[1]
  # Only process 0 writes progress lines and TensorBoard events.
  assert _losses(logs[1]) == []
  np.testing.assert_allclose(_losses(logs[0]), _losses(one_log), atol=2e-4)
  assert len(_losses(one_log)) == 4 and "eval step 4" in logs[0]

  _, two_params, step = pretrained.restore_params(str(tmp_path / "two"))
  _, one_params, _ = pretrained.restore_params(str(tmp_path / "one"))
  assert step == 4
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5),
               jax.device_get(two_params), jax.device_get(one_params))

  # The 2-process checkpoint resumes in 1 process at the right position:
  # continued to step 6, it matches the 1-process run continued likewise
  # (a wrong data position would change the losses of steps 5-6).
  continued = {}
  for name in ("two", "one"):
    proc = _main(_flags(data_cache, tmp_path / name, 6), _env(8))
    log = proc.communicate(timeout=600)[1]
    assert proc.returncode == 0, log[-3000:]
    assert f"Resumed from {tmp_path / name}/checkpoints/4" in log
    continued[name] = _losses(log)
  assert len(continued["two"]) == 2
  np.testing.assert_allclose(continued["two"], continued["one"], atol=2e-4)
