"""Extractive QA heads and their losses: google-research/electra's joint
head (the default) and the BERT-style one.

"electra" (`finetune/qa/qa_tasks.py::get_prediction_module` with
`joint_prediction` and `answerable_classifier`, the reference's defaults):

  start:  dense(1) on every token -> start logits.
  end:    given a start s, [h_s; h_t] -> dense(512) + GELU -> dense(1) for
          every token t. Training conditions on the gold start; evaluation
          on each of the `beam_size` most likely starts, keeping the
          `beam_size` most likely ends of each (a [beam, beam] grid).
  answerable: [h_CLS; sum_t p_start(t) h_t] -> dense(512) + GELU
          -> dense(1). Its logit is trained towards `is_impossible`, so a
          larger logit means "no answer" (SQuAD 1.1 trains it too, with
          every label 0).

Start and end logits are restricted to the context tokens (and the final
[SEP]) plus [CLS]: `1000 * (answer_mask - 1)` is added, as the reference
does, so question tokens and padding get no probability. Every dense layer
starts from glorot-uniform, TF's default for `tf.layers.dense`. There is
no dropout in the head (the encoder has its own).

Per-window loss: (start CE + end CE) / 2 + answerable_weight * BCE, all
against the window's targets ([CLS] = 0 for an unanswerable question or a
window without the answer; `is_impossible` is the question's).

"bert": every token -> dense(2): start and end logits over all unpadded
positions, loss the mean of the two cross-entropies; SQuAD 2.0's null score
is the [CLS] span's (BERT's `run_squad.py`, transformers'
`ElectraForQuestionAnswering`).
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from electra_jax import errors
from electra_jax import model as model_lib
from electra_jax.nn import linear as linear_lib

Array = jax.Array
HEADS = ("electra", "bert")
HIDDEN = 512  # Width of the reference's end and answerable layers.
MASK_PENALTY = 1000.0  # The reference's additive logit mask.
# TF's default kernel initializer for `tf.layers.dense`, as the reference.
kernel_init = nn.initializers.glorot_uniform()


@dataclasses.dataclass(frozen=True)
class QAConfig:
  """The fine-tuning config's `qa` section, field for field."""

  head: str
  beam_size: int
  answerable_weight: float
  n_best_size: int
  max_answer_length: int
  na_threshold: float
  bert_na_threshold: float = 0.0

  @property
  def threshold(self) -> float:
    """The SQuAD 2.0 no-answer threshold of this head, on its own scale:
    the answerable logit (electra) or null minus best span score (bert)."""
    return self.na_threshold if self.head == "electra" else (
        self.bert_na_threshold)

  def __post_init__(self):
    if self.head not in HEADS:
      raise errors.UserError(f"qa.head={self.head!r}; set --config.qa.head "
                             f"to one of {', '.join(HEADS)}.")
    for name in ("beam_size", "n_best_size", "max_answer_length"):
      if getattr(self, name) < 1:
        raise errors.UserError(f"qa.{name}={getattr(self, name)}; set "
                               f"--config.qa.{name} to 1 or more.")


def answer_mask(input_mask: Array, segment_ids: Array) -> Array:
  """[batch, length] 1.0 where a span may start or end: the second segment
  (context and its [SEP]) and [CLS]; 0.0 on the question and padding."""
  mask = input_mask.astype(jnp.float32) * segment_ids.astype(jnp.float32)
  return mask + jax.nn.one_hot(0, mask.shape[-1], dtype=jnp.float32)


def _dense(cfg: model_lib.ModelConfig, features: int,
           names: tuple[str | None, str | None], name: str):
  return linear_lib.Dense(
      features, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
      kernel_init=nn.with_logical_partitioning(kernel_init, names),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros,
                                             (names[1],)), name=name)


class PairDense(nn.Module):
  """`dense(concat([a, b], -1))` with one [2H, features] kernel, computed
  as `a @ W[:H] + b @ W[H:]`: `a` and `b` broadcast against each other
  (a beam of starts against every token) without building the concat."""

  cfg: model_lib.ModelConfig
  features: int

  @nn.compact
  def __call__(self, a: Array, b: Array) -> Array:
    """a [..., H], b [..., H] (broadcastable) -> [..., features]."""
    cfg, h = self.cfg, a.shape[-1]
    kernel = self.param(
        "kernel", nn.with_logical_partitioning(kernel_init, ("embed", "mlp")),
        (2 * h, self.features), cfg.param_dtype)
    bias = self.param(
        "bias", nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)),
        (self.features,), cfg.param_dtype)
    a, b, kernel, bias = nn.dtypes.promote_dtype(a, b, kernel, bias,
                                                 dtype=cfg.dtype)
    return (linear_lib.linear(a, kernel[:h]) + linear_lib.linear(b, kernel[h:])
            + bias)


def _gather(x: Array, index: Array) -> Array:
  """x [B, T, H], index [B, K] -> [B, K, H]."""
  return jnp.take_along_axis(x, index[..., None], axis=1)


class ElectraQAHead(nn.Module):
  """The reference's joint start/end head with its answerable classifier."""

  cfg: model_lib.ModelConfig
  beam_size: int

  @nn.compact
  def __call__(self, x: Array, input_mask: Array, segment_ids: Array,
               start_positions: Array | None = None) -> dict[str, Array]:
    """Logits from the encoder output.

    Args:
      x: [batch, length, H] encoder output.
      input_mask, segment_ids: [batch, length].
      start_positions: [batch] gold starts (training); None evaluates with
        the start beam.

    Returns:
      float32 `start_logits` [B, T], `answerable_logit` [B] and, training,
      `end_logits` [B, T] given the gold start; evaluating,
      `start_top_log_probs`/`start_top_index` [B, K] and
      `end_top_log_probs`/`end_top_index` [B, K, K] (K = min(beam_size, T)).
    """
    cfg = self.cfg
    penalty = MASK_PENALTY * (answer_mask(input_mask, segment_ids) - 1.0)
    start_logits = _dense(cfg, 1, ("embed", None), "start")(x)[..., 0]
    start_logits = start_logits.astype(jnp.float32) + penalty  # [B, T]
    hidden = PairDense(cfg, HIDDEN, name="qa_hidden")
    end_dense = _dense(cfg, 1, ("mlp", None), "qa_logits")
    out = {"start_logits": start_logits}
    if start_positions is not None:
      start_h = _gather(x, start_positions[:, None])  # [B, 1, H]
      h = model_lib.gelu(hidden(start_h, x))  # [B, T, 512]
      out["end_logits"] = (end_dense(h)[..., 0].astype(jnp.float32)
                           + penalty)
    else:
      k = min(self.beam_size, x.shape[1])
      top_lp, top_index = jax.lax.top_k(jax.nn.log_softmax(start_logits), k)
      start_h = _gather(x, top_index)  # [B, K, H]
      h = model_lib.gelu(hidden(start_h[:, :, None], x[:, None]))  # BKT512
      end_logits = (end_dense(h)[..., 0].astype(jnp.float32)
                    + penalty[:, None])  # [B, K, T]
      end_lp, end_index = jax.lax.top_k(jax.nn.log_softmax(end_logits), k)
      out.update(start_top_log_probs=top_lp, start_top_index=top_index,
                 end_top_log_probs=end_lp, end_top_index=end_index)
    # The start distribution's expected token, next to [CLS].
    start_p = jax.nn.softmax(start_logits).astype(x.dtype)
    start_feature = jnp.einsum("BT,BTH->BH", start_p, x)
    a = model_lib.gelu(PairDense(cfg, HIDDEN, name="answerable_hidden")(
        x[:, 0], start_feature))
    out["answerable_logit"] = _dense(cfg, 1, ("mlp", None), "answerable")(
        a)[..., 0].astype(jnp.float32)
    return out


def _nll(logits: Array, positions: Array) -> Array:
  """[B, T] logits, [B] targets -> [B] cross-entropy."""
  logp = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.take_along_axis(logp, positions[:, None], axis=-1)[:, 0]


def per_example_loss(head: str, outputs: dict[str, Array], batch,
                     answerable_weight: float) -> Array:
  """[B] loss of each window (see the module docstring)."""
  if head == "bert":
    mask = batch["input_mask"].astype(bool)
    start = _nll(jnp.where(mask, outputs["start_logits"], -1e9),
                 batch["start_positions"])
    end = _nll(jnp.where(mask, outputs["end_logits"], -1e9),
               batch["end_positions"])
    return (start + end) / 2
  start = _nll(outputs["start_logits"], batch["start_positions"])
  end = _nll(outputs["end_logits"], batch["end_positions"])
  answerable = optax.sigmoid_binary_cross_entropy(
      outputs["answerable_logit"],
      batch["is_impossible"].astype(jnp.float32))
  return (start + end) / 2 + answerable_weight * answerable


def loss(qa: QAConfig, outputs: dict[str, Array], batch):
  """(sum of per-window losses, number of windows); rows with `weight` 0
  do not count."""
  w = batch["weight"]
  per = per_example_loss(qa.head, outputs, batch, qa.answerable_weight)
  return jnp.sum(per * w), jnp.sum(w)
