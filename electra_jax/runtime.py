"""Process setup shared by the entry points (pretraining, fine-tuning)."""

import ctypes
import gc
import os

from absl import logging
import jax

from electra_jax import reporting


def initialize_distributed() -> None:
  """Joins a multi-process run; a single process needs nothing.

  Explicit: JAX_COORDINATOR_ADDRESS (host:port), JAX_NUM_PROCESSES and
  JAX_PROCESS_ID (launch/local_multiprocess.sh sets them). Cloud TPU pod
  slices and Slurm jobs are detected by `jax.distributed.initialize()`.
  JAX_LOCAL_DEVICE_IDS (e.g. "0,1,2,3") gives one process several GPUs
  (launch/gpu_slurm.sbatch --per_node).
  """
  env = os.environ
  local = env.get("JAX_LOCAL_DEVICE_IDS")
  local_ids = [int(i) for i in local.split(",")] if local else None
  if env.get("JAX_COORDINATOR_ADDRESS") and env.get("JAX_NUM_PROCESSES"):
    jax.distributed.initialize(
        coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
        num_processes=int(env["JAX_NUM_PROCESSES"]),
        process_id=int(env["JAX_PROCESS_ID"]), local_device_ids=local_ids)
  elif (int(env.get("SLURM_NTASKS", "1")) > 1
        or env.get("TPU_WORKER_HOSTNAMES", "").count(",") > 0):
    jax.distributed.initialize(  # Auto-detected cluster.
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
