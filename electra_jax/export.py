"""Export a pretraining run to transformers directories.

  python -m electra_jax.export --workdir=runs/small --output=exported/small

writes `OUT/discriminator` (`ElectraForPreTraining`) and `OUT/generator`
(`ElectraForMaskedLM`): `config.json`, `model.safetensors`, the run's
tokenizer file, and its transformers twin (`tokenizer.json`,
`tokenizer_config.json`, `special_tokens_map.json`, see
`convert.tokenizer_json`), so that

  transformers.AutoTokenizer.from_pretrained("OUT/discriminator")
  transformers.pipeline("fill-mask", model="OUT/generator")

work on the export and give electra_jax's ids. The discriminator directory
is also what fine-tuning restores (`pretrained.load_discriminator`). Same
params in, the same bytes out.
"""

from absl import app
from absl import flags
from absl import logging
from etils import epath

from electra_jax import convert
from electra_jax import errors
from electra_jax import model as model_lib
from electra_jax import pretrained
from electra_jax import reporting
from electra_jax import train as train_lib
from electra_jax.convert import tokenizer_json
from electra_jax.data import input_pipeline
from electra_jax.data import tokenization


def _write_tokenizer(workdir: str, out: str, model_max_length: int) -> None:
  """The run's tokenizer file as it is, plus what transformers loads."""
  src = epath.Path(pretrained.tokenizer_path(workdir))
  epath.Path(out).mkdir(parents=True, exist_ok=True)
  src.copy(epath.Path(out) / src.name, overwrite=True)
  lowercase = True  # Unused by sentencepiece: its model holds its rules.
  if src.name.endswith(".txt"):
    lowercase = input_pipeline.load_metadata(str(src.parent))["lowercase"]
  tok = tokenization.load_tokenizer(str(src), lowercase=lowercase)
  try:
    tokenizer_json.write(tok, out, model_max_length)
  except tokenizer_json.UnsupportedTokenizer as e:
    logging.warning("%s transformers.AutoTokenizer will not load %s; the "
                    "model file is there for sentencepiece itself.", e, out)


def export(workdir: str, output: str, step: int | None = None) -> list[str]:
  """Writes the run's discriminator (and generator) as transformers dirs."""
  config, params, step = pretrained.restore_params(workdir, step)
  written = []
  if "discriminator" in params:
    module = model_lib.ElectraDiscriminator(
        train_lib.discriminator_config(config, config.model.vocab_size))
    written.append(str(epath.Path(output) / "discriminator"))
    convert.save_transformers(module, model_lib.discriminator_params(params),
                              written[-1])
  if "generator" in params:
    module = model_lib.ElectraGenerator(
        train_lib.generator_config(config, config.model.vocab_size))
    written.append(str(epath.Path(output) / "generator"))
    convert.save_transformers(module, model_lib.generator_params(params),
                              written[-1])
  for out in written:
    _write_tokenizer(workdir, out, config.model.max_position_embeddings)
  logging.info("Exported step %d of %s to %s.", step, workdir,
               ", ".join(written))
  return written


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  reporting.quiet_library_logs()
  f = flags.FLAGS
  errors.check_writable(f.output)
  for path in export(f.workdir, f.output, f.step):
    print(path)


def _define_flags() -> None:
  """Defined only when run as a program, so that importing this module
  never clashes with another entry point's flags."""
  flags.DEFINE_string("workdir", None, "A pretraining run's workdir.")
  flags.DEFINE_string("output", None, "Output directory.")
  flags.DEFINE_integer("step", None, "Checkpoint step; default latest.")


def cli() -> None:
  """The `electra-export` console script."""
  _define_flags()
  flags.mark_flags_as_required(["workdir", "output"])
  errors.run(main)


if __name__ == "__main__":
  cli()
