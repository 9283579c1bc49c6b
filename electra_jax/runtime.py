"""Process setup shared by the entry points (pretraining, fine-tuning)."""

import ctypes
import gc
import os

from absl import logging
import jax
# JAX's own cluster detection: private, but jax is pinned in requirements.txt
# and tests/runtime_test.py pins down the parts used here.
from jax._src import clusters

from electra_jax import errors
from electra_jax import reporting

# "1": always call jax.distributed.initialize() (auto-detected); "0": never;
# unset: decide as initialize_distributed() describes.
DISTRIBUTED_ENV = "ELECTRA_JAX_DISTRIBUTED"


def detect_cluster() -> tuple[str, int] | None:
  """The cluster `jax.distributed.initialize()` would find, and its size.

  Asks JAX's own `ClusterEnv` classes, in JAX's order, whether they are
  present. Slurm, Open MPI and GKE TPU read environment variables only; on
  a Cloud TPU VM made by gcloud, JAX asks the VM's metadata server (a
  link-local address; initialize() makes the same calls). Generic
  Kubernetes (K8sCluster) is not asked: that takes the `kubernetes` package
  and API calls, so set ELECTRA_JAX_DISTRIBUTED=1 there. mpi4py is opt-in in
  JAX too.

  Returns:
    (class name, number of processes in the job) of the first cluster
    present, or None.
  """
  # pylint: disable-next=protected-access
  for env in clusters.ClusterEnv._cluster_types:
    if env.opt_in_only_method or issubclass(env, clusters.K8sCluster):
      continue
    if not env.is_env_present():
      continue
    if issubclass(env, clusters.GkeTpuCluster):
      # The slice's workers are in TPU_WORKER_HOSTNAMES; multislice jobs
      # (JobSet, xpk) export MEGASCALE_NUM_SLICES. JAX's get_process_count()
      # would ask the metadata server for it when unset, which a GKE pod
      # may not reach.
      # pylint: disable-next=protected-access
      workers = env._get_worker_list_in_slice()
      slices = int(os.environ.get("MEGASCALE_NUM_SLICES") or 1)
      return env.__name__, len(workers) * slices
    return env.__name__, env.get_process_count()
  return None


def initialize_distributed() -> None:
  """Joins a multi-process run; a single process needs nothing.

  In this order:
    1. ELECTRA_JAX_DISTRIBUTED=0: never initialize.
    2. JAX_COORDINATOR_ADDRESS (host:port), JAX_NUM_PROCESSES and
       JAX_PROCESS_ID, all set (launch/local_multiprocess.sh): those.
    3. ELECTRA_JAX_DISTRIBUTED=1, or a cluster that `detect_cluster()` finds
       with more than one process (Cloud TPU pod slices from gcloud or GKE,
       Slurm, Open MPI): `jax.distributed.initialize()` detects the rest.
    4. Otherwise (one host, one process): nothing.
  JAX_LOCAL_DEVICE_IDS (e.g. "0,1,2,3") gives one process several GPUs
  (launch/gpu_slurm.sbatch --per_node).
  """
  env = os.environ
  override = env.get(DISTRIBUTED_ENV, "")
  if override not in ("", "0", "1"):
    raise errors.UserError(f"{DISTRIBUTED_ENV}={override!r}: use 1 (always "
                     "initialize jax.distributed), 0 (never) or unset.")
  if override == "0" or jax.distributed.is_initialized():
    return
  local = env.get("JAX_LOCAL_DEVICE_IDS")
  local_ids = [int(i) for i in local.split(",")] if local else None
  if env.get("JAX_COORDINATOR_ADDRESS") and env.get("JAX_NUM_PROCESSES"):
    jax.distributed.initialize(
        coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
        num_processes=int(env["JAX_NUM_PROCESSES"]),
        process_id=int(env["JAX_PROCESS_ID"]), local_device_ids=local_ids)
    return
  # Follow JAX's own detection rather than a variable of our choosing: a
  # gcloud-made TPU pod slice names its workers only in the metadata server
  # (TPU_WORKER_HOSTNAMES is GKE's), so a check on that variable left such
  # slices unjoined. initialize() on a lone process would start a
  # coordinator for nothing (or fail where there is no cluster), so a
  # single-host TPU VM or a 1-task Slurm job skips it.
  if override != "1":
    found = detect_cluster()
    if found is None or found[1] < 2:
      if found:
        logging.info("%s with one process: not initializing "
                     "jax.distributed.", found[0])
      return
    logging.info("%s with %d processes: initializing jax.distributed.",
                 *found)
  jax.distributed.initialize(
      coordinator_address=env.get("JAX_COORDINATOR_ADDRESS"),
      local_device_ids=local_ids)


def hide_accelerators_from_tensorflow() -> None:
  """tfds may import TensorFlow; it must not take accelerator memory."""
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
  except ImportError:
    return
  tf.config.set_visible_devices([], "GPU")


def setup() -> None:
  """Everything an entry point does before its work."""
  reporting.quiet_library_logs()
  hide_accelerators_from_tensorflow()
  initialize_distributed()
  logging.info("JAX process %d/%d, %d local / %d global devices.",
               jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())


def release_host_memory() -> None:
  """Drops JAX's tracing and compilation caches and hands freed heap back
  to the OS.

  Compiling the step leaves hundreds of MB of freed heap that glibc keeps
  (on the CPU backend it also holds the state); without this, the step's
  own buffers are allocated on top of it and raise the peak by as much.
  Executables already compiled (AOT) stay valid; a jitted function called
  again is traced and compiled again. Call it after building the state
  and after compiling the step.
  """
  jax.clear_caches()
  gc.collect()
  try:
    ctypes.CDLL("libc.so.6").malloc_trim(0)
  except (OSError, AttributeError):  # Not glibc (macOS, musl): nothing to do.
    pass
