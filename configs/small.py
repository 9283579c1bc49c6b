"""ELECTRA-Small (Clark et al., 2020): 14M-parameter discriminator.

  python -m electra_jax.main --config=configs/small.py --workdir=runs/small
"""

from electra_jax import defaults


def get_config(arg=None):
  del arg  # Unused.
  return defaults.get_config()  # The shared default is the Small recipe.
