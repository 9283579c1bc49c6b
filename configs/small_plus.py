"""ELECTRA-Small++: the Small discriminator with a full-width generator,
trained on 512-token sequences (the released `electra-small` checkpoint).

  python -m electra_jax.main --config=configs/small_plus.py --workdir=runs/sp
"""

from electra_jax import defaults


def get_config(arg=None):
  del arg  # Unused.
  config = defaults.get_config()
  config.generator.generator_hidden_size = 1.0
  config.input.max_seq_length = 512
  return config
