"""A pretraining model's params from a transformers discriminator+generator.

Released ELECTRA checkpoints come as two transformers directories that were
trained with shared embeddings. Importing both gives the params of one
`model.ElectraPretrainingModel`, so pretraining can continue from them.
"""

import numpy as np

from electra_jax import model as model_lib
from electra_jax.convert import transformers_io as io


def load_pretraining_pair(
    discriminator_path: str,
    generator_path: str,
    untied_generator_embeddings: bool = False,
) -> tuple[model_lib.ModelConfig, model_lib.ModelConfig, dict]:
  """Imports both halves of an ELECTRA into pretraining params.

  Args:
    discriminator_path: an `ElectraForPreTraining` directory.
    generator_path: an `ElectraForMaskedLM` directory.
    untied_generator_embeddings: keep the generator's embeddings separate
      (`generator_embeddings`) instead of requiring them to equal the
      discriminator's.

  Returns:
    (discriminator config, generator config, params with keys `embeddings`,
    `discriminator`, `generator` and, when untied, `generator_embeddings`).
  """
  disc_module, disc = io.load_transformers(discriminator_path)
  gen_module, gen = io.load_transformers(generator_path)
  for module, path, want in ((disc_module, discriminator_path,
                              model_lib.ElectraDiscriminator),
                             (gen_module, generator_path,
                              model_lib.ElectraGenerator)):
    if not isinstance(module, want):
      raise io.ConversionError(
          f"{path}: expected an {want.__name__} checkpoint, found "
          f"{type(module).__name__}.")
  params = {"embeddings": disc["embeddings"],
            "discriminator": disc["discriminator"],
            "generator": gen["generator"]}
  if untied_generator_embeddings:
    params["generator_embeddings"] = gen["embeddings"]
  else:
    for name, table in disc["embeddings"].items():
      other = gen["embeddings"][name]
      same = all(
          a.shape == b.shape and np.array_equal(a, b)
          for a, b in zip(_leaves(table), _leaves(other)))
      if not same:
        raise io.ConversionError(
            f"{generator_path}: generator embedding {name} differs from the "
            f"discriminator's in {discriminator_path}; they were not trained "
            "with shared embeddings. Use untied_generator_embeddings=True "
            "(config.generator.untied_generator_embeddings).")
  return disc_module.cfg, gen_module.cfg, params


def _leaves(tree):
  return [np.asarray(x) for x in
          (tree.values() if isinstance(tree, dict) else [tree])]
