"""See what a pretraining run has learned.

  python -m electra_jax.demo --workdir=runs/tiny "The [MASK] sat on the mat."

The generator fills each [MASK] (top-k candidates with probabilities); the
discriminator, given the text with the generator's best guesses filled in,
marks each token with its probability of having been replaced.
"""

import jax
import jax.numpy as jnp
import numpy as np
from absl import app
from absl import flags

from electra_jax import errors
from electra_jax import model as model_lib
from electra_jax import pretrained
from electra_jax import reporting
from electra_jax import train as train_lib
from electra_jax.data import tokenization


MASK_TEXT = "[MASK]"


def encode_with_masks(tok: tokenization.Tokenizer, text: str) -> list[int]:
  """[CLS] text [SEP], with each literal "[MASK]" as the mask id."""
  ids = [tok.special_ids["cls_id"]]
  for i, piece in enumerate(text.split(MASK_TEXT)):
    if i:
      ids.append(tok.special_ids["mask_id"])
    if piece.strip():
      ids.extend(tok.encode(piece.strip()))
  ids.append(tok.special_ids["sep_id"])
  return ids


def run(workdir: str, text: str, top_k: int = 5,
        step: int | None = None) -> dict:
  """Returns {"fills": [[(token, prob), ...] per mask], "tokens": [(token,
  replaced_prob), ...]} for `text`."""
  config, params, _ = pretrained.restore_params(workdir, step)
  tok = tokenization.load_tokenizer(pretrained.tokenizer_path(workdir))
  ids = encode_with_masks(tok, text)
  if len(ids) > config.input.max_seq_length:
    raise errors.UserError(f"The text is {len(ids)} tokens; this model takes at "
                     f"most {config.input.max_seq_length}.")
  ids_arr = jnp.asarray([ids], jnp.int32)
  mask_id = tok.special_ids["mask_id"]
  positions = [i for i, t in enumerate(ids) if t == mask_id]
  filled = list(ids)
  fills = []
  if positions and "generator" in params:
    gen = model_lib.ElectraGenerator(
        train_lib.generator_config(config, config.model.vocab_size))
    logits = gen.apply({"params": model_lib.generator_params(params)},
                       ids_arr, masked_positions=jnp.asarray([positions]))
    probs = np.asarray(jax.nn.softmax(logits[0], axis=-1))  # [P, V]
    for pos, p in zip(positions, probs):
      best = np.argsort(-p)[:top_k]
      fills.append([(tok.id_to_token(int(b)), float(p[b])) for b in best])
      filled[pos] = int(best[0])
  tokens = []
  if "discriminator" in params:
    disc = model_lib.ElectraDiscriminator(
        train_lib.discriminator_config(config, config.model.vocab_size))
    logits = disc.apply({"params": model_lib.discriminator_params(params)},
                        jnp.asarray([filled], jnp.int32))
    replaced = np.asarray(jax.nn.sigmoid(logits[0]))
    tokens = [(tok.id_to_token(t), float(r))
              for t, r in zip(filled[1:-1], replaced[1:-1])]
  return {"fills": fills, "tokens": tokens}


def main(argv):
  if len(argv) != 2:
    raise app.UsageError('Pass one text, e.g. "The [MASK] sat on the mat."')
  reporting.quiet_library_logs()
  f = flags.FLAGS
  result = run(f.workdir, argv[1], f.top_k, f.step)
  for i, fill in enumerate(result["fills"]):
    print(f"[MASK] #{i + 1}: " + "  ".join(f"{t} {p:.3f}" for t, p in fill))
  if result["tokens"]:
    print("Discriminator, P(replaced) per token (generator's fills in):")
    for token, p in result["tokens"]:
      print(f"  {token:>16s} {p:.3f} {'#' * int(round(p * 20))}")


def _define_flags() -> None:
  """Defined only when run as a program, so that importing this module
  never clashes with another entry point's flags."""
  flags.DEFINE_string("workdir", None, "A pretraining run's workdir.")
  flags.DEFINE_integer("top_k", 5, "Candidates shown per [MASK].")
  flags.DEFINE_integer("step", None, "Checkpoint step; default latest.")


def cli() -> None:
  """The `electra-demo` console script."""
  _define_flags()
  flags.mark_flags_as_required(["workdir"])
  errors.run(main)


if __name__ == "__main__":
  cli()
