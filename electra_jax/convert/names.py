"""The rename table between electra_jax params and transformers ELECTRA.

One rule per module, no other logic: a flax module path maps to a
transformers module path, and the leaf names map as kernel -> weight
(transposed: flax stores [in, out], torch [out, in]), embedding -> weight,
scale -> weight, bias -> bias. The generator's `output_bias` is
`generator_lm_head.bias`; its tied `generator_lm_head.weight` is the word
embedding table and is not a parameter of its own.
"""

import re

# (flax module path regex, transformers module path template).
_MODULE_RULES = (
    (r"embeddings/(\w+)", r"electra.embeddings.\1"),
    (r"(?:generator|discriminator)/encoder/embeddings_project",
     "electra.embeddings_project"),
    (r"(?:generator|discriminator)/encoder/layer_(\d+)/(query|key|value)",
     r"electra.encoder.layer.\1.attention.self.\2"),
    (r"(?:generator|discriminator)/encoder/layer_(\d+)/attention_output",
     r"electra.encoder.layer.\1.attention.output.dense"),
    (r"(?:generator|discriminator)/encoder/layer_(\d+)/attention_LayerNorm",
     r"electra.encoder.layer.\1.attention.output.LayerNorm"),
    (r"(?:generator|discriminator)/encoder/layer_(\d+)/intermediate",
     r"electra.encoder.layer.\1.intermediate.dense"),
    (r"(?:generator|discriminator)/encoder/layer_(\d+)/output",
     r"electra.encoder.layer.\1.output.dense"),
    (r"(?:generator|discriminator)/encoder/layer_(\d+)/output_LayerNorm",
     r"electra.encoder.layer.\1.output.LayerNorm"),
    (r"discriminator/head_dense", "discriminator_predictions.dense"),
    (r"discriminator/head_prediction",
     "discriminator_predictions.dense_prediction"),
    (r"generator/head_dense", "generator_predictions.dense"),
    (r"generator/head_LayerNorm", "generator_predictions.LayerNorm"),
)

_LEAF_NAMES = {"kernel": "weight", "embedding": "weight", "scale": "weight",
               "bias": "bias"}

# transformers keys that are buffers or tied copies, not parameters.
IGNORED_KEYS = ("electra.embeddings.position_ids",
                "electra.embeddings.token_type_ids")
TIED_LM_HEAD = "generator_lm_head.weight"


def to_transformers(path: tuple[str, ...]) -> tuple[str, bool]:
  """Maps a flax param path to (transformers key, needs transpose).

  Args:
    path: the key path of one leaf in an `ElectraDiscriminator` or
      `ElectraGenerator` param tree, e.g. `("embeddings", "LayerNorm",
      "scale")`.

  Returns:
    The transformers state-dict key and whether the array is transposed.
  """
  if path == ("generator", "output_bias"):
    return "generator_lm_head.bias", False
  *module, leaf = path
  module_path = "/".join(module)
  for pattern, template in _MODULE_RULES:
    if re.fullmatch(pattern, module_path):
      name = re.sub(pattern, template, module_path)
      return f"{name}.{_LEAF_NAMES[leaf]}", leaf == "kernel"
  raise KeyError(f"No transformers name for parameter {'/'.join(path)}.")
