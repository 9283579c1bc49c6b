"""A control for fine-tuning: pretrained weights with their features destroyed.

When a pretrained encoder fine-tunes worse than a fresh one, two causes are
possible: what its weights compute (features that do not suit the task) or
merely their statistics (norms and scales grown in pretraining, which change
how fast fine-tuning can move). This script tells them apart. It copies a
transformers ELECTRA directory (an `electra-export` half, or any
`ElectraForPreTraining`) and randomly permutes the entries of every tensor
whose name starts with `--prefix`: each tensor keeps exactly its values, so
its mean, spread and norm, while what the layer computes is gone. Fine-tune
the copy as any transformers directory:

  python experiments/shuffle_weights.py --input=exported/mini/discriminator \
      --output=exported/mini_shuffled
  python -m electra_jax.finetune ... --config.init_from=exported/mini_shuffled

If the shuffled copy fine-tunes like the pretrained one, statistics explain
the difference; if like a fresh init, the features do.
"""

import os
import shutil
import sys

from absl import app
from absl import flags
import numpy as np
from safetensors import numpy as safetensors_numpy

WEIGHTS = "model.safetensors"

FLAGS = flags.FLAGS
flags.DEFINE_string("input", None, "A transformers ELECTRA directory "
                    f"(config.json, {WEIGHTS}, tokenizer files).")
flags.DEFINE_string("output", None, "New directory for the shuffled copy.")
flags.DEFINE_string("prefix", "electra.encoder.",
                    "Tensors whose names start with this are shuffled "
                    "(default: every encoder layer; embeddings are kept).")
flags.DEFINE_integer("seed", 0, "Seed of the permutations.")


def shuffle(tensors: dict[str, np.ndarray], prefix: str,
            rng: np.random.Generator) -> tuple[dict[str, np.ndarray], int]:
  """(tensors with every `prefix` tensor's entries permuted, how many)."""
  out, count = {}, 0
  for name in sorted(tensors):
    value = tensors[name]
    if name.startswith(prefix):
      value = rng.permutation(value.reshape(-1)).reshape(value.shape)
      count += 1
    out[name] = value
  return out, count


def main(argv):
  del argv
  weights = os.path.join(FLAGS.input, WEIGHTS)
  if not os.path.isfile(weights):
    sys.exit(f"shuffle_weights: {weights} not found; --input must be a "
             "transformers directory such as an export's discriminator/.")
  if os.path.exists(FLAGS.output) and os.listdir(FLAGS.output):
    sys.exit(f"shuffle_weights: {FLAGS.output} is not empty; pass a new "
             "--output directory.")
  tensors = safetensors_numpy.load_file(weights)
  shuffled, count = shuffle(tensors, FLAGS.prefix,
                            np.random.default_rng(FLAGS.seed))
  if not count:
    sys.exit(f"shuffle_weights: no tensor name starts with {FLAGS.prefix!r} "
             f"(names are like {sorted(tensors)[0]!r}); change --prefix.")
  os.makedirs(FLAGS.output, exist_ok=True)
  for name in os.listdir(FLAGS.input):
    if name != WEIGHTS and os.path.isfile(os.path.join(FLAGS.input, name)):
      shutil.copy(os.path.join(FLAGS.input, name), FLAGS.output)
  safetensors_numpy.save_file(shuffled, os.path.join(FLAGS.output, WEIGHTS),
                              metadata={"format": "pt"})
  print(f"Shuffled {count} of {len(tensors)} tensors (prefix "
        f"{FLAGS.prefix!r}, seed {FLAGS.seed}) into {FLAGS.output}.")


if __name__ == "__main__":
  flags.mark_flags_as_required(["input", "output"])
  app.run(main)
