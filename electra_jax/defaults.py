"""The one shared default config; every file under `configs/` overrides it.

Field names follow google-research/electra's `configure_pretraining.py` where
an equivalent exists. Defaults live here and nowhere else: code reads
`config.objective.mask_prob`, never `config.get("mask_prob", 0.15)`.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  """Returns the default pretraining config (the ELECTRA-Small recipe)."""
  config = ml_collections.ConfigDict()

  config.seed = 0  # Seeds parameter init, masking, sampling and dropout.
  config.num_train_steps = 1_000_000  # Total optimizer steps.
  config.log_every_steps = 100  # Progress line and TensorBoard scalars.
  config.init_from = ""  # Params-only init: a workdir or transformers dir.
  config.profile_start_step = 0  # jax.profiler trace from this step (0: off).
  config.profile_num_steps = 5  # Steps in the trace (WORKDIR/profile).

  # The discriminator (the model that is kept). Names follow BertConfig.
  config.model = model = ml_collections.ConfigDict()
  model.vocab_size = 0  # 0: the tokenizer's; else checked against it.
  model.embedding_size = 128  # Shared embedding width (E); 0 means hidden.
  model.hidden_size = 256  # Transformer width (H).
  model.num_hidden_layers = 12  # Transformer layers.
  model.num_attention_heads = 4  # Attention heads; head size is H / heads.
  model.intermediate_size = 1024  # Feed-forward width.
  model.hidden_dropout_prob = 0.1  # Dropout on embeddings and sublayers.
  model.attention_probs_dropout_prob = 0.1  # Dropout on attention weights.
  model.max_position_embeddings = 512  # Learned position table size.
  model.type_vocab_size = 2  # Segment (token type) ids.
  model.initializer_range = 0.02  # Stddev of the truncated-normal init.
  model.position_embedding_init = "normal"  # normal (reference) | sinusoidal.
  model.layer_norm_eps = 1e-12  # As BERT/ELECTRA.
  model.dtype = "auto"  # Compute: auto (bf16 on GPU/TPU, f32 on CPU) | name.
  model.param_dtype = "float32"  # Parameters and optimizer state.
  model.attention_impl = "xla"  # xla (einsums) | cudnn (fused, GPU only).
  model.scan_layers = False  # lax.scan over the layers: compiles one layer.
  model.remat_policy = "none"  # none | full | dots | dots_no_batch.

  # The generator: a smaller masked LM sharing the embeddings.
  config.generator = gen = ml_collections.ConfigDict()
  gen.generator_hidden_size = 0.25  # Fraction of model.hidden_size.
  gen.generator_layers = 1.0  # Fraction of model.num_hidden_layers.
  gen.untied_generator_embeddings = False  # Own embeddings if True.

  # The pretraining objective (objective.py).
  config.objective = obj = ml_collections.ConfigDict()
  obj.electra_objective = True  # False: MLM-only (BERT) baseline.
  obj.mask_prob = 0.15  # Fraction of tokens chosen for prediction.
  obj.mask_token_prob = 0.85  # Of the chosen: [MASK]; the rest keep theirs.
  obj.sample_with_replacement = False  # True: i.i.d. as the reference.
  obj.gen_weight = 1.0  # Weight of the generator's MLM loss.
  obj.disc_weight = 50.0  # Weight of the replaced-token-detection loss.
  obj.temperature = 1.0  # Generator sampling temperature.
  obj.uniform_generator = False  # Sample fakes uniformly (ablation).
  obj.disallow_correct = False  # Never sample the original token.

  # Input (data/input_pipeline.py). Vocabulary size and special ids come
  # from the data's metadata.json (a DataSpec), not from here.
  config.input = inp = ml_collections.ConfigDict()
  inp.max_seq_length = 128  # Tokens per example, [CLS] and [SEP]s included.
  inp.batch_size = 128  # Global batch size (all hosts together).
  inp.data_dir = ""  # Preprocessed shards; empty: built-in default corpus.
  inp.read_threads = 32  # Files read at once (bucket round trips); 1: serial.
  inp.default_vocab_size = 8000  # Sentencepiece pieces of the default corpus.
  inp.default_corpus_bytes = 4_000_000  # Text gathered for the default corpus.
  inp.default_data_cache = ""  # Its cache; empty: ~/.cache/electra_jax.

  # Optimizer (optimizer.py); the reference defaults.
  config.optimizer = opt = ml_collections.ConfigDict()
  opt.optimizer = "adamw"  # adamw | lamb.
  opt.learning_rate = 5e-4  # Peak learning rate.
  opt.num_warmup_steps = 10_000  # Linear warmup, multiplied into the decay.
  opt.lr_decay_power = 1.0  # Polynomial decay power (1.0: linear to 0).
  opt.schedule = "reference"  # reference | warmup_cosine | constant.
  opt.weight_decay_rate = 0.01  # Decoupled; not on LayerNorm or biases.
  opt.adam_b1 = 0.9
  opt.adam_b2 = 0.999
  opt.adam_eps = 1e-6
  opt.bias_correction = False  # The reference AdamW has none.
  opt.max_grad_norm = 1.0  # Global-norm clip; 0 disables it.
  opt.grad_accum_steps = 1  # Micro-batches per step (same result).

  # Device mesh and logical axis rules (sharding.py).
  config.sharding = shd = ml_collections.ConfigDict()
  shd.mesh_data = -1  # Data-parallel axis; -1 fills the remaining devices.
  shd.mesh_fsdp = 1  # Parameter/optimizer sharding axis (ZeRO-3 style).
  shd.mesh_tensor = 1  # Tensor (model) parallel axis.
  shd.logical_axis_rules = ()  # Empty: sharding.DEFAULT_RULES.

  # Checkpoints (checkpointing.py).
  config.checkpoint = ckpt = ml_collections.ConfigDict()
  ckpt.every_steps = 5_000  # Save every N steps (and on the last step).
  ckpt.every_minutes = 30.0  # Also save when this much time has passed.
  ckpt.max_to_keep = 3  # Older checkpoints are deleted (0 keeps all).
  ckpt.keep_every_steps = 0  # Also keep every K-th step forever (0: off).
  ckpt.async_save = True  # Write in the background while training goes on.

  # Held-out evaluation.
  config.eval = ev = ml_collections.ConfigDict()
  ev.every_steps = 5_000  # Evaluate every N steps (and on the last step).
  ev.num_batches = 20  # Batches per evaluation.
  # Collapse detector (health.py), checked after warmup: AUC at or below
  # this, or a logit std across positions below the next, is a collapse.
  ev.collapse_max_auc = 0.55
  ev.collapse_min_logit_std = 0.05
  return config
