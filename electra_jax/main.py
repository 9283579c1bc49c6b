"""Pretraining entry point; intentionally short (flax examples/lm1b/main.py).

  python -m electra_jax.main --config=configs/base.py --workdir=runs/base \
      --config.num_train_steps=1000

All hyperparameters live in the config file; `--config.a.b=v` overrides one
(the config is locked, so a misspelt key fails and names itself).
Multi-process runs: see `runtime.initialize_distributed` and `launch/`.
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from electra_jax import errors
from electra_jax import loop
from electra_jax import runtime

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for logs and checkpoints.")
config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/base.py.", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}. "
                         "Overrides look like --config.input.batch_size=8.")
  runtime.setup()
  errors.check_writable(FLAGS.workdir)
  loop.train_and_evaluate(FLAGS.config, FLAGS.workdir)


def cli() -> None:
  """The `electra-pretrain` console script."""
  errors.run(main)


if __name__ == "__main__":
  cli()
