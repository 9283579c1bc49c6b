"""Orbax checkpoints of a pretraining run: save, exact resume, params-only init.

Each step directory `workdir/checkpoints/<step>/` holds four items:

  params     the model params (generator, discriminator, shared embeddings)
  opt_state  the optimizer state
  input      the input pipeline's position (JSON)
  config     the run's record: its config with the data's facts (JSON)

The input state is global, not per process: `input_pipeline.TrainIterator`
describes its position as the index of the next *global* batch (each
process derives its own slice from it), so the JSON item that orbax writes
from process 0 alone is complete, and it restores on any process count.

Resume order (`restore_or_initialize`):
  1. the latest complete checkpoint in `workdir` (params, optimizer state,
     step and data position: an exact continuation);
  2. `config.init_from`: params only, from another run's workdir or from
     transformers directories (via `convert/`); optimizer state, step and
     data start fresh;
  3. scratch.
Orbax writes each step to a temporary directory and renames it when the save
is complete, so a save killed midway is never picked up by (1).
"""

from typing import Any

from absl import logging
from etils import epath
import jax
import orbax.checkpoint as ocp

from electra_jax import convert
from electra_jax import errors
from electra_jax import train as train_lib

# Config fields whose change makes a checkpoint unusable for a run.
_STRUCTURAL = ("model", "generator", "objective.electra_objective",
               "objective.uniform_generator", "input.max_seq_length")


def _resolve(path: str) -> epath.Path:
  """A local path made absolute (orbax needs that); a URL as it is."""
  path = epath.Path(path)
  return path if "://" in str(path) else path.resolve()


def checkpoint_dir(workdir: str) -> epath.Path:
  """`workdir/checkpoints`: local or in a bucket (gs://...)."""
  return _resolve(workdir) / "checkpoints"


def make_manager(workdir: str, *, max_to_keep: int = 0,
                 keep_every_steps: int = 0, async_save: bool = True,
                 read_only: bool = False) -> ocp.CheckpointManager:
  """A `CheckpointManager` with the four named items (0: no limit/off)."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=None if read_only else (max_to_keep or None),
      keep_period=None if read_only else (keep_every_steps or None),
      enable_async_checkpointing=async_save,
      create=not read_only,
      read_only=read_only,
      cleanup_tmp_directories=not read_only,
  )
  return ocp.CheckpointManager(
      checkpoint_dir(workdir), options=options,
      item_names=("params", "opt_state", "input", "config"))


def save(manager: ocp.CheckpointManager, state: train_lib.TrainState,
         input_state: dict[str, Any], record: dict[str, Any],
         force: bool = False) -> bool:
  """Starts an (async) save of `state` at its step, with the run's record
  (`loop.run_record`)."""
  step = int(state.step)
  return manager.save(step, args=ocp.args.Composite(
      params=ocp.args.StandardSave(state.params),
      opt_state=ocp.args.StandardSave(state.opt_state),
      input=ocp.args.JsonSave(input_state),
      config=ocp.args.JsonSave(record)), force=force)


def _abstract(tree: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying the target shardings, for restore."""
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      tree, shardings)


def _get(tree: dict, dotted: str) -> Any:
  for key in dotted.split("."):
    tree = tree.get(key, {}) if isinstance(tree, dict) else {}
  return tree


# Settings a restored run may change: how it computes, or how it would
# have started (irrelevant once params are restored; older runs lack them).
_RESTORE_FREE = ("dtype", "attention_impl", "position_embedding_init")


def check_compatible(saved: dict, current: dict, where: str) -> None:
  """Raises if the saved run's model/objective differ from `current`'s
  (both run records)."""
  diffs = []
  for field in _STRUCTURAL:
    a, b = _get(saved, field), _get(current, field)
    if isinstance(a, dict) and isinstance(b, dict):
      diffs += [f"{field}.{k}: checkpoint {a.get(k)!r}, config {b.get(k)!r}"
                for k in sorted(set(a) | set(b))
                if a.get(k) != b.get(k) and k not in _RESTORE_FREE
                and not k.endswith("dropout_prob")]
    elif a != b:
      diffs.append(f"{field}: checkpoint {a!r}, config {b!r}")
  if diffs:
    raise errors.UserError(
        f"The checkpoint in {where} does not match the config ("
        + "; ".join(diffs)
        + "). Use a new --workdir for a different model, or pass the same "
        "config (the run's own is in its config.json).")


def restore_or_initialize(
    manager: ocp.CheckpointManager, record: dict[str, Any],
    state: train_lib.TrainState, state_shardings: train_lib.TrainState,
) -> tuple[train_lib.TrainState, dict[str, Any] | None]:
  """Applies the resume order above to a freshly initialised `state`.

  Returns:
    (state, input_state or None when the data starts from the beginning).
  """
  step = manager.latest_step()
  if step is not None:
    where = str(epath.Path(manager.directory) / str(step))
    saved = manager.restore(step, args=ocp.args.Composite(
        config=ocp.args.JsonRestore()))["config"]
    check_compatible(saved, record, where)
    try:
      restored = manager.restore(step, args=ocp.args.Composite(
          params=ocp.args.StandardRestore(
              _abstract(state.params, state_shardings.params)),
          opt_state=ocp.args.StandardRestore(
              _abstract(state.opt_state, state_shardings.opt_state)),
          input=ocp.args.JsonRestore()))
    except ValueError as e:
      if "structures do not match" not in str(e):
        raise
      opt = record["optimizer"]
      raise errors.UserError(
          f"The optimizer state in {where} does not fit this run's optimizer "
          f"(optimizer={opt['optimizer']!r}, "
          f"max_grad_norm={opt['max_grad_norm']})."
          " It was saved with other optimizer settings (see that run's "
          "config.json), or by an electra_jax from before AdamW became one "
          "fused transform. Resume with the same settings, or start a new "
          f"--workdir with --config.init_from={manager.directory.parent} to "
          "take only its params.") from e
    logging.info("Resumed from %s.", where)
    state = state.replace(
        step=jax.device_put(jax.numpy.asarray(step, jax.numpy.int32),
                            state_shardings.step),
        params=restored["params"], opt_state=restored["opt_state"])
    return state, restored["input"]
  if record["init_from"]:
    params = load_init_params(record["init_from"], record, state.params,
                              state_shardings.params)
    return state.replace(params=params), None
  return state, None


def load_init_params(path: str, record: dict[str, Any], params: Any,
                     shardings: Any) -> Any:
  """Params-only initialisation from `path` (resume order step 2).

  `path` is another electra_jax run's workdir (its latest checkpoint), or a
  directory with transformers `discriminator/` and `generator/`
  subdirectories (as `python -m electra_jax.export` writes, or as released
  ELECTRA checkpoints come when put side by side).
  """
  if checkpoint_dir(path).is_dir():
    other = make_manager(path, read_only=True)
    step = other.latest_step()
    if step is None:
      raise errors.UserError(f"init_from={path}: no complete checkpoint in "
                             f"{checkpoint_dir(path)}.")
    saved = other.restore(step, args=ocp.args.Composite(
        config=ocp.args.JsonRestore()))["config"]
    check_compatible(saved, record, path)
    restored = other.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(_abstract(params, shardings))))
    logging.info("Initialised params from %s (step %d).", path, step)
    return restored["params"]
  disc, gen = (epath.Path(path) / "discriminator",
               epath.Path(path) / "generator")
  if not (disc.is_dir() and gen.is_dir()):
    raise errors.UserError(
        f"init_from={path}: neither an electra_jax workdir (no checkpoints/) "
        "nor a directory with transformers discriminator/ and generator/.")
  _, _, loaded = convert.load_pretraining_pair(
      str(disc), str(gen), record["generator"]["untied_generator_embeddings"])
  _check_shapes(loaded, params, path)
  logging.info("Initialised params from transformers checkpoints in %s.",
               path)
  return jax.tree.map(jax.device_put, loaded, shardings)


def _check_shapes(loaded: Any, expected: Any, path: str) -> None:
  flat_l = dict(jax.tree_util.tree_flatten_with_path(loaded)[0])
  flat_e = dict(jax.tree_util.tree_flatten_with_path(expected)[0])
  if set(flat_l) != set(flat_e):
    missing = sorted(jax.tree_util.keystr(k) for k in set(flat_e) - set(flat_l))
    raise errors.UserError(f"init_from={path}: the checkpoint lacks {missing[:5]}; "
                     "does the config describe the same model?")
  for key, value in flat_e.items():
    if flat_l[key].shape != value.shape:
      raise errors.UserError(
          f"init_from={path}: {jax.tree_util.keystr(key)} has shape "
          f"{flat_l[key].shape}, the config needs {value.shape}.")
