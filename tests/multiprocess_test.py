"""Two processes x 4 CPU devices train exactly like one process x 8, and
their checkpoint resumes in one process (jax.distributed over localhost);
SIGTERM to one of two processes started by launch/local_multiprocess.sh
stops both at the same step, saved, and a rerun resumes there."""

import os
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from electra_jax import pretrained
from tests import testing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _flags(data, workdir, steps):
  return ["--config=configs/tiny.py", f"--workdir={workdir}",
          f"--config.input.data_dir={data}", "--config.input.batch_size=8",
          f"--config.input.max_seq_length={testing.L}",
          f"--config.num_train_steps={steps}", "--config.log_every_steps=1",
          "--config.eval.every_steps=4", "--config.eval.num_batches=1",
          "--config.checkpoint.every_steps=2",
          "--config.checkpoint.every_minutes=0"]


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
def data(tmp_path_factory):
  """A small dataset of known contents (no corpus to build, and an eval
  split whatever text this machine has)."""
  path = tmp_path_factory.mktemp("data")
  testing.write_dataset(path, num_train=64, num_eval=16)
  (path / "tokenizer.model").write_bytes(b"unused")  # Copied, never read.
  return str(path)


def test_two_processes_match_one_and_resume_in_one(tmp_path, data):
  # One process, 8 devices.
  one = _main(_flags(data, tmp_path / "one", 4), _env(8))
  one_log = one.communicate(timeout=600)[1]
  assert one.returncode == 0, one_log[-3000:]

  port = _free_port()
  procs = [_main(_flags(data, tmp_path / "two", 4), _env(
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
    proc = _main(_flags(data, tmp_path / name, 6), _env(8))
    log = proc.communicate(timeout=600)[1]
    assert proc.returncode == 0, log[-3000:]
    assert f"Resumed from {tmp_path / name}/checkpoints/4" in log
    continued[name] = _losses(log)
  assert len(continued["two"]) == 2
  np.testing.assert_allclose(continued["two"], continued["one"], atol=2e-4)


def _launch(workdir, port, flags):
  """launch/local_multiprocess.sh: 2 processes x 4 devices, in `workdir`;
  compiled with most XLA optimizations off (tests/testing.fast_compiles)."""
  return subprocess.Popen(
      ["bash", "launch/local_multiprocess.sh", "--num_processes=2",
       "--devices_per_process=4", f"--port={port}", f"--workdir={workdir}",
       "--", *flags],
      cwd=ROOT, env=_env(4, PYTHON=sys.executable,
                         JAX_DISABLE_MOST_OPTIMIZATIONS=1),
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _read(path):
  return path.read_text() if path.exists() else ""


def test_sigterm_to_one_process_stops_both_at_one_saved_step(tmp_path, data):
  workdir, logs = tmp_path / "run", tmp_path / "run" / "logs"
  # Far more steps than the test waits for; no periodic saves or evals, so
  # the only checkpoint is the one the signal asks for.
  flags = [f for f in _flags(data, workdir, 0)[2:]
           if not f.startswith(("--config.num_train_steps",
                                "--config.eval.every_steps",
                                "--config.checkpoint.every_steps"))]
  flags += ["--config.eval.every_steps=0", "--config.checkpoint.every_steps=0"]
  launcher = _launch(workdir, _free_port(),
                     [*flags, "--config.num_train_steps=10000"])
  deadline = time.monotonic() + 600
  # Both are in the step loop once process 0 (the only one that prints
  # progress) has finished a step: every step is a collective of both.
  while not _losses(_read(logs / "process_0.log")):
    assert launcher.poll() is None, launcher.communicate()[0][-3000:]
    assert time.monotonic() < deadline, "no training step logged"
    time.sleep(0.2)
  os.kill(int((logs / "process_1.pid").read_text()), signal.SIGTERM)
  out = launcher.communicate(timeout=300)[0]
  assert launcher.returncode == 0, out[-3000:]

  stopped = []
  for i in range(2):
    log = _read(logs / f"process_{i}.log")
    stopped += re.findall(r"Stopped at step (\d+) after saving", log)
  assert len(stopped) == 2 and stopped[0] == stopped[1], stopped
  step = int(stopped[0])
  assert 0 < step < 10_000
  assert sorted(os.listdir(workdir / "checkpoints")) == [str(step)]
  logs.rename(workdir / "logs_preempted")  # Kept for a failure's reader.

  # The same command, one step further: both processes resume there.
  launcher = _launch(workdir, _free_port(),
                     [*flags, f"--config.num_train_steps={step + 1}"])
  out = launcher.communicate(timeout=600)[0]
  assert launcher.returncode == 0, out[-3000:]
  for i in range(2):
    assert (f"Resumed from {workdir}/checkpoints/{step}"
            in _read(logs / f"process_{i}.log"))
  assert re.findall(r"step (\d+)/", _read(logs / "process_0.log")) == [
      str(step + 1)]
  assert str(step + 1) in os.listdir(workdir / "checkpoints")
