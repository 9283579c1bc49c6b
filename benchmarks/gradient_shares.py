"""Which loss moves which weights: a checkpoint's gradient split by term.

  python benchmarks/gradient_shares.py --workdir=runs/mini [--step=3000] \
      [--batches=4]

On held-out batches, with the training step's masking, sampling and dropout,
the gradient of `gen_weight * MLM` and of `disc_weight * RTD` separately,
summed per parameter group (shared embeddings' word table, the rest of the
embeddings, generator encoder, generator head, discriminator, untied
generator embeddings). Per group it prints both norms, the MLM term's share
of the squared norm, and the MLM term's step as Adam would take it: the
clipped MLM gradient over the checkpoint's `sqrt(nu) + eps`, as an RMS over
the group's elements. That last figure is about 0.5-1 for weights the MLM
term alone trains; where the RTD term dominates a shared weight's second
moment, it shows how small a step the generator gets there.
"""

import os
import sys

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
# pylint: disable=wrong-import-position
from electra_jax import checkpointing
from electra_jax import errors
from electra_jax import loop
from electra_jax import objective
from electra_jax import optimizer
from electra_jax import pretrained
from electra_jax import train as train_lib
from electra_jax.data import input_pipeline

FLAGS = flags.FLAGS

GROUPS = ("embeddings.word", "embeddings.other", "generator.encoder",
          "generator.head", "generator_embeddings", "discriminator")


def group_of(path: str) -> str:
  """The parameter group of a params-tree key path (`jax.tree_util.keystr`)."""
  if path.startswith("['embeddings']"):
    return ("embeddings.word" if "word_embeddings" in path
            else "embeddings.other")
  if path.startswith("['generator']['encoder']"):
    return "generator.encoder"
  for group in ("generator_embeddings", "generator", "discriminator"):
    if path.startswith(f"['{group}']"):
      return "generator.head" if group == "generator" else group
  raise ValueError(f"no group for parameter {path}")


def second_moments(workdir: str, step: int, config, params):
  """The Adam second moment `nu` saved with the checkpoint at `step`, on
  this process's first device whatever the saving run's devices were."""
  if config.optimizer.optimizer != "adamw":
    raise errors.UserError(
        f"{workdir} trained with optimizer={config.optimizer.optimizer}; "
        "this split needs Adam's second moment (optimizer=adamw).")
  tx, _ = optimizer.create_optimizer(train_lib.optimizer_config(config),
                                     config.num_train_steps)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
      jax.eval_shape(tx.init, params))
  manager = checkpointing.make_manager(workdir, read_only=True)
  opt_state = manager.restore(step, args=ocp.args.Composite(
      opt_state=ocp.args.StandardRestore(abstract)))["opt_state"]
  manager.close()
  return opt_state.nu


def make_term_grads(model, sc: train_lib.StepConfig):
  """A jitted `(params, batch, rng) -> (mlm_grads, rtd_grads)`."""

  def term_grads(params, batch, rng):
    mask_rng, sample_rng, dropout_rng = jax.random.split(rng, 3)
    masked = train_lib.mask_batch(mask_rng, batch, sc)
    counts = (jnp.sum(masked.weights),
              jnp.sum(batch["input_mask"].astype(jnp.float32)))
    keys = jax.random.split(sample_rng, batch["input_ids"].shape[0])

    def loss(p, gen_weight, disc_weight):
      metrics, *_ = train_lib.forward(p, batch, masked, keys, dropout_rng,
                                      model=model, sc=sc, deterministic=False)
      return objective.electra_loss(metrics, gen_weight=gen_weight,
                                    disc_weight=disc_weight, counts=counts)

    mlm = jax.grad(loss)(params, sc.gen_weight, 0.0)
    if not sc.electra_objective:
      return mlm, jax.tree.map(jnp.zeros_like, mlm)
    return mlm, jax.grad(loss)(params, 0.0, sc.disc_weight)

  return jax.jit(term_grads)


def shares(workdir: str, step: int | None, num_batches: int
           ) -> tuple[int, dict[str, dict[str, float]], list[float]]:
  """(step, per-group figures, clip factor per batch)."""
  if num_batches < 1:
    raise errors.UserError(f"--batches must be at least 1, got {num_batches}")
  config, params, step = pretrained.restore_params(workdir, step)
  nu = second_moments(workdir, step, config, params)
  data_dir, spec = loop.prepare_data(config)
  model = train_lib.pretraining_model(config, spec.vocab_size)
  sc = train_lib.StepConfig.from_config(config, spec)
  term_grads = make_term_grads(model, sc)
  opt = config.optimizer
  paths = [jax.tree_util.keystr(p) for p, _ in
           jax.tree_util.tree_flatten_with_path(params)[0]]
  nu = [np.asarray(v) for v in jax.tree.leaves(nu)]
  sums = {g: np.zeros(4) for g in GROUPS}  # |mlm|^2, |rtd|^2, step^2, size.
  clips = []
  batches = input_pipeline.make_eval_iterator(
      data_dir, batch_size=config.input.batch_size, process_index=0,
      process_count=1, max_seq_length=spec.max_seq_length,
      num_batches=num_batches)
  for i, batch in enumerate(batches):
    batch = {k: jnp.asarray(v) for k, v in batch.items()}
    mlm, rtd = (jax.tree.leaves(g) for g in term_grads(
        params, batch, jax.random.key(i)))
    total = float(np.sqrt(sum(np.sum(np.square(a + b))
                              for a, b in zip(mlm, rtd))))
    clip = (min(1.0, opt.max_grad_norm / total) if opt.max_grad_norm > 0
            else 1.0)
    clips.append(clip)
    for path, a, b, v in zip(paths, mlm, rtd, nu):
      a, b = np.asarray(a), np.asarray(b)
      adam_step = clip * a / (np.sqrt(v) + opt.adam_eps)
      sums[group_of(path)] += (np.sum(a * a), np.sum(b * b),
                               np.sum(adam_step * adam_step), a.size)
  n = len(clips)
  table = {
      g: {"mlm_norm": np.sqrt(m / n), "rtd_norm": np.sqrt(r / n),
          "mlm_share": m / (m + r) if m + r > 0 else 0.0,
          "mlm_adam_step": np.sqrt(s / n / size)}
      for g, (m, r, s, size) in sums.items() if size}
  return step, table, clips


def main(argv):
  del argv
  try:
    step, table, clips = shares(FLAGS.workdir, FLAGS.step, FLAGS.batches)
  except (errors.UserError, FileNotFoundError) as e:
    sys.exit(f"electra_jax: error: {e}")
  print(f"{FLAGS.workdir} at step {step}: clip factor "
        + ", ".join(f"{c:.3f}" for c in clips))
  print(f"{'group':<22s}{'|g_mlm|':>9s}{'|g_rtd|':>9s}{'mlm share':>11s}"
        f"{'mlm Adam step (rms)':>21s}")
  for group, row in table.items():
    print(f"{group:<22s}{row['mlm_norm']:>9.4f}{row['rtd_norm']:>9.4f}"
          f"{row['mlm_share']:>11.3f}{row['mlm_adam_step']:>21.4f}")


def define_flags():
  # Defined when run, not on import: tests import `shares`, and absl's
  # flags are global to the process.
  flags.DEFINE_string("workdir", None, "A pretraining run's workdir.")
  flags.DEFINE_integer("step", None, "Checkpoint step; default: the latest.")
  flags.DEFINE_integer("batches", 4, "Held-out batches to average over.")
  flags.mark_flags_as_required(["workdir"])


if __name__ == "__main__":
  define_flags()
  sys.exit(app.run(main))
