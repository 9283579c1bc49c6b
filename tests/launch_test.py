"""The launch/ scripts: syntax, shellcheck, --help and exact --dry-run output.

The scripts run in subprocesses with fake `gcloud`, `srun`, `sbatch` and
`python` first on PATH; the fakes record any call, and a dry run must make
none. Commands are parsed back with `shlex`, so quoting is checked too.
Where a script does more than print (the TPU queue wait, the bucket check,
the TPU worker wrapper), it runs against fakes that answer as gcloud and
the metadata server would.
"""

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TPU_VM = "launch/tpu_vm.sh"
SLURM = "launch/gpu_slurm.sbatch"
LOCAL = "launch/local_multiprocess.sh"
WORKER = "launch/tpu_worker.sh"
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


def run_script(script, *args, fake_bin, env=None, cwd=ROOT):
  bin_dir, _ = fake_bin
  full_env = {k: v for k, v in os.environ.items()
              if not k.startswith(("SLURM_", "JAX_", "TPU_"))
              and k not in ("CONFIG", "WORKDIR", "OVERRIDES", "PER_NODE",
                            "DRY_RUN", "PYTHON", "ZONE", "PROJECT",
                            "XLA_FLAGS", "XLA_TUNING", "CONTAINER_IMAGE",
                            "CONTAINER_MOUNTS", "COMBINE_THRESHOLD_BYTES",
                            "QR_POLL_SECONDS")}
  full_env["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
  full_env.update(env or {})
  return subprocess.run(
      ["bash", os.path.join(ROOT, script), *args], cwd=cwd, env=full_env,
      capture_output=True,
      text=True, timeout=60, check=False)


def commands(stdout):
  """The `+ ` lines of a dry run, each split into its argv."""
  return [shlex.split(line[2:]) for line in stdout.splitlines()
          if line.startswith("+ ")]


def assert_no_calls(fake_bin):
  _, calls = fake_bin
  assert not calls.exists(), calls.read_text()


def fake(bin_dir, name, body):
  """Puts a bash script `name` with `body` first on the fakes' PATH."""
  path = bin_dir / name
  path.write_text("#!/bin/bash\n" + body)
  path.chmod(0o755)


@pytest.mark.parametrize("script", [*SCRIPTS, WORKER])
def test_bash_syntax(script):
  subprocess.run(["bash", "-n", script], cwd=ROOT, check=True)


@pytest.mark.parametrize("script", [*SCRIPTS, WORKER])
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


def test_readme_install_pins_match_requirements():
  with open(os.path.join(ROOT, "README.md")) as f:
    readme = f.read()
  section = readme.split("## Install for TPU and GPU")[1].split("\n## ")[0]
  # The package's extras (pyproject.toml pins them: packaging_test) and the
  # same without installing the package.
  assert re.findall(r'pip install "\.\[(\w+)\]"', section) == [
      "tpu", "cuda12", "cuda13"]
  extras = re.findall(r'"jax\[(\w+)\]==([^"]+)"', section)
  assert extras and {v for _, v in extras} == {_jax_pin()}


GCLOUD_TPU = ["gcloud", "compute", "tpus", "tpu-vm"]
GCLOUD_QR = ["gcloud", "compute", "tpus", "queued-resources"]


def test_tpu_vm_all_dry_run(fake_bin):
  if subprocess.run(["git", "-C", ROOT, "rev-parse"], capture_output=True,
                    check=False).returncode:
    pytest.skip("setup ships a git checkout")
  result = run_script(
      TPU_VM, "--name=t1", "--zone=us-central2-b", "--type=v4-32",
      "--project=proj", "--config=configs/base.py", "--workdir=gs://b/run/",
      "all", "--dry-run", "--", "--config.num_train_steps=10", TRICKY,
      fake_bin=fake_bin)
  assert result.returncode == 0, result.stderr
  assert_no_calls(fake_bin)
  put, cat, rm, create, tar, scp, setup, start, logs = commands(
      result.stdout)
  # The bucket check comes first: a marker under the workdir is written,
  # read back and deleted.
  marker = put[-1]
  assert re.fullmatch(r"gs://b/run/\.tpu_vm_preflight_\d+", marker)
  assert put == ["echo", "ok", "|", "gcloud", "storage", "cp", "--quiet",
                 "-", marker]
  assert cat == ["gcloud", "storage", "cat", marker]
  assert rm == ["gcloud", "storage", "rm", "--quiet", marker]
  where = ["--zone=us-central2-b", "--project=proj"]
  assert create == GCLOUD_TPU + [
      "create", "t1", *where, "--accelerator-type=v4-32",
      "--version=tpu-ubuntu2204-base"]
  assert tar[:2] == ["tar", "-czf"]
  assert scp == GCLOUD_TPU + ["scp", tar[2], "t1:electra_jax.tar.gz", *where,
                              "--worker=all"]
  for ssh in (setup, start):
    assert ssh[:-2] == GCLOUD_TPU + ["ssh", "t1", *where, "--worker=all"]
    assert ssh[-2] == "--command"
  assert (".venv/bin/pip install -q -r requirements.txt "
          f"'jax[tpu]=={_jax_pin()}'") in setup[-1]
  remote = shlex.split(start[-1])
  # Each worker checks the bucket with its own service account, then starts
  # the run through tpu_worker.sh, with the compilation cache in the bucket
  # and the log headed for the workdir.
  check_at = remote.index("check")
  assert remote[check_at - 2:check_at + 2] == [
      "bash", "launch/tpu_worker.sh", "check", "gs://b/run"]
  env_at = remote.index("env")
  assert remote[env_at - 2:remote.index("python")] == [
      "setsid", "nohup", "env", "JAX_COMPILATION_CACHE_DIR=gs://b/jax_cache",
      "bash", "launch/tpu_worker.sh", "run", "gs://b/run/logs", "--"]
  python_at = remote.index("python")
  assert remote[python_at:remote.index(">", python_at)] == [
      "python", "-m", "electra_jax.main", "--config=configs/base.py",
      "--workdir=gs://b/run", "--config.num_train_steps=10", TRICKY]
  assert remote[remote.index(">", python_at) + 1] == "logs/worker.log"
  assert logs == GCLOUD_TPU + [
      "ssh", "t1", *where, "--worker=0", "--command",
      "tail -n 200 -F electra_jax/logs/train.log"]


def test_tpu_vm_single_commands(fake_bin):
  result = run_script(TPU_VM, "create", "--dry-run", "--name", "v5",
                      "--type", "v5litepod-16", "--zone", "us-west4-a",
                      fake_bin=fake_bin)
  assert result.returncode == 0, result.stderr
  assert commands(result.stdout) == [GCLOUD_TPU + [
      "create", "v5", "--zone=us-west4-a", "--accelerator-type=v5litepod-16",
      "--version=v2-alpha-tpuv5-lite"]]
  result = run_script(TPU_VM, "delete", "--dry-run", "--name=t1",
                      "--zone=z", fake_bin=fake_bin)
  assert commands(result.stdout) == [
      GCLOUD_TPU + ["delete", "t1", "--zone=z", "--quiet"]]
  result = run_script(TPU_VM, "run", "--dry-run", fake_bin=fake_bin)
  assert result.returncode == 2 and "--workdir" in result.stderr
  # A local workdir: no bucket check from here (the workers still check
  # theirs), no compilation cache unless named.
  for cache, env in [([], []), (["--compile_cache=/c"],
                                ["JAX_COMPILATION_CACHE_DIR=/c"])]:
    result = run_script(TPU_VM, "run", "--dry-run", "--workdir=/w", *cache,
                        fake_bin=fake_bin)
    [start] = commands(result.stdout)
    remote = shlex.split(start[-1])
    assert remote[remote.index("check") + 1] == "/w"
    at = remote.index("nohup") + 1  # env [VAR=...] bash launch/tpu_worker.sh
    assert remote[at:remote.index("launch/tpu_worker.sh", at) - 1] == [
        "env", *env]
  result = run_script(TPU_VM, "collect", "--dry-run", "--name=t1",
                      "--zone=z", "--workdir=gs://b/r", fake_bin=fake_bin)
  assert commands(result.stdout) == [GCLOUD_TPU + [
      "ssh", "t1", "--zone=z", "--worker=all", "--command",
      "cd electra_jax && bash launch/tpu_worker.sh collect gs://b/r/logs"]]
  assert_no_calls(fake_bin)


@pytest.mark.parametrize("capacity,track,flag", [
    ("--spot", [], ["--spot"]), ("", [], []),
    ("--best-effort", ["alpha"], ["--best-effort"])])
def test_tpu_vm_queued_resource_dry_run(capacity, track, flag, fake_bin):
  qr = ["gcloud", *track, "compute", "tpus", "queued-resources"]
  args = ["--queued", capacity] if capacity else ["--queued"]
  result = run_script(TPU_VM, "create", "--dry-run", "--name=q1",
                      "--zone=us-east5-b", "--type=v6e-32", *args,
                      fake_bin=fake_bin)
  assert result.returncode == 0, result.stderr
  assert commands(result.stdout) == [qr + [
      "create", "q1", "--zone=us-east5-b", "--node-id=q1",
      "--accelerator-type=v6e-32", "--runtime-version=v2-alpha-tpuv6e",
      *flag]]
  result = run_script(TPU_VM, "delete", "--dry-run", "--name=q1",
                      "--zone=z", *args, fake_bin=fake_bin)
  assert commands(result.stdout) == [
      qr + ["delete", "q1", "--zone=z", "--force", "--quiet"]]
  result = run_script(TPU_VM, "create", "--dry-run", "--spot",
                      "--best-effort", fake_bin=fake_bin)
  assert result.returncode == 2 and "--best-effort" in result.stderr
  assert_no_calls(fake_bin)


# A gcloud whose queued resource answers the n-th `describe` with line n of
# a states file (the last line once they run out; NONE: it does not exist).
FAKE_QR_GCLOUD = """echo "gcloud $*" >> "{calls}"
case "$*" in
  *"queued-resources describe"*)
    n=$(grep -c "queued-resources describe" "{calls}")
    state=$(sed -n "${{n}}p" "{states}")
    [ -n "$state" ] || state=$(tail -n 1 "{states}")
    [ "$state" = NONE ] && exit 1
    echo "$state" ;;
esac
"""


def test_tpu_vm_queued_resource_waits_until_active(tmp_path, fake_bin):
  bin_dir, calls = fake_bin
  fake(bin_dir, "gcloud", FAKE_QR_GCLOUD.format(
      calls=calls, states=tmp_path / "states"))
  describe = " ".join(GCLOUD_QR + ["describe", "q1", "--zone=z",
                                   "--format=value(state.state)"])
  create = " ".join(GCLOUD_QR + [
      "create", "q1", "--zone=z", "--node-id=q1", "--accelerator-type=v4-8",
      "--runtime-version=tpu-ubuntu2204-base", "--spot"])
  for states, rc, said, made in [
      (["NONE", "WAITING_FOR_RESOURCES", "PROVISIONING", "ACTIVE"], 0,
       "q1 is ACTIVE", [describe, create, describe, describe, describe]),
      (["ACTIVE"], 0, "reusing the queued resource q1 (ACTIVE)",
       [describe, describe]),
      (["WAITING_FOR_RESOURCES", "FAILED"], 2, "queued resource q1 is FAILED",
       [describe, describe])]:
    (tmp_path / "states").write_text("\n".join(states) + "\n")
    calls.unlink(missing_ok=True)
    result = run_script(TPU_VM, "create", "--queued", "--spot", "--name=q1",
                        "--zone=z", fake_bin=fake_bin,
                        env={"QR_POLL_SECONDS": "0"})
    assert result.returncode == rc, result.stderr
    assert said in result.stdout + result.stderr
    assert calls.read_text().splitlines() == made


def test_tpu_vm_bucket_check_fails_fast(tmp_path, fake_bin):
  bin_dir, calls = fake_bin
  fake(bin_dir, "gcloud", f"""echo "gcloud $*" >> "{calls}"
cat > /dev/null
echo "Copying file://- to gs://b/run/x" >&2
echo "ERROR: (gcloud.storage.cp) [me@x.com] does not have permission" \
"to access b instance [b] (or it may not exist)" >&2
exit 1
""")
  start = time.monotonic()
  result = run_script(TPU_VM, "all", "--name=t1", "--zone=z",
                      "--workdir=gs://b/run", fake_bin=fake_bin)
  assert time.monotonic() - start < 10
  assert result.returncode == 2
  [line] = result.stderr.splitlines()
  assert line.startswith("tpu_vm.sh: cannot write, read and delete under "
                         "gs://b/run: ERROR: (gcloud.storage.cp)")
  [call] = calls.read_text().splitlines()  # No TPU was created or used.
  assert call.startswith("gcloud storage cp --quiet - gs://b/run/")
  # A bucket that works: the check passes, then the workers are used.
  calls.unlink()
  fake(bin_dir, "gcloud", f'echo "gcloud $*" >> "{calls}"\ncat > /dev/null\n')
  result = run_script(TPU_VM, "run", "--name=t1", "--zone=z",
                      "--workdir=gs://b/run", fake_bin=fake_bin)
  assert result.returncode == 0, result.stderr
  assert [c.split()[:3] for c in calls.read_text().splitlines()] == [
      ["gcloud", "storage", "cp"], ["gcloud", "storage", "cat"],
      ["gcloud", "storage", "rm"], ["gcloud", "compute", "tpus"]]


def test_tpu_worker_run_keeps_log_and_status(tmp_path, fake_bin):
  bin_dir, calls = fake_bin
  fake(bin_dir, "curl", 'echo 3\n')  # The metadata server: worker 3.
  result = run_script(WORKER, "run", str(tmp_path / "out/logs"), "--",
                      "bash", "-c", "echo to out; echo to err >&2; exit 5",
                      fake_bin=fake_bin, cwd=tmp_path)
  assert result.returncode == 5, result.stderr
  assert (tmp_path / "logs/train.log").read_text() == "to out\nto err\n"
  assert (tmp_path / "out/logs/worker_3.log").read_text() == (
      "to out\nto err\n")
  assert not (tmp_path / "logs/train.pid").exists()
  # A gs:// log directory goes through gcloud storage.
  result = run_script(WORKER, "run", "gs://b/run/logs/", "--", "true",
                      fake_bin=fake_bin, cwd=tmp_path)
  assert calls.read_text() == (
      "gcloud storage cp --quiet logs/train.log gs://b/run/logs/worker_3.log\n")
  assert "could not copy" in result.stderr and result.returncode == 0


def test_tpu_worker_passes_sigterm_on_and_still_copies(tmp_path, fake_bin):
  bin_dir, _ = fake_bin
  fake(bin_dir, "curl", "exit 7\n")  # No metadata server: the host name.
  program = tmp_path / "train.py"
  program.write_text(
      "import signal, sys, time\n"
      "def save(*_):\n"
      "  print('saved', flush=True)\n"
      "  sys.exit(0)\n"
      "signal.signal(signal.SIGTERM, save)\n"
      "print('training', flush=True)\n"
      "time.sleep(60)\n")
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
  worker = subprocess.Popen(
      ["bash", os.path.join(ROOT, WORKER), "run", str(tmp_path / "out"), "--",
       sys.executable, str(program)], cwd=tmp_path, env=env)
  log = tmp_path / "logs/train.log"
  deadline = time.monotonic() + 30
  while not (log.exists() and "training" in log.read_text()):
    assert time.monotonic() < deadline and worker.poll() is None
    time.sleep(0.1)
  assert int((tmp_path / "logs/train.pid").read_text()) != worker.pid
  worker.send_signal(signal.SIGTERM)  # As a Spot VM's shutdown would.
  assert worker.wait(timeout=30) == 0
  copied = tmp_path / "out" / f"worker_{os.uname().nodename}.log"
  assert copied.read_text() == "training\nsaved\n"


def test_tpu_worker_check(tmp_path, fake_bin):
  result = run_script(WORKER, "check", str(tmp_path / "new/dir"),
                      fake_bin=fake_bin, cwd=tmp_path)
  assert result.returncode == 0, result.stderr
  assert os.listdir(tmp_path / "new/dir") == []  # The marker is gone.
  _, calls = fake_bin  # The fake gcloud fails every call.
  result = run_script(WORKER, "check", "gs://b/run", fake_bin=fake_bin,
                      cwd=tmp_path)
  assert result.returncode == 1
  [line] = result.stderr.splitlines()
  assert "cannot write, read and delete under gs://b/run" in line
  assert calls.read_text().startswith("gcloud storage cp --quiet - gs://b/run/")


def _srun(stdout):
  """srun's flags, env's VAR=value but XLA_FLAGS, and the python command."""
  [srun] = commands(stdout)
  env_at = srun.index("env")
  python_at = srun.index("-m") - 1
  env = [v for v in srun[env_at + 1:python_at]
         if not v.startswith("XLA_FLAGS=")]
  return srun[:env_at], env, srun[python_at:]


def _xla_flags(stdout):
  """The XLA_FLAGS that srun's tasks get, split; None if not set."""
  [srun] = commands(stdout)
  found = [v for v in srun if v.startswith("XLA_FLAGS=")]
  return found[0][len("XLA_FLAGS="):].split() if found else None


def test_slurm_signals_the_tasks_before_the_time_limit():
  with open(os.path.join(ROOT, SLURM)) as f:
    header = [line.split()[1] for line in f
              if line.startswith("#SBATCH ")]
  # No "B:": the signal must reach the tasks (job steps), which save; the
  # batch shell only waits for srun.
  [signal_option] = [o for o in header if o.startswith("--signal=")]
  sig, seconds = signal_option[len("--signal="):].split("@")
  assert sig == "TERM" and int(seconds) >= 120


def _runs_with_xla_flags(flags):
  """Whether jaxlib starts with these XLA_FLAGS (unknown ones abort it)."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=" ".join(flags))
  return subprocess.run(
      [sys.executable, "-c", "import jax; jax.numpy.zeros(2).sum()"],
      env=env, capture_output=True, check=False, timeout=120).returncode == 0


def test_slurm_xla_flags(fake_bin):
  # Outside Slurm the dry run shows 2 nodes x 8 GPUs: all-gather and
  # reduce-scatter thresholds are 1/16 and 1/32 of the all-reduce one.
  result = run_script(SLURM, "--dry-run", "--workdir=/w", fake_bin=fake_bin,
                      env={"XLA_FLAGS": "--xla_gpu_enable_triton_gemm=true"})
  assert result.returncode == 0, result.stderr
  flags = _xla_flags(result.stdout)
  assert flags == [
      "--xla_gpu_enable_latency_hiding_scheduler=true",
      "--xla_gpu_enable_highest_priority_async_stream=true",
      "--xla_gpu_enable_triton_gemm=false",
      "--xla_gpu_enable_command_buffer=",
      "--xla_gpu_all_reduce_combine_threshold_bytes=1073741824",
      "--xla_gpu_all_gather_combine_threshold_bytes=67108864",
      "--xla_gpu_reduce_scatter_combine_threshold_bytes=33554432",
      "--xla_gpu_enable_pipelined_all_gather=true",
      "--xla_gpu_enable_pipelined_reduce_scatter=true",
      "--xla_gpu_enable_pipelined_all_reduce=true",
      "--xla_gpu_enable_while_loop_double_buffering=true",
      "--xla_gpu_enable_triton_gemm=true"]  # The user's, last: it wins.
  # Every name is one the pinned jaxlib knows (the check itself works: an
  # unknown name fails).
  assert _runs_with_xla_flags(flags)
  assert not _runs_with_xla_flags(["--xla_gpu_no_such_flag=true"])
  result = run_script(SLURM, "--dry-run", "--workdir=/w", "--no_xla_flags",
                      fake_bin=fake_bin)
  assert _xla_flags(result.stdout) is None
  assert_no_calls(fake_bin)


def test_slurm_container(fake_bin):
  result = run_script(
      SLURM, "--dry-run", "--workdir=/w", "--container_image=nvcr.io#t/e:1",
      fake_bin=fake_bin, env={"CONTAINER_MOUNTS": "/data:/data,/w:/w"})
  assert result.returncode == 0, result.stderr
  flags, _, python = _srun(result.stdout)
  assert flags[-3:] == [
      "--container-image=nvcr.io#t/e:1",
      f"--container-mounts={ROOT}:{ROOT},/data:/data,/w:/w",
      f"--container-workdir={ROOT}"]
  assert python[:3] == ["python", "-m", "electra_jax.main"]
  result = run_script(SLURM, "--dry-run", "--workdir=/w",
                      "--container_mounts=/data:/data", fake_bin=fake_bin)
  assert result.returncode == 2 and "--container_image" in result.stderr
  assert_no_calls(fake_bin)


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
  python, pids = _fake_main(tmp_path)
  workdir = tmp_path / "run"
  result = run_script(LOCAL, "--num_processes=2", "--devices_per_process=4",
                      "--port=5555", f"--workdir={workdir}", "--",
                      "--config.seed=7", fake_bin=fake_bin,
                      env={"PYTHON": python})
  assert result.returncode == 0, result.stderr
  # Each process's pid (the program's own: env execs it), for signals.
  assert sorted((workdir / "logs" / f"process_{i}.pid").read_text()
                for i in range(2)) == sorted(
                    f"{p}\n" for p in pids.read_text().split())
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
