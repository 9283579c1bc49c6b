"""ELECTRA-Base: 110M-parameter discriminator, 1/3-width generator.

  python -m electra_jax.main --config=configs/base.py --workdir=runs/base
"""

from electra_jax import defaults


def get_config(arg=None):
  del arg  # Unused.
  config = defaults.get_config()
  config.model.embedding_size = 768
  config.model.hidden_size = 768
  config.model.num_attention_heads = 12
  config.model.intermediate_size = 3072
  config.generator.generator_hidden_size = 1 / 3
  config.optimizer.learning_rate = 2e-4
  config.input.batch_size = 256
  config.input.max_seq_length = 512
  config.num_train_steps = 766_000
  return config
