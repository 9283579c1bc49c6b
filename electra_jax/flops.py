"""Analytic FLOP counts of the ELECTRA train step, and device peaks for MFU.

Counts multiply-adds of matmuls as 2 FLOPs and a training step as 3x the
forward pass (backward is twice the forward), the usual convention
(PaLM appendix B, MaxText `calculate_tflops_training_per_device`). The
generator's head is counted only at the masked positions, where it runs.
"""

import jax

from electra_jax import model as model_lib

# Dense bf16 peak FLOP/s per device, by `device_kind` prefix.
PEAK_FLOPS = {
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v5": 459e12,
    "TPU v6 lite": 918e12,
    "TPU v6e": 918e12,
    "NVIDIA H200": 989e12,
    "NVIDIA H100": 989e12,
    "NVIDIA A100": 312e12,
}


def _encoder_forward(cfg: model_lib.ModelConfig, length: int) -> float:
  """Forward FLOPs of embeddings_project + layers for one sequence."""
  h, layers = cfg.hidden_size, cfg.num_hidden_layers
  per_token = 4 * h * h + 2 * h * cfg.intermediate_size  # Dense params.
  if cfg.embedding_size != h:
    per_token_proj = cfg.embedding_size * h
  else:
    per_token_proj = 0
  dense = 2 * length * (layers * per_token + per_token_proj)
  attention = layers * 2 * 2 * length * length * h  # QK^T and PV.
  return float(dense + attention)


def train_flops_per_sequence(
    gen: model_lib.ModelConfig | None, disc: model_lib.ModelConfig | None, *,
    length: int, max_predictions: int) -> dict[str, float]:
  """Training FLOPs per sequence: `generator`, `discriminator`, `total`.

  Args:
    gen: the generator's config; None when it is not trained (the uniform
      ablation).
    disc: the discriminator's; None for the MLM-only baseline.
    length: tokens per sequence.
    max_predictions: generator head positions per sequence.
  """
  out = {"generator": 0.0, "discriminator": 0.0}
  if gen is not None:
    head = 2 * max_predictions * (gen.hidden_size * gen.embedding_size
                                  + gen.embedding_size * gen.vocab_size)
    out["generator"] = 3 * (_encoder_forward(gen, length) + head)
  if disc is not None:
    head = 2 * length * (disc.hidden_size * disc.hidden_size
                         + disc.hidden_size)
    out["discriminator"] = 3 * (_encoder_forward(disc, length) + head)
  out["total"] = out["generator"] + out["discriminator"]
  return out


def peak_flops(device: jax.Device | None = None) -> float | None:
  """The device's dense bf16 peak FLOP/s, or None when unknown (CPUs)."""
  kind = (device or jax.devices()[0]).device_kind
  for prefix, flops in PEAK_FLOPS.items():
    if kind.startswith(prefix):
      return flops
  return None
