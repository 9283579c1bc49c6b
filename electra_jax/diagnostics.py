"""What a run has learned, beyond its losses: the evaluation's measures.

`disc_auc` ranks the discriminator's scores; `unigram_fakes` gives it fakes
drawn by word frequency, which only context can detect; `disc_logit_spread`
sees a collapse (one logit for every position); `context_gain` says whether
the generator's guesses use their context. All but `disc_auc` (host-side
numpy) are pure `jnp`, returning (sum, count) pairs as `objective`'s metrics.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt

from electra_jax import model as model_lib
from electra_jax import objective


def disc_auc(
    probs: npt.ArrayLike, labels: npt.ArrayLike, weights: npt.ArrayLike
) -> float:
  """Exact ROC AUC on the host; tied scores count one half.

  Equals the probability that a random positive outranks a random negative,
  each drawn with probability proportional to its weight (with 0/1 weights:
  the rank-based AUC over tokens with weight 1).

  Args:
    probs: [...] scores, e.g. sigmoid of the discriminator logits.
    labels: [...] 0/1 labels, same shape.
    weights: [...] non-negative weights, e.g. the input mask.

  Returns:
    The AUC, or nan when there are no positives or no negatives.
  """
  probs = np.asarray(probs, np.float64).ravel()
  labels = np.asarray(labels).ravel() > 0
  weights = np.asarray(weights, np.float64).ravel()
  # Group equal scores; sum the positive and negative weight of each group.
  unique, group = np.unique(probs, return_inverse=True)  # Sorted ascending.
  pos = np.bincount(group, weights * labels, minlength=len(unique))
  neg = np.bincount(group, weights * ~labels, minlength=len(unique))
  total_pos, total_neg = pos.sum(), neg.sum()
  if total_pos <= 0 or total_neg <= 0:
    return float("nan")
  neg_below = np.cumsum(neg) - neg  # Negative weight strictly below a group.
  wins = np.sum(pos * (neg_below + 0.5 * neg))
  return float(wins / (total_pos * total_neg))


def unigram_fakes(params, batch, masked: objective.MaskedInputs,
                  rng: jax.Array, unigram_log_probs: jax.Array, *,
                  model: nn.Module):
  """The discriminator on the same positions filled from the unigram
  distribution: fakes as frequent as real tokens, so that only context
  tells them apart, on a task that does not move as the generator learns.
  """
  sampled = jax.random.categorical(rng, unigram_log_probs,
                                   shape=masked.positions.shape)
  fake_ids, labels = objective.replace_tokens(
      batch["input_ids"], masked.positions, sampled, masked.weights)
  logits = model.apply(
      {"params": params}, fake_ids, batch["input_mask"],
      batch["segment_ids"], True,
      method=model_lib.ElectraPretrainingModel.discriminator_logits)
  return jax.nn.sigmoid(logits), labels


def disc_logit_spread(
    logits: jax.Array, input_mask: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """Per-sequence std of the [batch, length] replaced-token logits over the
  real tokens (`input_mask`), as a (sum over sequences, number of sequences
  with a real token) metric pair. A collapsed discriminator gives every token
  of a sequence the same logit (its representations no longer differ between
  positions), whatever the input; a healthy one spreads them by a few units.
  """
  logits = logits.astype(jnp.float32)
  w = input_mask.astype(jnp.float32)  # [batch, length]
  n = jnp.sum(w, axis=-1)  # [batch]
  mean = jnp.sum(logits * w, axis=-1) / jnp.maximum(n, 1.0)
  var = jnp.sum(w * (logits - mean[:, None]) ** 2, axis=-1) / jnp.maximum(
      n, 1.0)
  return jnp.sum(jnp.sqrt(var)), jnp.sum((n > 0).astype(jnp.float32))


def context_gain(
    logits: jax.Array,
    targets: jax.Array,
    weights: jax.Array,
    at_mask: jax.Array,
    unigram_log_probs: jax.Array,
) -> tuple[jax.Array, jax.Array]:
  """How much better than word frequency the generator predicts a [MASK].

  The mean over real slots whose input is `[MASK]` (`at_mask`; a kept
  original token could be copied) of the unigram model's cross entropy
  minus the generator's, in nats, as a (sum, count) metric pair. A
  generator that has learned only the word frequencies scores about 0,
  whatever its accuracy; one that reads its context scores above 0.

  Args:
    logits: [batch, num_positions, vocab] generator logits.
    targets: [batch, num_positions] original ids.
    weights: [batch, num_positions], 0 for padded slots.
    at_mask: [batch, num_positions] bool, the slot's input is `[MASK]`.
    unigram_log_probs: [vocab] log frequencies; -inf entries (ids never
      seen) count as the least frequent seen id.
  """
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  is_target = jnp.arange(log_probs.shape[-1]) == targets[..., None]
  model_nll = -jnp.sum(jnp.where(is_target, log_probs, 0.0), axis=-1)
  uni = unigram_log_probs.astype(jnp.float32)
  floor = jnp.min(jnp.where(jnp.isfinite(uni), uni, 0.0))
  uni_nll = -jnp.where(jnp.isfinite(uni), uni, floor)[targets]
  w = weights.astype(jnp.float32) * at_mask.astype(jnp.float32)
  return jnp.sum((uni_nll - model_nll) * w), jnp.sum(w)
