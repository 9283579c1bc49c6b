"""Loading what a pretraining run produced, for export, demos and fine-tuning.

A run's workdir is self-contained: `config.json` (the resolved config),
`tokenizer/` (the tokenizer file and the data's `metadata.json`, copied at
start) and `checkpoints/`. Params restore here on the host's default device,
whatever mesh they were saved from.
"""

import json
from typing import Any

from etils import epath
import jax
import ml_collections
import orbax.checkpoint as ocp

from electra_jax import checkpointing
from electra_jax import convert
from electra_jax import defaults
from electra_jax import errors
from electra_jax import model as model_lib
from electra_jax import objective
from electra_jax import train as train_lib
from electra_jax.data import input_pipeline

def tokenizer_path(workdir: str) -> str:
  """The tokenizer file of a run (a sentencepiece .model or vocab.txt)."""
  meta_file = epath.Path(workdir) / input_pipeline.TOKENIZER_DIR / (
      "metadata.json")
  if not meta_file.exists():
    raise errors.MissingFile(f"{meta_file}: missing; is {workdir} the workdir "
                            "of an electra_jax pretraining run?")
  name = json.loads(meta_file.read_text())["tokenizer"]
  return str(epath.Path(workdir) / input_pipeline.TOKENIZER_DIR / name)


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """A run's record (`config.json`): its config with the data's facts."""
  path = epath.Path(workdir) / "config.json"
  if not path.exists():
    raise errors.UserError(f"{path}: missing; is {workdir} the workdir of "
                           "an electra_jax pretraining run?")
  saved = json.loads(path.read_text())
  # A run made before a config key existed ran with that key's default.
  _add_missing(saved, defaults.get_config().to_dict())
  return ml_collections.ConfigDict(saved)


def _add_missing(saved: dict[str, Any], default: dict[str, Any]) -> None:
  for key, value in default.items():
    if key not in saved:
      saved[key] = value
    elif isinstance(value, dict) and isinstance(saved[key], dict):
      _add_missing(saved[key], value)


def restore_params(workdir: str, step: int | None = None
                   ) -> tuple[ml_collections.ConfigDict, dict, int]:
  """(config, pretraining params, step) from a run's checkpoint."""
  config = load_run_config(workdir)
  manager = checkpointing.make_manager(workdir, read_only=True)
  steps = manager.all_steps()
  if not steps:
    raise errors.UserError(
        f"{checkpointing.checkpoint_dir(workdir)}: no complete checkpoint; "
        "train first (or pass the workdir of a run that saved one).")
  step = max(steps) if step is None else step
  if step not in steps:
    raise errors.UserError(f"No checkpoint for step {step} in {workdir}; "
                           f"available: {sorted(steps)}.")
  model = train_lib.pretraining_model(config, config.model.vocab_size)
  length = config.input.max_seq_length
  n = objective.max_predictions_per_seq(config.objective.mask_prob, length)
  ids = jax.numpy.zeros((1, length), jax.numpy.int32)
  abstract = jax.eval_shape(
      lambda: model.init(jax.random.key(0), ids, ids, ids, ids[:, :n]))
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
      model_lib.nn.unbox(abstract["params"]))
  params = manager.restore(step, args=ocp.args.Composite(
      params=ocp.args.StandardRestore(abstract)))["params"]
  manager.close()
  return config, params, step


def load_discriminator(path: str) -> tuple[model_lib.ModelConfig, Any]:
  """The discriminator's config and params, for fine-tuning.

  Args:
    path: an electra_jax workdir (its latest checkpoint), an export
      directory (with `discriminator/`), or a transformers ELECTRA
      discriminator directory.

  Returns:
    (ModelConfig, params {"embeddings", "discriminator"}); the generator and
    the optimizer state are dropped.
  """
  if checkpointing.checkpoint_dir(path).is_dir():
    config, params, _ = restore_params(path)
    if "discriminator" not in params:
      raise errors.UserError(f"{path}: an MLM-only run has no discriminator.")
    return (train_lib.discriminator_config(config, config.model.vocab_size),
            model_lib.discriminator_params(params))
  if (epath.Path(path) / "discriminator").is_dir():
    path = str(epath.Path(path) / "discriminator")
  module, params = convert.load_transformers(path)
  if not isinstance(module, model_lib.ElectraDiscriminator):
    raise errors.UserError(f"{path}: a generator checkpoint, not a discriminator.")
  return module.cfg, params
