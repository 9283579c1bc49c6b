"""ELECTRA pretraining objective: masking, fake-token sampling, losses.

Follows google-research/electra (`run_pretraining.py` and
`pretrain/pretrain_helpers.py`). By default the positions to predict are
sampled without replacement (Gumbel-top-k), so every real prediction slot
points at a distinct token; `with_replacement=True` draws them as the
reference does (i.i.d., a position drawn twice is then predicted once).

Everything here is pure `jnp` with explicit PRNG keys and static shapes, so it
runs inside a jitted train step. `max_predictions`, `mask_prob` and
`special_ids` are Python values and must be bound before jitting (e.g. with
`functools.partial`).

Metrics are dicts of name -> (sum, count) float32 scalars. Adding two such
dicts leaf by leaf and dividing at the end (`reduce_metrics`) gives the
right average across steps and hosts. `electra_loss` is the one composition
of the two losses; `train.py` runs it.
"""

from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp

Metrics = dict[str, tuple[jax.Array, jax.Array]]

# Large enough that `exp` of it is exactly 0 in float32, small enough that
# adding Gumbel noise to it stays finite.
_NEG_INF = -1e9


class MaskedInputs(NamedTuple):
  """The masked batch and what the generator must predict.

  Attributes:
    input_ids: [batch, length] int32, the ids after masking.
    positions: [batch, max_predictions] int32; real slots hold distinct
      positions, padded slots any position (use `weights` to tell).
    targets: [batch, max_predictions] int32, the original ids at `positions`.
    weights: [batch, max_predictions] float32, 1.0 for a real prediction and
      0.0 for a padded slot.
  """

  input_ids: jax.Array
  positions: jax.Array
  targets: jax.Array
  weights: jax.Array


def max_predictions_per_seq(mask_prob: float, max_seq_length: int) -> int:
  """The static number of prediction slots, as in the original config."""
  return int((mask_prob + 0.005) * max_seq_length)


def gather_positions(x: jax.Array, positions: jax.Array) -> jax.Array:
  """Gathers per-row positions from a sequence.

  Args:
    x: [batch, length] or [batch, length, dim].
    positions: [batch, num_positions] int, indices into `length`.

  Returns:
    [batch, num_positions] or [batch, num_positions, dim].
  """
  if x.ndim == 3:
    positions = positions[:, :, None]  # [batch, num_positions, 1]
  return jnp.take_along_axis(x, positions, axis=1)


def _scatter_where(
    x: jax.Array, positions: jax.Array, values: jax.Array, keep: jax.Array
) -> jax.Array:
  """[batch, length] `x` with `values` (a scalar or [batch, P]) written at
  [batch, P] `positions` where `keep`, distinct within a row.

  Dropped slots are pointed out of range and discarded by `mode="drop"`, so a
  padded slot can never touch another token.
  """
  batch, length = x.shape
  rows = jnp.arange(batch)[:, None]  # [batch, 1]
  cols = jnp.where(keep, positions, length)  # [batch, num_positions]
  return x.at[rows, cols].set(values, mode="drop")


def _num_to_predict(
    input_mask: jax.Array, mask_prob: float, max_predictions: int
) -> jax.Array:
  """max(1, min(N, round(num_tokens * mask_prob))) per row, as the original.

  `jnp.round` rounds half to even, like `tf.round`.
  """
  num_tokens = jnp.sum(input_mask, axis=-1, dtype=jnp.float32)  # [batch]
  k = jnp.round(num_tokens * mask_prob).astype(jnp.int32)
  return jnp.maximum(1, jnp.minimum(max_predictions, k))  # [batch]


def mask_tokens(
    rng: jax.Array,
    input_ids: jax.Array,
    input_mask: jax.Array,
    *,
    mask_prob: float,
    max_predictions: int,
    mask_id: int,
    special_ids: Sequence[int],
    mask_token_prob: float = 0.85,
    with_replacement: bool = False,
) -> MaskedInputs:
  """Chooses positions to predict and replaces most of them with [MASK].

  Candidates are non-padding tokens whose id is not in `special_ids`. Each
  row gets `max(1, min(N, round(num_tokens * mask_prob)))` real slots, where
  `num_tokens` counts every non-padding token (specials too), or fewer if it
  has fewer candidates (or fewer distinct draws: `with_replacement`, where
  each slot draws a candidate uniformly, as the reference, and a repeated
  position keeps only its first slot; the reference keeps the repeats, so
  that position counts twice in its MLM loss and receives the floor of the
  mean of their sampled ids). Of the real slots, each independently becomes
  `mask_id` with probability `mask_token_prob` and otherwise keeps its id;
  there are no random replacement tokens.

  Args:
    rng: PRNG key.
    input_ids: [batch, length] int.
    input_mask: [batch, length], nonzero for real (non-padding) tokens.
    mask_prob: fraction of tokens to predict.
    max_predictions: N, the static number of slots; at most `length`.
    mask_id: the [MASK] id.
    special_ids: ids never chosen, e.g. (cls_id, sep_id, mask_id).
    mask_token_prob: probability a chosen token is replaced by [MASK].

  Returns:
    `MaskedInputs` with `max_predictions` slots per row.
  """
  batch, length = input_ids.shape
  if max_predictions > length:
    raise ValueError(f"max_predictions={max_predictions} > length={length}")
  input_ids = input_ids.astype(jnp.int32)
  position_rng, mask_rng = jax.random.split(rng)

  candidate = input_mask.astype(bool)  # [batch, length]
  for special_id in special_ids:
    candidate &= input_ids != special_id

  slot = jnp.arange(max_predictions)[None, :]  # [1, N]
  if with_replacement:  # N i.i.d. uniform draws over the candidates.
    positions = jax.random.categorical(
        position_rng, jnp.where(candidate, 0.0, -jnp.inf),
        shape=(max_predictions, batch)).T.astype(jnp.int32)  # [batch, N]
    earlier = positions[:, :, None] == positions[:, None, :]  # [b, j, i]
    repeat = jnp.any(earlier & (slot.T > slot), axis=-1)  # [batch, N]
  else:
    # Gumbel-top-k over log(candidate): a uniformly random ordering of the
    # candidates, all ahead of the non-candidates, without replacement.
    gumbel = jax.random.gumbel(position_rng, (batch, length), jnp.float32)
    scores = jnp.where(candidate, gumbel, _NEG_INF)  # [batch, length]
    _, positions = jax.lax.top_k(scores, max_predictions)  # [batch, N]
    positions = positions.astype(jnp.int32)
    repeat = jnp.zeros((batch, max_predictions), bool)

  k = _num_to_predict(input_mask, mask_prob, max_predictions)  # [batch]
  real = ((slot < k[:, None]) & gather_positions(candidate, positions)
          & ~repeat)

  use_mask = real & (
      jax.random.uniform(mask_rng, real.shape) < mask_token_prob
  )  # [batch, N]
  masked_ids = _scatter_where(input_ids, positions, mask_id, use_mask)
  return MaskedInputs(
      input_ids=masked_ids,
      positions=positions,
      targets=gather_positions(input_ids, positions),
      weights=real.astype(jnp.float32),
  )


_SAMPLE_BLOCK = 128  # Vocabulary block of the two-level inverse-CDF sampler.


def _last_positive(x: jax.Array) -> jax.Array:
  """Index of the last entry > 0 along the last axis (0 if none)."""
  idx = jnp.arange(x.shape[-1], dtype=jnp.int32)
  return jnp.max(jnp.where(x > 0, idx, 0), axis=-1)


def _count_le(cdf: jax.Array, u: jax.Array) -> jax.Array:
  """Number of entries of `cdf` (last axis) that are <= `u`: the index of
  the first entry above `u`, as `searchsorted(side="right")`."""
  return jnp.sum((cdf <= u[..., None]).astype(jnp.int32), axis=-1)


def sample_fake_tokens(
    rng: jax.Array,
    logits: jax.Array,
    temperature: float | jax.Array,
    *,
    disallow: Optional[jax.Array] = None,
) -> jax.Array:
  """Samples one token per slot from softmax(logits / temperature).

  Exact inverse-CDF sampling in float32 (bfloat16 logits are upcast first,
  so the sample is the same as from their float32 values), in two levels:
  the vocabulary is cut into blocks of 128, one uniform draw per slot picks
  a block by its cumulative mass and then a token inside it: one random
  number per slot instead of one per vocabulary entry (Gumbel-max). A
  token of zero probability (a disallowed one) is never drawn, also when
  float rounding puts the draw at the very end of the distribution. No
  gradient flows through.

  Args:
    rng: PRNG key.
    logits: [..., vocab], any float dtype.
    temperature: sampling temperature, > 0.
    disallow: optional [...] int ids that must not be sampled
      (`disallow_correct`: the original tokens).

  Returns:
    [...] int32 sampled ids.
  """
  logits = jax.lax.stop_gradient(logits).astype(jnp.float32) / temperature
  *lead, vocab = logits.shape
  if disallow is not None:
    token = jnp.arange(vocab, dtype=jnp.int32)
    logits = jnp.where(token == disallow[..., None], -jnp.inf, logits)
  # Relative to the largest allowed logit, so that weight is exactly 1.
  weights = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True))
  block = min(_SAMPLE_BLOCK, vocab)
  num_blocks = -(-vocab // block)
  weights = jnp.pad(weights, [(0, 0)] * len(lead)
                    + [(0, num_blocks * block - vocab)])
  weights = weights.reshape(*lead, num_blocks, block)
  block_mass = jnp.sum(weights, axis=-1)  # [..., num_blocks]
  block_cdf = jnp.cumsum(block_mass, axis=-1)
  u = jax.random.uniform(rng, tuple(lead), jnp.float32) * block_cdf[..., -1]
  b = jnp.minimum(_count_le(block_cdf, u), _last_positive(block_mass))
  in_block = jnp.take_along_axis(weights, b[..., None, None],
                                 axis=-2)[..., 0, :]
  below = jnp.take_along_axis(block_cdf - block_mass, b[..., None], -1)[..., 0]
  inner = jnp.minimum(_count_le(below[..., None] + jnp.cumsum(in_block, -1), u),
                      _last_positive(in_block))
  return (b * block + inner).astype(jnp.int32)


def replace_tokens(
    input_ids: jax.Array,
    positions: jax.Array,
    sampled: jax.Array,
    weights: jax.Array,
) -> tuple[jax.Array, jax.Array]:
  """Puts the generator's samples into the sequence for the discriminator.

  Args:
    input_ids: [batch, length] int, the original (unmasked) ids.
    positions: [batch, num_positions] int; the real ones distinct per row.
    sampled: [batch, num_positions] int sampled ids.
    weights: [batch, num_positions], > 0 for real slots. Padded slots
      change nothing.

  Returns:
    fake_ids: [batch, length] int32, the originals with samples written in.
    labels: [batch, length] int32, 1 where the token now differs from the
      original (a sample equal to the original is 0).
  """
  input_ids = input_ids.astype(jnp.int32)
  fake_ids = _scatter_where(
      input_ids, positions, sampled.astype(jnp.int32), weights > 0
  )
  labels = (fake_ids != input_ids).astype(jnp.int32)  # [batch, length]
  return fake_ids, labels


def _weighted_sum(x: jax.Array, w: jax.Array) -> jax.Array:
  return jnp.sum(x.astype(jnp.float32) * w)


def mlm_loss_and_metrics(
    logits: jax.Array,
    targets: jax.Array,
    weights: jax.Array,
    sampled: Optional[jax.Array] = None,
) -> tuple[jax.Array, Metrics]:
  """The generator's masked-LM loss: weighted mean cross entropy.

  Args:
    logits: [batch, num_positions, vocab], any float dtype.
    targets: [batch, num_positions] int original ids.
    weights: [batch, num_positions], 0 for padded slots.
    sampled: optional [batch, num_positions] sampled ids, for
      `sampled_masked_lm_accuracy`.

  Returns:
    The scalar float32 loss and metrics `masked_lm_loss`,
    `masked_lm_accuracy` (and `sampled_masked_lm_accuracy`).
  """
  weights = weights.astype(jnp.float32)  # [batch, N]
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  # A masked sum rather than `take_along_axis`: its gradient is then one
  # fused elementwise pass instead of zeros plus a scatter over the vocab.
  is_target = jnp.arange(log_probs.shape[-1]) == targets[..., None]
  nll = -jnp.sum(jnp.where(is_target, log_probs, 0.0), axis=-1)  # [batch, N]
  total_weight = jnp.sum(weights)
  loss_sum = _weighted_sum(nll, weights)
  loss = loss_sum / (total_weight + 1e-6)

  # The target is the prediction when no logit beats it (a max-reduce and
  # a compare: XLA's argmax over the vocabulary was several times slower).
  # A tie for the maximum counts as 1/ties, the accuracy of breaking it at
  # random: a constant (uniform) generator then scores 1/vocab, not 1.
  top = jnp.max(log_probs, axis=-1, keepdims=True)  # [batch, N, 1]
  ties = jnp.sum((log_probs >= top).astype(jnp.float32), axis=-1)
  correct = jnp.where(-nll >= top[..., 0], 1.0 / ties, 0.0)  # [batch, N]
  metrics = {
      "masked_lm_loss": (loss_sum, total_weight),
      "masked_lm_accuracy": (_weighted_sum(correct, weights), total_weight),
  }
  if sampled is not None:
    metrics["sampled_masked_lm_accuracy"] = (
        _weighted_sum(sampled == targets, weights),
        total_weight,
    )
  return loss, metrics


def disc_loss_and_metrics(
    logits: jax.Array, labels: jax.Array, input_mask: jax.Array
) -> tuple[jax.Array, Metrics]:
  """The discriminator's replaced-token-detection loss over real tokens.

  Args:
    logits: [batch, length], any float dtype; > 0 predicts "replaced".
    labels: [batch, length] int, 1 for replaced tokens.
    input_mask: [batch, length], 0 for padding.

  Returns:
    The scalar float32 loss and metrics `disc_loss`, `disc_accuracy`,
    `disc_precision` and `disc_recall`.
  """
  logits = logits.astype(jnp.float32)  # [batch, length]
  labels = labels.astype(jnp.float32)
  weights = input_mask.astype(jnp.float32)
  # Sigmoid cross entropy, stable for large |logits|.
  losses = jax.nn.softplus(logits) - labels * logits  # [batch, length]
  total_weight = jnp.sum(weights)
  loss_sum = _weighted_sum(losses, weights)
  loss = loss_sum / (total_weight + 1e-6)

  preds = (logits > 0).astype(jnp.float32)  # As the original: 0 -> not.
  true_positives = _weighted_sum(preds * labels, weights)
  metrics = {
      "disc_loss": (loss_sum, total_weight),
      "disc_accuracy": (_weighted_sum(preds == labels, weights), total_weight),
      "disc_precision": (true_positives, _weighted_sum(preds, weights)),
      "disc_recall": (true_positives, _weighted_sum(labels, weights)),
  }
  return loss, metrics


def electra_loss(
    metrics: Metrics,
    *,
    gen_weight: float,
    disc_weight: float,
    counts: Optional[tuple[jax.Array, jax.Array]] = None,
) -> jax.Array:
  """The ELECTRA loss, `gen_weight * MLM + disc_weight * RTD` (MLM only when
  `metrics` has no `disc_loss`: the MLM-only baseline).

  Args:
    metrics: from `mlm_loss_and_metrics` and `disc_loss_and_metrics`, merged.
    gen_weight: weight of the generator's masked-LM loss.
    disc_weight: weight of the replaced-token-detection loss.
    counts: (real prediction slots, real tokens) of the whole batch; each
      loss sum is divided by these, so that the losses of micro-batches add
      up to the batch's. Default: the metrics' own counts.

  Returns:
    The scalar float32 loss.
  """
  if counts is None:
    counts = (metrics["masked_lm_loss"][1],
              metrics.get("disc_loss", (None, None))[1])
  loss = gen_weight * metrics["masked_lm_loss"][0] / (counts[0] + 1e-6)
  if "disc_loss" in metrics:
    loss += disc_weight * metrics["disc_loss"][0] / (counts[1] + 1e-6)
  return loss


def reduce_metrics(metrics: Metrics) -> dict[str, float]:
  """name -> (sum, count) to name -> sum / count, on the host. A count of 0
  gives 0.0, as `tf.metrics.precision` when nothing is predicted positive."""
  metrics = jax.device_get(metrics)
  out = {}
  for name, (total, count) in metrics.items():
    count = float(count)
    out[name] = float(total) / count if count else 0.0
  return out
