"""The launch/ scripts: syntax, shellcheck, --help and exact --dry-run output.

The scripts run in subprocesses with fake `gcloud`, `srun`, `sbatch` and
`python` first on PATH; the fakes record any call, and a dry run must make
none. Commands are parsed back with `shlex`, so quoting is checked too.
"""

import os
import shlex
import shutil
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TPU_VM = "launch/tpu_vm.sh"
SLURM = "launch/gpu_slurm.sbatch"
LOCAL = "launch/local_multiprocess.sh"
SCRIPTS = [TPU_VM, SLURM, LOCAL]
TRICKY = "--config.init_from=gs://b/it's a dir"  # Quotes and spaces.


@pytest.fixture
def fake_bin(tmp_path):
  """A PATH directory of fakes that log their calls to `calls.txt`."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  calls = tmp_path / "calls.txt"
  for name in ["gcloud", "srun", "sbatch", "python", "python3"]:
    path = bin_dir / name
    path.write_text(f'#!/bin/bash\necho "{name} $*" >> "{calls}"\nexit 1\n')
    path.chmod(0o755)
  return bin_dir, calls


def run_script(script, *args, fake_bin, env=None):
  bin_dir, _ = fake_bin
  full_env = {k: v for k, v in os.environ.items()
              if not k.startswith(("SLURM_", "JAX_", "TPU_"))
              and k not in ("CONFIG", "WORKDIR", "OVERRIDES", "PER_NODE",
                            "DRY_RUN", "PYTHON", "ZONE", "PROJECT")}
  full_env["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
  full_env.update(env or {})
  return subprocess.run(
      ["bash", script, *args], cwd=ROOT, env=full_env, capture_output=True,
      text=True, timeout=60, check=False)


def commands(stdout):
  """The `+ ` lines of a dry run, each split into its argv."""
  return [shlex.split(line[2:]) for line in stdout.splitlines()
          if line.startswith("+ ")]


def assert_no_calls(fake_bin):
  _, calls = fake_bin
  assert not calls.exists(), calls.read_text()


@pytest.mark.parametrize("script", SCRIPTS)
def test_bash_syntax(script):
  subprocess.run(["bash", "-n", script], cwd=ROOT, check=True)


@pytest.mark.parametrize("script", SCRIPTS)
def test_shellcheck(script):
  if shutil.which("shellcheck") is None:
    pytest.skip("shellcheck is not installed")
  result = subprocess.run(["shellcheck", "-x", script], cwd=ROOT,
                          capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(script, fake_bin):
  result = run_script(script, "--help", fake_bin=fake_bin)
  assert result.returncode == 0, result.stderr
  assert result.stdout.startswith("Usage:")
  assert "--dry-run" in result.stdout and "--workdir" in result.stdout
  assert_no_calls(fake_bin)


@pytest.mark.parametrize("script", SCRIPTS)
def test_unknown_argument_fails(script, fake_bin):
  result = run_script(script, "--dry-run", "--workdir=w", "--bogus",
                      fake_bin=fake_bin)
  assert result.returncode == 2
  assert "--bogus" in result.stderr
  assert_no_calls(fake_bin)


def _jax_pin():
  with open(os.path.join(ROOT, "requirements.txt")) as f:
    return next(line.split("==")[1].strip() for line in f
                if line.startswith("jax=="))


def test_tpu_vm_all_dry_run(fake_bin):
  if subprocess.run(["git", "-C", ROOT, "rev-parse"], capture_output=True,
                    check=False).returncode:
    pytest.skip("setup ships a git checkout")
  result = run_script(
      TPU_VM, "--name=t1", "--zone=us-central2-b", "--type=v4-32",
      "--project=proj", "--config=configs/base.py", "--workdir=gs://b/run",
      "all", "--dry-run", "--", "--config.num_train_steps=10", TRICKY,
      fake_bin=fake_bin)
  assert result.returncode == 0, result.stderr
  assert_no_calls(fake_bin)
  create, tar, scp, setup, start, logs = commands(result.stdout)
  gcloud = ["gcloud", "compute", "tpus", "tpu-vm"]
  where = ["--zone=us-central2-b", "--project=proj"]
  assert create == gcloud + [
      "create", "t1", *where, "--accelerator-type=v4-32",
      "--version=tpu-ubuntu2204-base"]
  assert tar[:2] == ["tar", "-czf"]
  assert scp == gcloud + ["scp", tar[2], "t1:electra_jax.tar.gz", *where,
                          "--worker=all"]
  for ssh in (setup, start):
    assert ssh[:-2] == gcloud + ["ssh", "t1", *where, "--worker=all"]
    assert ssh[-2] == "--command"
  assert (".venv/bin/pip install -q -r requirements.txt "
          f"'jax[tpu]=={_jax_pin()}'") in setup[-1]
  remote = shlex.split(start[-1])
  python_at = remote.index("python")
  assert remote[python_at:remote.index(">", python_at)] == [
      "python", "-m", "electra_jax.main", "--config=configs/base.py",
      "--workdir=gs://b/run", "--config.num_train_steps=10", TRICKY]
  assert remote[remote.index(">", python_at) + 1] == "logs/train.log"
  assert logs == gcloud + [
      "ssh", "t1", *where, "--worker=0", "--command",
      "tail -n 200 -F electra_jax/logs/train.log"]


def test_tpu_vm_single_commands(fake_bin):
  gcloud = ["gcloud", "compute", "tpus", "tpu-vm"]
  result = run_script(TPU_VM, "create", "--dry-run", "--name", "v5",
                      "--type", "v5litepod-16", "--zone", "us-west4-a",
                      fake_bin=fake_bin)
  assert result.returncode == 0, result.stderr
  assert commands(result.stdout) == [gcloud + [
      "create", "v5", "--zone=us-west4-a", "--accelerator-type=v5litepod-16",
      "--version=v2-alpha-tpuv5-lite"]]
  result = run_script(TPU_VM, "delete", "--dry-run", "--name=t1",
                      "--zone=z", fake_bin=fake_bin)
  assert commands(result.stdout) == [
      gcloud + ["delete", "t1", "--zone=z", "--quiet"]]
  result = run_script(TPU_VM, "run", "--dry-run", fake_bin=fake_bin)
  assert result.returncode == 2 and "--workdir" in result.stderr
  assert_no_calls(fake_bin)


def _srun(stdout):
  [srun] = commands(stdout)
  env_at = srun.index("env")
  python_at = srun.index("-m") - 1
  return srun[:env_at], srun[env_at + 1:python_at], srun[python_at:]


def test_slurm_dry_run_outside_slurm(fake_bin):
  result = run_script(SLURM, "--dry-run", "--config=configs/small.py",
                      "--workdir=/shared/run", "--", "--config.seed=3",
                      TRICKY, fake_bin=fake_bin)
  assert result.returncode == 0, result.stderr
  flags, env, python = _srun(result.stdout)
  assert flags == ["srun", "--kill-on-bad-exit=1", "--label",
                   "--cpus-per-task=8"]
  assert env == ["JAX_COORDINATOR_ADDRESS=node1:61440"]
  assert python == ["python", "-m", "electra_jax.main",
                    "--config=configs/small.py", "--workdir=/shared/run",
                    "--config.seed=3", TRICKY]
  result = run_script(SLURM, "--workdir=/shared/run", fake_bin=fake_bin)
  assert result.returncode == 2 and "sbatch" in result.stderr
  assert_no_calls(fake_bin)


def test_slurm_in_a_job_from_environment(fake_bin):
  bin_dir, _ = fake_bin
  scontrol = bin_dir / "scontrol"
  scontrol.write_text(
      '#!/bin/bash\n[ "$*" = "show hostnames gpu[007-008]" ] || exit 1\n'
      "printf 'gpu007\\ngpu008\\n'\n")
  scontrol.chmod(0o755)
  job = {"SLURM_JOB_ID": "5000", "SLURM_JOB_NODELIST": "gpu[007-008]",
         "SLURM_JOB_NUM_NODES": "2", "SLURM_NTASKS_PER_NODE": "8",
         "SLURM_GPUS_ON_NODE": "8", "SLURM_CPUS_ON_NODE": "64",
         "SLURM_CPUS_PER_TASK": "8"}
  result = run_script(
      SLURM, "--dry-run", fake_bin=fake_bin, env=dict(
          job, CONFIG="configs/large.py", WORKDIR="/shared/large",
          OVERRIDES="--config.seed=1 --config.num_train_steps=5",
          PYTHON="/opt/venv/bin/python"))
  assert result.returncode == 0, result.stderr
  flags, env, python = _srun(result.stdout)
  assert flags == ["srun", "--kill-on-bad-exit=1", "--label",
                   "--cpus-per-task=8"]
  assert env == ["JAX_COORDINATOR_ADDRESS=gpu007:62344"]  # 5000 % 4096 + 61440
  assert python == ["/opt/venv/bin/python", "-m", "electra_jax.main",
                    "--config=configs/large.py", "--workdir=/shared/large",
                    "--config.seed=1", "--config.num_train_steps=5"]
  # One process per node (by --per_node, or by --ntasks-per-node=1) sees all
  # of the node's GPUs.
  for args, tasks in [(["--per_node"], "8"), ([], "1")]:
    result = run_script(
        SLURM, "--dry-run", "--workdir=/w", *args, fake_bin=fake_bin,
        env=dict(job, SLURM_NTASKS_PER_NODE=tasks, SLURM_GPUS_ON_NODE="4"))
    assert result.returncode == 0, result.stderr
    flags, env, _ = _srun(result.stdout)
    assert flags == ["srun", "--kill-on-bad-exit=1", "--label",
                     "--ntasks-per-node=1", "--ntasks=2",
                     "--cpus-per-task=64"]
    assert env == ["JAX_COORDINATOR_ADDRESS=gpu007:62344",
                   "JAX_LOCAL_DEVICE_IDS=0,1,2,3"]
  assert_no_calls(fake_bin)


@pytest.mark.parametrize("nodelist", ["gpu[007-008,010],cpu1", "a1,b2",
                                      "solo", "n[3,5]"])
def test_slurm_coordinator_without_scontrol_matches_jax(
    nodelist, fake_bin, monkeypatch):
  if shutil.which("scontrol"):
    pytest.skip("this machine has scontrol; the fallback is not used")
  from jax._src.clusters import slurm_cluster  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("SLURM_JOB_ID", "123456")
  monkeypatch.setenv("SLURM_STEP_NODELIST", nodelist)
  expected = slurm_cluster.SlurmCluster.get_coordinator_address(None, None)
  result = run_script(SLURM, "--dry-run", "--workdir=/w", fake_bin=fake_bin,
                      env={"SLURM_JOB_ID": "123456",
                           "SLURM_JOB_NODELIST": nodelist})
  assert result.returncode == 0, result.stderr
  _, env, _ = _srun(result.stdout)
  assert env == [f"JAX_COORDINATOR_ADDRESS={expected}"]


def test_local_multiprocess_dry_run(tmp_path, fake_bin):
  workdir = tmp_path / "run"
  result = run_script(
      LOCAL, "--num_processes", "3", "--devices_per_process=2", "--port=4321",
      "--config=configs/tiny.py", f"--workdir={workdir}", "--dry-run", "--",
      "--config.num_train_steps=2", TRICKY, fake_bin=fake_bin)
  assert result.returncode == 0, result.stderr
  mkdir, *starts = commands(result.stdout)
  assert mkdir == ["mkdir", "-p", f"{workdir}/logs"]
  assert len(starts) == 3
  for i, argv in enumerate(starts):
    assert argv == [
        "env", "JAX_COORDINATOR_ADDRESS=localhost:4321",
        "JAX_NUM_PROCESSES=3", f"JAX_PROCESS_ID={i}", "JAX_PLATFORMS=cpu",
        "XLA_FLAGS=--xla_force_host_platform_device_count=2",
        "python", "-m", "electra_jax.main", "--config=configs/tiny.py",
        f"--workdir={workdir}", "--config.num_train_steps=2", TRICKY,
        ">", f"{workdir}/logs/process_{i}.log", "2>&1", "&"]
  assert not workdir.exists()
  assert_no_calls(fake_bin)


FAKE_MAIN = """#!/bin/bash
echo "process $JAX_PROCESS_ID of $JAX_NUM_PROCESSES at $JAX_COORDINATOR_ADDRESS"
echo "$XLA_FLAGS $*"
echo $$ >> "{pids}"
if [ "$JAX_PROCESS_ID" = "{fail}" ]; then sleep 0.3; echo boom; exit 3; fi
exec sleep {sleep}
"""


def _fake_main(tmp_path, fail="none", sleep="0.1"):
  path = tmp_path / "fake_python"
  pids = tmp_path / "pids.txt"
  path.write_text(FAKE_MAIN.format(pids=pids, fail=fail, sleep=sleep))
  path.chmod(0o755)
  return str(path), pids


def test_local_multiprocess_runs_and_waits(tmp_path, fake_bin):
  python, _ = _fake_main(tmp_path)
  workdir = tmp_path / "run"
  result = run_script(LOCAL, "--num_processes=2", "--devices_per_process=4",
                      "--port=5555", f"--workdir={workdir}", "--",
                      "--config.seed=7", fake_bin=fake_bin,
                      env={"PYTHON": python})
  assert result.returncode == 0, result.stderr
  for i in range(2):
    log = (workdir / "logs" / f"process_{i}.log").read_text().splitlines()
    assert log == [
        f"process {i} of 2 at localhost:5555",
        "--xla_force_host_platform_device_count=4 -m electra_jax.main "
        f"--config=configs/tiny.py --workdir={workdir} --config.seed=7"]


def test_local_multiprocess_failure_stops_the_others(tmp_path, fake_bin):
  python, pids = _fake_main(tmp_path, fail="1", sleep="60")
  start = time.monotonic()
  result = run_script(LOCAL, "--num_processes=3", f"--workdir={tmp_path}",
                      fake_bin=fake_bin, env={"PYTHON": python})
  assert result.returncode == 3
  assert time.monotonic() - start < 20
  assert "process 1 exited with 3" in result.stderr and "boom" in result.stderr
  for pid in map(int, pids.read_text().split()):
    with pytest.raises(ProcessLookupError):
      os.kill(pid, 0)
