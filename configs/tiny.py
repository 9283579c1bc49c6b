"""A tiny ELECTRA for tests and the CPU quickstart (trains in minutes).

  python -m electra_jax.main --config=configs/tiny.py --workdir=runs/tiny
"""

from electra_jax import defaults


def get_config(arg=None):
  del arg  # Unused.
  config = defaults.get_config()
  config.model.embedding_size = 32
  config.model.hidden_size = 64
  config.model.num_hidden_layers = 2
  config.model.num_attention_heads = 2
  config.model.intermediate_size = 128
  config.model.max_position_embeddings = 128
  config.generator.generator_hidden_size = 0.5
  # Fakes a little rarer than text: see configs/mini.py for why.
  config.objective.temperature = 2.0
  config.input.max_seq_length = 64
  config.input.batch_size = 32
  config.optimizer.learning_rate = 1e-3
  config.optimizer.num_warmup_steps = 50
  config.num_train_steps = 500
  config.log_every_steps = 50
  config.checkpoint.every_steps = 250
  config.eval.every_steps = 250
  config.eval.num_batches = 4
  return config
