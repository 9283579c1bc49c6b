"""A mini ELECTRA that learns on a CPU: 0.8M-parameter discriminator.

  python -m electra_jax.main --config=configs/mini.py --workdir=runs/mini \
      --config.input.data_dir=data/real16k --config.model.vocab_size=16000

About 1.1 steps/s on a 2-core CPU, evals included: its generator reads
context within the first hour (~3,000 steps), and at that rate the
6,000-step schedule takes about 95 minutes (the README's "Does it learn?"
section has the measured curves, on the corpus it was chosen on and on a
held-out one of other genres).
Sized like the small model of google-research/electra at a quarter of its
width and a third of its depth.

Masking 40% of tokens, not the reference's 15%: at this size the generator
guesses by word frequency for thousands of steps before it reads its
context (the MLM plateau), and how long is set by the number of predicted
slots, not by tokens or steps.

The generator has the discriminator's width, its own embeddings and no
gradient clipping, against the reference's smaller generator that shares
the embeddings with the discriminator under one clipping norm. Shared, the
replaced-token loss (weight 50) sets Adam's scale on the embeddings and
the global clip couples the two networks: the generator's step there
shrinks about six-fold and it stays on the plateau for the whole hour.
Kept apart, the generator trains exactly as an MLM-only model of its size
and leaves the plateau with it (README, 'The MLM plateau'). The long
decay matters too: a schedule that ends at 4,000 steps lowers the learning
rate enough by step 2,500 to hold the exit back.

Sampling temperature 2: at this scale the generator learns the token
frequencies within ~100 steps, long before the discriminator has any
contextual feature. With fakes drawn at T=1 a token's identity then says
nothing about whether it was replaced, the discriminator unlearns what it
had (rare token = fake) by erasing token identity from its top layers, and
its representations collapse to one vector per sequence (README, 'Healthy
and collapsed runs'). At T=2 the fakes stay a little rarer than real text,
so the discriminator keeps a signal it can learn from while contextual
features form. The same holds in the PyTorch oracle.
"""

from electra_jax import defaults


def get_config(arg=None):
  del arg  # Unused.
  config = defaults.get_config()
  config.model.embedding_size = 128
  config.model.hidden_size = 128
  config.model.num_hidden_layers = 4
  config.model.num_attention_heads = 2
  config.model.intermediate_size = 512
  config.objective.temperature = 2.0
  config.objective.mask_prob = 0.4
  config.generator.generator_hidden_size = 1.0
  config.generator.untied_generator_embeddings = True
  config.input.batch_size = 32
  config.optimizer.learning_rate = 1e-3
  config.optimizer.num_warmup_steps = 200
  config.optimizer.max_grad_norm = 0.0
  config.num_train_steps = 6000
  config.log_every_steps = 50
  config.checkpoint.every_steps = 500
  config.eval.every_steps = 500
  config.eval.num_batches = 8
  return config
