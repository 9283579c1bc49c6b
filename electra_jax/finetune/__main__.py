"""Fine-tuning entry point: `python -m electra_jax.finetune`.

  python -m electra_jax.finetune --config=configs/finetune.py:task=mrpc \
      --workdir=runs/mrpc --config.init_from=runs/base \
      --config.num_trials=5

  # Predictions for an unlabeled file with the best fine-tuned params:
  python -m electra_jax.finetune --config=configs/finetune.py:task=mrpc \
      --workdir=runs/mrpc --config.mode=predict \
      --config.data.predict_file=test.tsv

The config is locked, so a misspelt override fails and names itself.
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from electra_jax import errors
from electra_jax import runtime
from electra_jax.finetune import train

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for results and checkpoints.")
config_flags.DEFINE_config_file(
    "config", None, "configs/finetune.py:task=NAME[,size=SIZE].",
    lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}. "
                         "Overrides look like --config.batch_size=16.")
  runtime.setup()
  train.run(FLAGS.config, FLAGS.workdir)


def cli() -> None:
  """The `electra-finetune` console script."""
  errors.run(main)


if __name__ == "__main__":
  cli()
