"""Where fine-tuning starts and what it leaves behind.

In (`resolve`): the pretrained encoder (`load_encoder`: the discriminator's
from a pretraining workdir, an export or a transformers directory, or the
generator's from an MLM-only run or its export), its architecture, and the
tokenizer stored with it (`find_tokenizer`). Out
(`save_task`): a self-contained fine-tuned workdir that predict mode reads
without `init_from` (`load_task`):

  workdir/
    config.json          the resolved config (architecture of the checkpoint)
    task.json            model config, label names, tokenizer file name
    vocab.txt | tokenizer.model   a copy of the tokenizer
    trial_<k>/checkpoints/<step>/  params of trial k's best eval step (Orbax)
    trial_<k>/events...  TensorBoard
    results.json         per-trial metrics and mean/median/std
"""

import dataclasses
import json
from typing import Any

from absl import logging
from etils import epath
import jax.numpy as jnp
import jax
import ml_collections

from electra_jax import checkpointing
from electra_jax import convert
from electra_jax import errors
from electra_jax import model as model_lib
from electra_jax import pretrained
from electra_jax import train as train_lib
from electra_jax.data import input_pipeline
from electra_jax.data import tokenization
from electra_jax.finetune import data as data_lib
from electra_jax.finetune import heads
from electra_jax.finetune import qa_head
from electra_jax.finetune import tasks

TASK_FILE = "task.json"
# Tokenizer file names looked for next to a pretrained model, in order.
TOKENIZER_FILES = ("vocab.txt", "tokenizer.model")
# The subdirectories of an export (`electra_jax.export`), in the order
# fine-tuning prefers them; an MLM-only run's export has only `generator/`.
EXPORT_DIRS = ("discriminator", "generator")


def find_tokenizer(config: ml_collections.ConfigDict) -> str:
  """`config.tokenizer`, else the tokenizer stored with `config.init_from`.

  Looks for `vocab.txt` or a sentencepiece `.model` in the init_from
  directory (a transformers directory) or its `discriminator/` or
  `generator/` (an export), then in a pretraining workdir's `tokenizer/`.
  """
  if config.tokenizer:
    return config.tokenizer
  path = config.init_from
  if not path:
    raise errors.UserError("No tokenizer: set --config.tokenizer to a vocab.txt or "
                     "sentencepiece .model (or --config.init_from to a "
                     "directory that holds one).")
  found = []
  root = epath.Path(path)
  for directory in (root, *(root / d for d in EXPORT_DIRS)):
    found += [str(directory / n) for n in TOKENIZER_FILES
              if (directory / n).is_file()]
    if directory.is_dir():
      found += sorted(str(p) for p in directory.glob("*.model"))
  if not found:
    try:
      found.append(pretrained.tokenizer_path(path))
    except FileNotFoundError:
      pass
  if not found:
    raise errors.MissingFile(
        f"No tokenizer (vocab.txt or a sentencepiece .model) in {path}; set "
        "--config.tokenizer.")
  return found[0]


def _mlm_encoder(generator_params: Any) -> dict[str, Any]:
  """`{"embeddings", "encoder"}` of `ElectraGenerator` params: the MLM head
  (`head_dense`, `head_LayerNorm`, `output_bias`) is dropped."""
  return {"embeddings": generator_params["embeddings"],
          "encoder": generator_params["generator"]["encoder"]}


def _log_mlm_only(path: str) -> None:
  logging.info("init_from=%s is an MLM-only run (no discriminator): "
               "fine-tuning its full-size generator's encoder; the MLM head "
               "is dropped.", path)


def load_encoder(path: str) -> tuple[model_lib.ModelConfig, dict[str, Any]]:
  """The pretrained encoder to fine-tune, and its architecture.

  The discriminator's, or, for the MLM-only baseline
  (`objective.electra_objective=False`, which has no discriminator), its
  generator's: that tower is discriminator-sized (`train.generator_config`)
  and its `encoder` has the discriminator encoder's param tree, so the
  BERT-style baseline fine-tunes exactly as ELECTRA does. The pretraining
  head (replaced-token or MLM) is dropped.

  Args:
    path: a pretraining workdir (its latest checkpoint), an export
      directory (`discriminator/`, or only `generator/` for an MLM-only
      run), or a transformers `ElectraForPreTraining` directory.

  Returns:
    (ModelConfig, {"embeddings", "encoder"}).
  """
  if checkpointing.checkpoint_dir(path).is_dir():
    config, params, _ = pretrained.restore_params(path)
    if "discriminator" in params:
      return (train_lib.discriminator_config(config, config.model.vocab_size),
              heads.pretrained_subtrees(
                  model_lib.discriminator_params(params)))
    if "generator" in params:  # Every ELECTRA run has a discriminator.
      _log_mlm_only(path)
      return (train_lib.generator_config(config, config.model.vocab_size),
              _mlm_encoder(model_lib.generator_params(params)))
    raise errors.UserError(f"{path}: the checkpoint holds neither a discriminator "
                     f"nor a generator (params {sorted(params)}); there is "
                     "no encoder to fine-tune.")
  disc_dir, gen_dir = (epath.Path(path) / d for d in EXPORT_DIRS)
  if gen_dir.is_dir() and not disc_dir.is_dir():
    # An ELECTRA run's export has both; only the MLM-only run's lacks the
    # discriminator, so this generator is the full-size one.
    module, params = convert.load_transformers(str(gen_dir))
    if not isinstance(module, model_lib.ElectraGenerator):
      raise errors.UserError(f"{gen_dir}: expected the ElectraForMaskedLM of an "
                       "MLM-only run's export.")
    _log_mlm_only(path)
    return module.cfg, _mlm_encoder(params)
  if (epath.Path(path) / input_pipeline.TOKENIZER_DIR).is_dir():
    # Else the next step would read the run's own config.json as a
    # transformers one and complain about its model_type.
    raise errors.MissingFile(
        f"{path}: a pretraining workdir with no checkpoints/, so neither a "
        "discriminator nor an MLM-only generator to fine-tune. Pass the "
        "workdir of a run that saved a checkpoint, an export of one, or a "
        "transformers ElectraForPreTraining directory.")
  cfg, params = pretrained.load_discriminator(path)
  return cfg, heads.pretrained_subtrees(params)


ARCHITECTURE = ("vocab_size", "embedding_size", "hidden_size",
                "num_hidden_layers", "num_attention_heads",
                "intermediate_size", "max_position_embeddings",
                "type_vocab_size", "layer_norm_eps")


def adopt_architecture(config: ml_collections.ConfigDict,
                       checkpoint: model_lib.ModelConfig) -> None:
  """Sets `config.model`'s architecture fields to the checkpoint's (in
  place, on an unlocked copy); dropout, dtypes and attention stay the
  config's. Logs every field that changes."""
  for name in ARCHITECTURE:
    value = getattr(checkpoint, name)
    if config.model[name] != value:
      logging.info("model.%s: %s -> %s (from the checkpoint).", name,
                   config.model[name], value)
      config.model[name] = value


@dataclasses.dataclass
class Task:
  """Everything a run needs, resolved once from the config."""

  config: ml_collections.ConfigDict  # Resolved and locked.
  spec: tasks.TaskSpec
  cfg: model_lib.ModelConfig
  labels: list[str]
  tokenizer: tokenization.Tokenizer
  pretrained: dict | None  # {"embeddings", "encoder"} numpy subtrees.
  fresh: tuple = ()  # Param paths left at fresh init (`heads.fresh_paths`).

  @property
  def model(self) -> heads.TaskModel:
    return heads.TaskModel(self.cfg, self.spec.kind, max(len(self.labels), 1),
                           self.config.head,
                           qa_head.QAConfig(**self.config.qa))


def resolve(config: ml_collections.ConfigDict,
            train_examples: list[Any] | None = None) -> Task:
  """Loads the pretrained model and tokenizer, and fills the checkpoint's
  architecture and the tokenizer path into a locked copy of `config`.

  Args:
    config: the fine-tuning config.
    train_examples: training examples, to read label names from when
      neither the config nor the task names them.

  Returns:
    The resolved `Task`; its `pretrained` is None without `init_from`.
  """
  spec = tasks.get_task(config.task)
  config = ml_collections.ConfigDict(config.to_dict())  # Unlocked copy.
  subtrees = None
  if config.init_from:
    pre_cfg, subtrees = load_encoder(config.init_from)
    adopt_architecture(config, pre_cfg)
    subtrees = jax.device_get(subtrees)
  else:
    logging.warning("No --config.init_from: fine-tuning from random init.")
    if config.reinit_top_layers or config.reinit_embeddings:
      # Everything is fresh already; say so rather than ignore the flags.
      logging.warning("reinit_top_layers / reinit_embeddings have no effect "
                      "without --config.init_from: every weight starts at "
                      "its fresh init.")
  tok_path = find_tokenizer(config)
  config.tokenizer = tok_path
  tok = tokenization.load_tokenizer(tok_path, lowercase=config.lowercase)
  if not config.model.vocab_size:  # 0, as in pretraining: the tokenizer's.
    config.model.vocab_size = tok.vocab_size
  if tok.vocab_size > config.model.vocab_size:
    raise errors.UserError(
        f"Tokenizer {tok_path} has {tok.vocab_size} ids but the model only "
        f"{config.model.vocab_size} embeddings; set --config.model.vocab_size "
        f"to {tok.vocab_size} or more.")
  labels = data_lib.label_names(data_lib.DataConfig(**config.data), spec,
                                train_examples or [])
  fresh = ()
  if subtrees is not None:
    fresh = heads.fresh_paths(config.model.num_hidden_layers,
                              embeddings=config.reinit_embeddings,
                              top_layers=config.reinit_top_layers)
    if fresh:
      logging.info("Not restored (fresh init): %s.",
                   ", ".join("/".join(p) for p in fresh))
  config.lock()
  return Task(config, spec,
              train_lib.discriminator_config(config, config.model.vocab_size),
              labels, tok, subtrees, fresh)


def save_task(workdir: str, task: Task) -> None:
  """Writes `task.json` and a copy of the tokenizer into `workdir`."""
  workdir = epath.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  source = epath.Path(task.config.tokenizer)
  name = "vocab.txt" if source.name.endswith(".txt") else "tokenizer.model"
  if str(source) != str(workdir / name):
    source.copy(workdir / name, overwrite=True)
  fields = {k: (str(jnp.dtype(v)) if k in ("dtype", "param_dtype") else v)
            for k, v in dataclasses.asdict(task.cfg).items()}
  (workdir / TASK_FILE).write_text(json.dumps(
      {"task": task.spec.name, "head": task.config.head,
       "qa_head": task.config.qa.head,
       "tag_encoding": task.config.data.tag_encoding, "labels": task.labels,
       "tokenizer": name, "model": fields}, indent=2))


def load_task(config: ml_collections.ConfigDict, workdir: str) -> Task:
  """The `Task` a fine-tuned workdir was trained as (for predict mode).

  The model config, head, labels and tokenizer are the saved ones; data
  and batch settings are `config`'s.
  """
  path = epath.Path(workdir) / TASK_FILE
  if not path.is_file():
    raise errors.UserError(f"{path} is missing: predict mode needs a workdir "
                           "that fine-tuning (mode=train) wrote.")
  saved: dict[str, Any] = json.loads(path.read_text())
  spec = tasks.get_task(config.task)
  if saved["task"] != spec.name:
    raise errors.UserError(f"{workdir} was fine-tuned on {saved['task']}, not "
                           f"{config.task}; pass task={saved['task']}.")
  fields = dict(saved["model"])
  fields["dtype"] = jnp.dtype(fields["dtype"])
  fields["param_dtype"] = jnp.dtype(fields["param_dtype"])
  config = ml_collections.ConfigDict(config.to_dict())  # Unlocked copy.
  config.head = saved["head"]
  # Workdirs written before the ELECTRA QA head had only the BERT-style one.
  config.qa.head = saved.get("qa_head", "bert")
  # Tags were trained as written before BIOES became the default.
  config.data.tag_encoding = saved.get("tag_encoding", "none")
  config.tokenizer = str(epath.Path(workdir) / saved["tokenizer"])
  config.lock()
  tok = tokenization.load_tokenizer(config.tokenizer,
                                    lowercase=config.lowercase)
  return Task(config, spec, model_lib.ModelConfig(**fields), saved["labels"],
              tok, None)
