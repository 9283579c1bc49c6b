"""Task models: the pretrained ELECTRA encoder plus a freshly initialised head.

`TaskModel` reuses `model.Embeddings` and `model.Encoder` under the same
module names as the discriminator, so its params are

  {"embeddings": ...,            <- pretrained["embeddings"]
   "encoder": ...,               <- pretrained["discriminator"]["encoder"]
   "head": ...}                  <- new (one of the heads below)

and restoring is a copy of two subtrees (`merge_pretrained`); the
discriminator's replaced-token head (`discriminator/head_*`) is dropped.

Heads (all logits in float32, whatever the compute dtype):

  classification/regression, "official" (google-research/electra
    `classification_tasks.py`): [CLS] -> dropout -> dense(num_outputs).
  classification/regression, "transformers" (`ElectraClassificationHead`):
    [CLS] -> dropout -> dense(H) -> GELU -> dropout -> dense(num_outputs).
  tagging, "official" (`tagging_tasks.py`): every token -> dense(num_tags);
    "transformers" (`ElectraForTokenClassification`) adds dropout first.
  qa: `qa_head` by `config.qa.head`: "electra" (the reference's joint
    start/end head with its answerable classifier) or "bert" (every token
    -> dense(2), truncated-normal init as transformers').

"official" dense layers start as the reference's `tf.layers.dense` with no
initializer, i.e. TF's glorot uniform; "transformers" ones as transformers'
(normal(initializer_range), truncated here as the encoder's).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from electra_jax import errors
from electra_jax import model as model_lib
from electra_jax.finetune import qa_head
from electra_jax.nn import init as init_lib

Array = jax.Array
KINDS = ("classification", "regression", "tagging", "qa")
HEAD_STYLES = ("official", "transformers")


def _kernel_init(style: str):
  """TF's default for the reference's heads; else the model's."""
  return init_lib.tf_dense if style == "official" else None


class SequenceHead(nn.Module):
  """Classification or regression from the [CLS] vector."""

  cfg: model_lib.ModelConfig
  num_outputs: int
  style: str = "official"

  @nn.compact
  def __call__(self, x: Array, deterministic: bool) -> Array:
    """[batch, length, H] -> [batch, num_outputs] float32."""
    cfg = self.cfg
    dropout = nn.Dropout(cfg.hidden_dropout_prob)
    x = x[:, 0]  # [B, H]: the [CLS] token; ELECTRA has no pooler.
    if self.style == "transformers":
      x = dropout(x, deterministic=deterministic)
      x = model_lib.gelu(model_lib.dense(
          cfg, cfg.hidden_size, ("embed", "mlp"), "dense")(x))
    x = dropout(x, deterministic=deterministic)
    in_axis = "mlp" if self.style == "transformers" else "embed"
    x = model_lib.dense(cfg, self.num_outputs, (in_axis, None), "output",
                        _kernel_init(self.style))(x)
    return x.astype(jnp.float32)


class TokenHead(nn.Module):
  """Per-token logits: tagging (with dropout) or span start/end (without)."""

  cfg: model_lib.ModelConfig
  num_outputs: int
  dropout: bool = True
  style: str = "official"  # The kernel init (see the module docstring).

  @nn.compact
  def __call__(self, x: Array, deterministic: bool) -> Array:
    """[batch, length, H] -> [batch, length, num_outputs] float32."""
    if self.dropout:
      x = nn.Dropout(self.cfg.hidden_dropout_prob)(
          x, deterministic=deterministic)
    x = model_lib.dense(self.cfg, self.num_outputs, ("embed", None),
                        "output", _kernel_init(self.style))(x)
    return x.astype(jnp.float32)


class TaskModel(nn.Module):
  """ELECTRA encoder + task head.

  Outputs by `kind`: classification [B, num_labels] logits; regression [B]
  scores; tagging [B, T, num_labels] logits; qa a dict of float32 arrays,
  `start_logits` [B, T] and the rest as `qa_head` says ("bert":
  `end_logits` [B, T]).
  """

  cfg: model_lib.ModelConfig
  kind: str
  num_labels: int = 1
  head_style: str = "official"
  qa: qa_head.QAConfig | None = None  # Needed when kind == "qa".

  def setup(self):
    if self.kind not in KINDS:
      raise errors.UserError(f"Unknown task kind {self.kind!r}; expected one of "
                       f"{', '.join(KINDS)}.")
    if self.head_style not in HEAD_STYLES:
      raise errors.UserError(f"Unknown head {self.head_style!r}; expected one of "
                       f"{', '.join(HEAD_STYLES)}.")
    self.embeddings = model_lib.Embeddings(self.cfg)
    self.encoder = model_lib.Encoder(self.cfg)
    if self.kind in ("classification", "regression"):
      outputs = self.num_labels if self.kind == "classification" else 1
      self.head = SequenceHead(self.cfg, outputs, self.head_style)
    elif self.kind == "tagging":
      self.head = TokenHead(self.cfg, self.num_labels,
                            dropout=self.head_style == "transformers",
                            style=self.head_style)
    elif self.qa is None:
      raise ValueError("A qa TaskModel needs its qa_head.QAConfig.")
    elif self.qa.head == "electra":
      self.head = qa_head.ElectraQAHead(self.cfg, self.qa.beam_size)
    else:
      self.head = TokenHead(self.cfg, 2, dropout=False, style="transformers")

  def __call__(self, input_ids: Array, input_mask: Array, segment_ids: Array,
               deterministic: bool = True,
               start_positions: Array | None = None) -> Any:
    """[batch, length] int ids, mask and segments -> task outputs.

    `start_positions` [batch]: qa training's gold starts, on which the
    "electra" head conditions its end logits; None evaluates.
    """
    x = self.embeddings(input_ids, segment_ids, deterministic)
    x = self.encoder(x, input_mask, deterministic)  # [B, T, H]
    if self.kind == "qa" and self.qa.head == "electra":
      return self.head(x, input_mask, segment_ids, start_positions)
    out = self.head(x, deterministic)
    if self.kind == "qa":
      return {"start_logits": out[..., 0], "end_logits": out[..., 1]}
    return out[:, 0] if self.kind == "regression" else out


def pretrained_subtrees(discriminator_params: Any) -> dict[str, Any]:
  """The task-model subtrees held by discriminator params.

  Args:
    discriminator_params: `{"embeddings", "discriminator"}` as an
      `ElectraDiscriminator` (or `model.discriminator_params` of a
      pretraining run) has them.

  Returns:
    `{"embeddings": ..., "encoder": ...}`; the replaced-token head is
    dropped.
  """
  missing = {"embeddings", "discriminator"} - set(discriminator_params)
  if missing:
    raise errors.UserError(f"Pretrained params lack {sorted(missing)}; expected "
                     "an ElectraDiscriminator's {embeddings, discriminator} "
                     f"but got {sorted(discriminator_params)}.")
  return {"embeddings": discriminator_params["embeddings"],
          "encoder": discriminator_params["discriminator"]["encoder"]}


def check_compatible(task_params: Any, subtrees: dict[str, Any]) -> None:
  """Raises ValueError unless `subtrees` fit the task model leaf for leaf."""
  for key, tree in subtrees.items():
    want = jax.tree_util.tree_flatten_with_path(task_params[key])[0]
    got = jax.tree_util.tree_flatten_with_path(tree)[0]
    want_shapes = {jax.tree_util.keystr(p): tuple(v.shape) for p, v in want}
    got_shapes = {jax.tree_util.keystr(p): tuple(v.shape) for p, v in got}
    if want_shapes != got_shapes:
      diff = sorted(set(want_shapes.items()) ^ set(got_shapes.items()))
      raise errors.UserError(
          f"Pretrained {key} params do not fit the task model (differences, "
          f"(path, shape): {diff[:4]}{' ...' if len(diff) > 4 else ''}). "
          "The model config must be the checkpoint's.")


def fresh_paths(num_layers: int, *, embeddings: bool = False,
                top_layers: int = 0) -> tuple[tuple[str, ...], ...]:
  """Param paths that keep their fresh init when the encoder is restored.

  Args:
    num_layers: the encoder's transformer layers.
    embeddings: the embedding tables and their LayerNorm, and
      `encoder/embeddings_project` (a projection of the old tables).
    top_layers: the top `top_layers` encoder layers. Re-initialising the
      top layers helps fine-tuning on few labels (Zhang et al., 2021,
      "Revisiting Few-sample BERT Fine-tuning"); it also tells apart what
      the embeddings and the encoder bring (`num_layers`: embeddings only).
  """
  if not 0 <= top_layers <= num_layers:
    raise errors.UserError(
        f"reinit_top_layers={top_layers} but the encoder has {num_layers} "
        f"layers; pass a number from 0 to {num_layers}.")
  paths = [("encoder", f"layer_{i}")
           for i in range(num_layers - top_layers, num_layers)]
  if embeddings:
    paths = [("embeddings",), ("encoder", "embeddings_project")] + paths
  return tuple(paths)


def merge_pretrained(task_params: Any, subtrees: dict[str, Any],
                     fresh: tuple[tuple[str, ...], ...] = ()) -> Any:
  """Task params with `embeddings` and `encoder` replaced by `subtrees`,
  except under the `fresh` paths (`fresh_paths`), which keep their init.

  Pure: the head keeps its fresh initialisation; nothing else changes.
  """
  def pick(path, new, old):
    names = tuple(getattr(k, "key", k) for k in path)
    return new if any(names[:len(p)] == p for p in fresh) else old

  merged = dict(task_params)
  for key, tree in subtrees.items():
    merged[key] = jax.tree_util.tree_map_with_path(
        lambda path, new, old: pick((key, *path), new, old),
        task_params[key], tree)
  return merged
