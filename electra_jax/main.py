"""Pretraining entry point; intentionally short (flax examples/lm1b/main.py).

  python -m electra_jax.main --config=configs/base.py --workdir=runs/base \
      --config.num_train_steps=1000

All hyperparameters live in the config file; `--config.a.b=v` overrides one
(the config is locked, so a misspelt key fails and names itself).
"""

import os

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from electra_jax import loop
from electra_jax import reporting

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for logs and checkpoints.")
config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/base.py.", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}. "
                         "Overrides look like --config.input.batch_size=8.")
  reporting.quiet_library_logs()
  _hide_accelerators_from_tensorflow()  # tfds may import TF.
  _initialize_distributed()
  logging.info("JAX process %d/%d, %d local / %d global devices.",
               jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())
  loop.train_and_evaluate(FLAGS.config, FLAGS.workdir)


def _initialize_distributed() -> None:
  """Joins a multi-process run; a single process needs nothing.

  Explicit: JAX_COORDINATOR_ADDRESS (host:port), JAX_NUM_PROCESSES and
  JAX_PROCESS_ID (launch/local_multiprocess.sh sets them). Cloud TPU pod
  slices and Slurm jobs are detected by `jax.distributed.initialize()`.
  """
  env = os.environ
  if env.get("JAX_COORDINATOR_ADDRESS") and env.get("JAX_NUM_PROCESSES"):
    jax.distributed.initialize(
        coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
        num_processes=int(env["JAX_NUM_PROCESSES"]),
        process_id=int(env["JAX_PROCESS_ID"]))
  elif (int(env.get("SLURM_NTASKS", "1")) > 1
        or env.get("TPU_WORKER_HOSTNAMES", "").count(",") > 0):
    jax.distributed.initialize()  # Auto-detected cluster.


def _hide_accelerators_from_tensorflow() -> None:
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
  except ImportError:
    return
  tf.config.set_visible_devices([], "GPU")


if __name__ == "__main__":
  app.run(main)
