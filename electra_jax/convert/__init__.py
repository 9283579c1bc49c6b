"""Weight conversion between electra_jax and transformers ELECTRA.

  module, params = electra_jax.convert.load_transformers(path)
  logits = module.apply({"params": params}, input_ids, attention_mask,
                        token_type_ids)
  electra_jax.convert.save_transformers(module, params, out_path)
"""

from electra_jax.convert.pretraining import load_pretraining_pair
from electra_jax.convert.transformers_io import ConversionError
from electra_jax.convert.transformers_io import load_transformers
from electra_jax.convert.transformers_io import save_transformers

__all__ = ["ConversionError", "load_pretraining_pair", "load_transformers",
           "save_transformers"]
