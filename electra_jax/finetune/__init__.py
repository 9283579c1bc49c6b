"""Fine-tuning pretrained ELECTRA discriminators on downstream tasks.

  python -m electra_jax.finetune --config=configs/finetune.py:task=sst2 \
      --workdir=runs/sst2 --config.init_from=PATH

Modules: `tasks` (task definitions; TFDS and file readers), `features` and
`squad` (examples to model inputs; QA windows, decoding and EM/F1), `data`
(splits as the config names them, and scoring of predictions), `heads`
(task models), `lr_decay` (layer-wise learning rates), `metrics`,
`restore` (pretrained weights, tokenizer, the fine-tuned workdir) and
`train` (sharded steps, trials, predict mode).
"""
