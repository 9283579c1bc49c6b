"""Training-health checks on evaluation metrics: the discriminator collapse.

A collapsed ELECTRA discriminator predicts the replaced-token base rate for
every token: its eval AUC sits at 0.5 and its logits no longer vary across
the positions of a sequence, because its representations have become the
same vector at every position. Once there it does not come back, so the loop
says so as soon as it is seen, with what to change.
"""

from typing import Mapping, Optional

# Nats by which the generator's [MASK] predictions must beat the training
# text's word frequencies to count as reading their context; half of what
# the previous word alone gives on English prose (a bigram gains ~1.2).
CONTEXT_GAIN = 0.5

ADVICE = (
    "The discriminator has collapsed: it gives every token the same "
    "replaced-token probability (eval disc_auc {auc:.3f}, logit std across "
    "positions {std:.4f}). It learned the generator's token frequencies, "
    "then lost them once the generator sampled by frequency, and nothing "
    "contextual is left. Sample fakes at --config.objective.temperature=2 "
    "(as configs/mini.py; a lower learning rate only slows the collapse), "
    "and see README 'Does it learn? Healthy and collapsed runs'."
)


def collapse_warning(scalars: Mapping[str, float], step: int, *,
                     num_warmup_steps: int, min_auc: float,
                     min_logit_std: float) -> Optional[str]:
  """Returns a warning if eval `scalars` show a collapsed discriminator.

  Checked only after warmup (before it, an AUC near 0.5 is the start of
  training). Collapse is an AUC at most `min_auc` or a per-sequence logit
  standard deviation below `min_logit_std`.

  Args:
    scalars: eval metrics, with `disc_auc` and `disc_logit_std` for an
      ELECTRA run (an MLM-only run has neither and is never flagged).
    step: the step evaluated.
    num_warmup_steps: the learning-rate warmup.
    min_auc: the largest AUC counted as chance.
    min_logit_std: the smallest logit spread counted as alive.

  Returns:
    The warning text, or None for a healthy (or not yet judged) run.
  """
  if step <= num_warmup_steps or "disc_auc" not in scalars:
    return None
  auc = scalars["disc_auc"]
  std = scalars.get("disc_logit_std", float("inf"))
  if auc <= min_auc or std < min_logit_std:
    return ADVICE.format(auc=auc, std=std)
  return None


def summary(scalars: Mapping[str, float]) -> str:
  """One plain sentence on the final evaluation, for the end of a run."""
  mlm = (f"the generator fills [MASK] correctly "
         f"{scalars['masked_lm_accuracy']:.1%} of the time")
  gain = scalars.get("masked_lm_context_gain")
  if gain is not None:
    reads = ("reads its context" if gain >= CONTEXT_GAIN
             else "still guesses mostly by word frequency")
    mlm += (f" and {reads} ({gain:.2f} nats better than word frequency at "
            f"[MASK])")
  if "disc_auc" not in scalars:
    return f"Final eval (MLM only): {mlm}."
  if scalars.get("disc_collapsed"):
    verdict = "collapsed: see the warning above"
  elif scalars["disc_auc"] < 0.7:
    verdict = "barely above chance"
  elif scalars["disc_auc_unigram"] < 0.6:
    verdict = "learning, so far mostly from which tokens are rare"
  else:
    verdict = "learning, from context"
  return (f"Final eval: the discriminator ranks a replaced token above an "
          f"original one with probability {scalars['disc_auc']:.3f} (AUC; "
          f"chance is 0.5), {scalars['disc_auc_unigram']:.3f} on fakes drawn "
          f"by frequency, which only context can detect; {mlm}. "
          f"Discriminator: {verdict}.")
