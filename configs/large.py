"""ELECTRA-Large: 335M-parameter discriminator, 25% masking.

  python -m electra_jax.main --config=configs/large.py --workdir=runs/large
"""

from electra_jax import defaults


def get_config(arg=None):
  del arg  # Unused.
  config = defaults.get_config()
  config.model.embedding_size = 1024
  config.model.hidden_size = 1024
  config.model.num_hidden_layers = 24
  config.model.num_attention_heads = 16
  config.model.intermediate_size = 4096
  config.generator.generator_hidden_size = 0.25
  config.objective.mask_prob = 0.25
  config.optimizer.learning_rate = 2e-4
  config.input.batch_size = 2048
  config.input.max_seq_length = 512
  config.num_train_steps = 400_000
  return config
