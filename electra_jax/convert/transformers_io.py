"""Import and export of transformers ELECTRA directories.

A transformers ELECTRA directory holds `config.json` and `model.safetensors`
(or a legacy `pytorch_model.bin`, read only through torch's weights-only
loader, never plain pickle). `ElectraForPreTraining` maps to
`model.ElectraDiscriminator`, `ElectraForMaskedLM` to `model.ElectraGenerator`.
transformers itself is not needed: config and weights are read and written
directly, so export works in a JAX-only environment.
"""

import io
import json
from typing import Any

from etils import epath
import flax.linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
from safetensors import numpy as safetensors_numpy

from electra_jax import errors
from electra_jax import model as model_lib
from electra_jax.convert import names

DISCRIMINATOR = "ElectraForPreTraining"
GENERATOR = "ElectraForMaskedLM"
_SUPPORTED_ACTS = ("gelu",)  # Exact erf GELU, what ELECTRA uses.


class ConversionError(errors.UserError):
  """A transformers directory or param tree that cannot be converted."""


def _read_config(path: str) -> dict[str, Any]:
  if not epath.Path(path).is_dir():
    raise ConversionError(f"{path}: not a directory. Pass a transformers "
                          "ELECTRA directory (config.json + model.safetensors).")
  config_file = epath.Path(path) / "config.json"
  if not config_file.exists():
    raise ConversionError(f"{config_file}: missing; a transformers ELECTRA "
                          "directory needs its config.json.")
  try:
    hf = json.loads(config_file.read_text())
  except json.JSONDecodeError as e:
    raise ConversionError(f"{config_file}: not valid JSON ({e}).") from None
  if hf.get("model_type") != "electra":
    raise ConversionError(
        f"{config_file}: model_type is {hf.get('model_type')!r}, not "
        "'electra'; only ELECTRA checkpoints can be imported.")
  if hf.get("hidden_act", "gelu") not in _SUPPORTED_ACTS:
    raise ConversionError(
        f"{config_file}: hidden_act={hf['hidden_act']!r} is not supported "
        f"(only {_SUPPORTED_ACTS}).")
  if hf.get("position_embedding_type", "absolute") != "absolute":
    raise ConversionError(
        f"{config_file}: position_embedding_type="
        f"{hf['position_embedding_type']!r} is not supported (absolute only).")
  return hf


def config_from_transformers(hf: dict[str, Any]) -> model_lib.ModelConfig:
  """A `ModelConfig` from a transformers ELECTRA config dict."""
  return model_lib.ModelConfig(
      vocab_size=hf["vocab_size"],
      embedding_size=hf.get("embedding_size") or hf["hidden_size"],
      hidden_size=hf["hidden_size"],
      num_hidden_layers=hf["num_hidden_layers"],
      num_attention_heads=hf["num_attention_heads"],
      intermediate_size=hf["intermediate_size"],
      hidden_dropout_prob=hf.get("hidden_dropout_prob", 0.1),
      attention_probs_dropout_prob=hf.get("attention_probs_dropout_prob", 0.1),
      max_position_embeddings=hf.get("max_position_embeddings", 512),
      type_vocab_size=hf.get("type_vocab_size", 2),
      initializer_range=hf.get("initializer_range", 0.02),
      layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
  )


def config_to_transformers(
    cfg: model_lib.ModelConfig, architecture: str, **extra: Any
) -> dict[str, Any]:
  """A transformers `ElectraConfig` dict for `cfg`."""
  return {
      "architectures": [architecture],
      "model_type": "electra",
      "vocab_size": cfg.vocab_size,
      "embedding_size": cfg.embedding_size,
      "hidden_size": cfg.hidden_size,
      "num_hidden_layers": cfg.num_hidden_layers,
      "num_attention_heads": cfg.num_attention_heads,
      "intermediate_size": cfg.intermediate_size,
      "hidden_act": "gelu",
      "hidden_dropout_prob": cfg.hidden_dropout_prob,
      "attention_probs_dropout_prob": cfg.attention_probs_dropout_prob,
      "max_position_embeddings": cfg.max_position_embeddings,
      "type_vocab_size": cfg.type_vocab_size,
      "initializer_range": cfg.initializer_range,
      "layer_norm_eps": cfg.layer_norm_eps,
      "position_embedding_type": "absolute",
      "tie_word_embeddings": True,
      "pad_token_id": 0,
      **extra,
  }


def _architecture(hf: dict[str, Any], tensors: dict[str, np.ndarray],
                  path: str) -> str:
  archs = hf.get("architectures") or []
  for arch in (DISCRIMINATOR, GENERATOR):
    if arch in archs:
      return arch
  if any(k.startswith("discriminator_predictions.") for k in tensors):
    return DISCRIMINATOR
  if any(k.startswith("generator_predictions.") for k in tensors):
    return GENERATOR
  raise ConversionError(
      f"{path}: neither an ElectraForPreTraining (discriminator) nor an "
      f"ElectraForMaskedLM (generator) checkpoint (architectures={archs}).")


def read_tensors(path: str) -> tuple[dict[str, np.ndarray], str]:
  """The state dict of a transformers directory as numpy, and its file."""
  st = epath.Path(path) / "model.safetensors"
  if st.exists():
    return safetensors_numpy.load(st.read_bytes()), str(st)
  binary = epath.Path(path) / "pytorch_model.bin"
  if binary.exists():
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError:
      raise ConversionError(
          f"{binary}: reading PyTorch .bin weights needs torch; install it "
          "or convert the directory to model.safetensors.") from None
    # weights_only=True: the safe loader, which refuses arbitrary pickles.
    data = io.BytesIO(binary.read_bytes())
    state = torch.load(data, map_location="cpu", weights_only=True)
    return {k: v.float().numpy() for k, v in state.items()}, str(binary)
  raise ConversionError(f"{path}: no model.safetensors or pytorch_model.bin.")


def module_for(cfg: model_lib.ModelConfig, architecture: str) -> nn.Module:
  if architecture == DISCRIMINATOR:
    return model_lib.ElectraDiscriminator(cfg)
  return model_lib.ElectraGenerator(cfg)


def _param_shapes(module: nn.Module) -> dict[tuple[str, ...], tuple]:
  ids = jnp.zeros((1, 1), jnp.int32)
  shapes = jax.eval_shape(module.init, jax.random.key(0), ids)
  flat = traverse_util.flatten_dict(nn.unbox(shapes)["params"])
  return {k: v.shape for k, v in flat.items()}


def params_from_tensors(
    module: nn.Module, tensors: dict[str, np.ndarray], source: str
) -> dict:
  """Builds `module`'s params from a transformers state dict.

  Raises:
    ConversionError: naming `source` and the parameter, for a missing or
      misshaped tensor, or one that electra_jax has no place for.
  """
  flat, used = {}, set()
  for path, shape in _param_shapes(module).items():
    key, transpose = names.to_transformers(path)
    if key not in tensors:
      raise ConversionError(f"{source}: missing parameter {key} (needed for "
                            f"{'/'.join(path)}).")
    value = np.asarray(tensors[key], np.float32)
    value = value.T if transpose else value
    if value.shape != shape:
      raise ConversionError(
          f"{source}: parameter {key} has shape {tensors[key].shape}; the "
          f"config implies {shape[::-1] if transpose else shape}.")
    flat[path] = value  # numpy: placed later, wherever the caller wants.
    used.add(key)
  lm_head = tensors.get(names.TIED_LM_HEAD)
  if lm_head is not None:
    used.add(names.TIED_LM_HEAD)
    table = flat[("embeddings", "word_embeddings", "embedding")]
    if lm_head.shape != table.shape or not np.allclose(lm_head, table):
      raise ConversionError(
          f"{source}: {names.TIED_LM_HEAD} differs from the word embeddings; "
          "electra_jax ties the generator's output layer to them.")
  unexpected = sorted(set(tensors) - used - set(names.IGNORED_KEYS))
  if unexpected:
    raise ConversionError(
        f"{source}: unexpected parameters with no electra_jax equivalent: "
        f"{', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}")
  return traverse_util.unflatten_dict(flat)


def load_transformers(path: str) -> tuple[nn.Module, dict]:
  """Imports a transformers ELECTRA directory.

  Args:
    path: a directory with `config.json` and `model.safetensors` (or
      `pytorch_model.bin`) of an `ElectraForPreTraining` (discriminator) or
      `ElectraForMaskedLM` (generator).

  Returns:
    `(module, params)` such that `module.apply({"params": params}, input_ids,
    attention_mask, token_type_ids)` gives replaced-token logits
    [batch, length] (discriminator) or vocabulary logits
    [batch, length, vocab] (generator).
  """
  hf = _read_config(path)
  tensors, source = read_tensors(path)
  architecture = _architecture(hf, tensors, path)
  try:
    cfg = config_from_transformers(hf)
  except KeyError as e:
    raise ConversionError(f"{epath.Path(path) / 'config.json'}: missing "
                          f"field {e.args[0]!r}.") from None
  module = module_for(cfg, architecture)
  return module, params_from_tensors(module, tensors, source)


def save_transformers(module: nn.Module, params: dict, path: str) -> None:
  """Writes `params` as a transformers directory (config + safetensors).

  Args:
    module: an `ElectraDiscriminator` or `ElectraGenerator`.
    params: its params (as from `load_transformers` or a pretraining run via
      `model.discriminator_params` / `model.generator_params`).
    path: output directory; created if needed. Same params in, the same
      bytes out.
  """
  if isinstance(module, model_lib.ElectraDiscriminator):
    architecture = DISCRIMINATOR
  elif isinstance(module, model_lib.ElectraGenerator):
    architecture = GENERATOR
  else:
    raise ConversionError(f"Cannot export a {type(module).__name__}; pass an "
                          "ElectraDiscriminator or ElectraGenerator.")
  expected = _param_shapes(module)
  flat = traverse_util.flatten_dict(nn.unbox(params))
  if set(flat) != set(expected):
    missing = sorted("/".join(k) for k in set(expected) - set(flat))
    extra = sorted("/".join(k) for k in set(flat) - set(expected))
    raise ConversionError(f"params do not match the {architecture} config: "
                          f"missing {missing[:5]}, unexpected {extra[:5]}.")
  tensors = {}
  for leaf_path, value in flat.items():
    key, transpose = names.to_transformers(leaf_path)
    value = np.asarray(jax.device_get(value), np.float32)
    tensors[key] = np.ascontiguousarray(value.T if transpose else value)
  path = epath.Path(path)
  path.mkdir(parents=True, exist_ok=True)
  (path / "model.safetensors").write_bytes(
      safetensors_numpy.save(tensors, metadata={"format": "pt"}))
  (path / "config.json").write_text(json.dumps(
      config_to_transformers(module.cfg, architecture), indent=2,
      sort_keys=True))
