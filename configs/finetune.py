"""Fine-tuning config: one task, hyperparameters as google-research/electra.

  python -m electra_jax.finetune --config=configs/finetune.py:task=sst2 \
      --workdir=runs/sst2 --config.init_from=runs/small \
      --config.data.tfds_data_dir=~/tensorflow_datasets

The argument is `task=NAME[,size=small|base|large|mini|tiny]`. Tasks: cola, sst2,
mrpc, qqp, mnli, qnli, rte, stsb, squad1 (= squad), squad2, and, for your
own files, classification, regression, tagging and qa, e.g.

  --config=configs/finetune.py:task=classification \
      --config.data.train_file=train.csv --config.data.eval_file=dev.csv \
      --config.data.text_columns=review --config.data.label_column=stars

`size` picks the learning rate and layer-wise decay of the reference
(3e-4 / 1e-4 / 5e-5; 0.8, 0.9 for large; mini and tiny as small) and the `model` fields used when
training without `init_from`; with `init_from` the checkpoint's
architecture replaces those fields.
"""

import importlib.util
import os

import ml_collections

from electra_jax.finetune import tasks

# size -> (learning_rate, layerwise_lr_decay), as the reference's
# configure_finetuning.py and the paper's Table 7.
_SIZES = {"tiny": (3e-4, 0.8), "mini": (3e-4, 0.8), "small": (3e-4, 0.8),
          "base": (1e-4, 0.8), "large": (5e-5, 0.9)}


def _parse(arg: str | None) -> dict[str, str]:
  args = dict(kv.split("=", 1) for kv in (arg or "").split(",") if kv)
  unknown = set(args) - {"task", "size"}
  if "task" not in args or unknown:
    raise ValueError(f"Expected task=NAME[,size=SIZE], got {arg!r}, e.g. "
                     "--config=configs/finetune.py:task=sst2,size=base.")
  if args.setdefault("size", "small") not in _SIZES:
    raise ValueError(f"size must be one of {', '.join(_SIZES)}.")
  return args


def _preset(size: str) -> ml_collections.ConfigDict:
  """The pretraining preset `configs/<size>.py`, for its `model` fields."""
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      f"{size}.py")
  spec = importlib.util.spec_from_file_location(f"_preset_{size}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the fine-tuning config for `arg` = "task=NAME[,size=SIZE]"."""
  args = _parse(arg)
  task = tasks.get_task(args["task"])
  pretraining = _preset(args["size"])
  lr, decay = _SIZES[args["size"]]

  config = ml_collections.ConfigDict()
  config.task = args["task"]  # A name in electra_jax.finetune.tasks.TASKS.
  config.mode = "train"  # train (+ predict if set) | predict (workdir's best).
  config.seed = 0  # Trial k uses seed + k (init of the head, dropout, order).
  config.num_trials = 1  # Seeds to fine-tune; results give mean/median/std.
  config.init_from = ""  # Pretrained: electra_jax workdir/export or HF dir.
  config.reinit_top_layers = 0  # Top encoder layers left at fresh init.
  config.reinit_embeddings = False  # True: fresh embeddings (and project).
  config.tokenizer = ""  # vocab.txt or .model; empty: found with init_from.
  config.lowercase = True  # WordPiece only: uncased vocabularies.
  config.head = "official"  # official (reference's, TF init) | transformers.
  config.num_train_epochs = task.num_train_epochs  # 3; RTE, STS-B 10; QA 2.
  config.loss_reduction = "sum"  # sum (reference: over the batch) | mean.
  config.batch_size = 32  # Global training batch.
  config.eval_batch_size = 32  # Global evaluation/prediction batch.
  config.max_seq_length = task.max_seq_length  # 128; QA 512; tagging 256.
  config.log_every_steps = 100  # Train loss/learning rate to TensorBoard.

  # Architecture; replaced by the checkpoint's when init_from is set.
  config.model = pretraining.model

  # The pretraining optimizer (optimizer.py, same defaults) plus fine-tuning
  # fields; warmup is a proportion of the run, and the step never splits.
  config.optimizer = opt = ml_collections.ConfigDict(
      pretraining.optimizer.to_dict())
  del opt["num_warmup_steps"], opt["grad_accum_steps"]
  opt.learning_rate = lr  # Peak learning rate (of the head).
  opt.warmup_proportion = 0.1  # Warmup steps = proportion * total steps.
  opt.layerwise_lr_decay = decay  # Per-layer LR factor; <= 0 disables it.
  opt.layerwise_lr_decay_compat = False  # True: the released code's extra
  # factor (google-research/electra#51), for comparing with the paper.

  # Data (electra_jax.finetune.data): TFDS or local files.
  config.data = d = ml_collections.ConfigDict()
  d.source = "tfds" if task.tfds_name else "files"  # tfds | files.
  d.tfds_name = task.tfds_name  # e.g. glue/sst2, squad/v2.0.
  d.tfds_data_dir = ""  # Prepared TFDS data (no download); empty: default.
  d.train_split = "train"
  d.eval_split = task.eval_split  # Evaluated after every epoch.
  d.predict_split = ""  # TFDS split to predict (e.g. test); empty: none.
  d.train_file = ""  # CSV/TSV (header row), JSONL or CoNLL file.
  d.eval_file = ""
  d.predict_file = ""  # Unlabeled; predictions go to predictions.jsonl.
  d.file_format = ""  # csv | tsv | jsonl | conll; empty: from extension.
  d.text_columns = ",".join(task.text_columns)  # 1-2 texts; question,context.
  d.label_column = task.label_column  # Label, score, tags or answers.
  d.id_column = "idx" if task.tfds_name.startswith("glue/") else "id"
  d.labels = ""  # Comma-separated classes/tags; empty: TFDS's or sorted data.
  d.tag_encoding = "bioes"  # Tagging: bioes (span tags) | none (e.g. POS).
  d.double_unordered = True  # Also train on swapped pairs (MRPC, STS-B).
  d.max_query_length = 64  # QA: question tokens kept.
  d.doc_stride = 128  # QA: tokens between the starts of context windows.

  # QA head (qa_head.py) and decoding (squad.py), as the reference.
  config.qa = q = ml_collections.ConfigDict()
  q.head = "electra"  # electra (joint end-given-start + answerable) | bert.
  q.beam_size = 20  # electra: start candidates, and ends kept per start.
  q.answerable_weight = 0.5  # electra: weight of the answerable loss.
  q.n_best_size = 20  # Candidate spans kept per example.
  q.max_answer_length = 30  # Longest answer, in tokens.
  q.na_threshold = -2.75  # SQuAD 2.0, electra head: "" if answerable logit >.
  q.bert_na_threshold = 0.0  # bert head: "" if null - best span score > this.

  # Device mesh (sharding.py), as pretraining.
  config.sharding = pretraining.sharding
  return config
