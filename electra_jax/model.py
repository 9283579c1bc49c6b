"""ELECTRA in Flax linen: embeddings, post-LN transformer, generator and
discriminator towers, and the pretraining model that ties them together.

Numerics follow google-research/electra and transformers' ELECTRA exactly:
exact (erf) GELU, LayerNorm eps 1e-12, post-LN BERT layers, a shared
embedding block (word, position, token type, LayerNorm) with one
`embeddings_project` per tower when `embedding_size != hidden_size`; so does
the init: truncated normal(initializer_range), except TF's glorot uniform
default where the reference passes no initializer (`nn/init.py`). How the
products, dropouts and layer stack run fast lives in `electra_jax/nn/`.
Modules take a `ModelConfig`, never a run config (`train.py` builds it).

Parameter trees (names are stable; `convert/` maps them one-to-one to
transformers names):

  ElectraDiscriminator:   {"embeddings", "discriminator"}
  ElectraGenerator:       {"embeddings", "generator"}
  ElectraPretrainingModel {"embeddings", "generator", "discriminator"}
                          (+ "generator_embeddings" when untied)
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from electra_jax.nn import attention as attention_lib
from electra_jax.nn import dropout as dropout_lib
from electra_jax.nn import init as init_lib
from electra_jax.nn import linear as linear_lib
from electra_jax.nn import stack

Array = jax.Array
Dtype = Any


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Hyperparameters of one transformer tower and its embeddings."""

  vocab_size: int
  embedding_size: int
  hidden_size: int
  num_hidden_layers: int
  num_attention_heads: int
  intermediate_size: int
  hidden_dropout_prob: float = 0.1
  attention_probs_dropout_prob: float = 0.1
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  initializer_range: float = 0.02
  position_embedding_init: str = "normal"
  layer_norm_eps: float = 1e-12
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  attention_impl: str = "xla"
  scan_layers: bool = False
  remat_policy: str = "none"

  def __post_init__(self):
    if self.hidden_size % self.num_attention_heads:
      raise ValueError(
          f"hidden_size={self.hidden_size} is not a multiple of "
          f"num_attention_heads={self.num_attention_heads}.")
    for field, choices in (
        ("attention_impl", ("xla", "cudnn")),
        ("position_embedding_init", ("normal", "sinusoidal")),
        ("remat_policy", tuple(sorted(stack.REMAT_POLICIES)))):
      if getattr(self, field) not in choices:
        raise ValueError(f"{field}={getattr(self, field)!r} is not one of "
                         f"{choices} (config.model.{field}).")


def gelu(x: Array) -> Array:
  """Exact erf GELU, as transformers' (flax's `nn.gelu` is the tanh
  approximation by default; its exact form goes through a slower `erfc`)."""
  return 0.5 * x * (1.0 + jax.lax.erf(x * jnp.asarray(0.7071067811865476,
                                                        x.dtype)))


def _init(cfg: ModelConfig):
  return nn.initializers.truncated_normal(cfg.initializer_range)


def dense(cfg: ModelConfig, features: int, names: tuple[str | None, ...],
          name: str, kernel_init=None) -> linear_lib.Dense:
  """A Dense layer with logical axis `names`; its kernel starts from
  `kernel_init`, else truncated normal(initializer_range) as the reference."""
  return linear_lib.Dense(
      features, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
      kernel_init=nn.with_logical_partitioning(kernel_init or _init(cfg),
                                               names),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros,
                                             (names[1],)), name=name)


def _layer_norm(cfg: ModelConfig, name: str, axis: str = "embed"):
  return nn.LayerNorm(
      epsilon=cfg.layer_norm_eps, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones, (axis,)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (axis,)),
      name=name)


_constrain = nn.with_logical_constraint


class Embeddings(nn.Module):
  """Word + position + token-type embeddings, LayerNorm, dropout."""

  cfg: ModelConfig

  def setup(self):
    cfg = self.cfg
    init = _init(cfg)

    def embed(num, axes, name, start=init):
      return nn.Embed(
          num, cfg.embedding_size, dtype=cfg.dtype,
          param_dtype=cfg.param_dtype,
          embedding_init=nn.with_logical_partitioning(start, axes), name=name)

    self.word_embeddings = embed(cfg.vocab_size, ("vocab", "embed"),
                                 "word_embeddings")
    position_init = (init_lib.sinusoidal(cfg.initializer_range)
                     if cfg.position_embedding_init == "sinusoidal" else init)
    self.position_embeddings = embed(cfg.max_position_embeddings,
                                     (None, "embed"), "position_embeddings",
                                     position_init)
    self.token_type_embeddings = embed(cfg.type_vocab_size, (None, "embed"),
                                       "token_type_embeddings")
    self.layer_norm = _layer_norm(cfg, "LayerNorm")
    self.dropout = dropout_lib.Dropout(cfg.hidden_dropout_prob)

  def __call__(self, input_ids: Array, token_type_ids: Array,
               deterministic: bool) -> Array:
    """[batch, length] ids -> [batch, length, embedding_size]."""
    length = input_ids.shape[1]
    if length > self.cfg.max_position_embeddings:
      raise ValueError(
          f"Sequence length {length} exceeds max_position_embeddings="
          f"{self.cfg.max_position_embeddings}.")
    # Lookups read the float32 tables and cast after, so that the tables'
    # gradients accumulate in float32 (a gather from a bfloat16 copy makes
    # XLA scatter-add thousands of terms in bfloat16, with contended atomics
    # on GPU). Positions are a slice and token types a one-hot product:
    # neither needs a scatter at all.
    dtype = self.cfg.dtype
    x = jnp.take(self.word_embeddings.embedding, input_ids, axis=0)
    x = x.astype(dtype)
    x += self.position_embeddings.embedding[:length].astype(dtype)[None]
    types = self.token_type_embeddings.embedding
    x += jnp.einsum("BTK,KE->BTE",
                    jax.nn.one_hot(token_type_ids, types.shape[0], dtype=dtype),
                    types.astype(dtype))
    x = self.layer_norm(x)
    x = self.dropout(x, deterministic=deterministic)
    return _constrain(x, ("act_batch", "act_length", "act_embed"))

  def word_table(self) -> Array:
    """The [vocab, embedding_size] table that ties the generator's logits."""
    return self.word_embeddings.embedding


class _SquareKernel(nn.Module):
  """The [H, H] kernel and [H] bias of a Dense layer, named as nn.Dense's,
  for `SelfAttention`, which applies several of them in one product."""

  cfg: ModelConfig
  names: tuple[str, str]

  @nn.compact
  def __call__(self) -> tuple[Array, Array]:
    h = self.cfg.hidden_size
    kernel = self.param(
        "kernel", nn.with_logical_partitioning(_init(self.cfg), self.names),
        (h, h), self.cfg.param_dtype)
    bias = self.param("bias", nn.with_logical_partitioning(
        nn.initializers.zeros, (self.names[1],)), (h,), self.cfg.param_dtype)
    return kernel, bias


class SelfAttention(nn.Module):
  """Multi-head self-attention, [B, T, H] -> [B, T, H] (before the residual).

  Its params are transformers' three Dense layers `query`, `key`, `value`
  and `attention_output` (so `convert/` maps them one-to-one), applied as
  one [H, 3, N, D] product into heads laid out [batch, heads, length, dim]:
  the attention einsums then need no transposes, and the head axis N keeps
  its own sharding. The scores run through `nn.attention.attend`.
  """

  cfg: ModelConfig

  def setup(self):
    kernels = {n: _SquareKernel(self.cfg, ("embed", "joined_kv"), name=n)
               for n in ("query", "key", "value")}
    self.query, self.key, self.value = kernels.values()
    self.attention_output = _SquareKernel(self.cfg, ("joined_kv", "embed"))

  def __call__(self, x: Array, mask: Array, deterministic: bool,
               dropout_rng: Array | None) -> Array:
    """x: [B, T, H]; mask: [B, 1, 1, T] bool; dropout site 0 of the key."""
    cfg = self.cfg
    h, n = cfg.hidden_size, cfg.num_attention_heads
    params = [self.query(), self.key(), self.value()]
    kernel = jnp.stack([w for w, _ in params], axis=1).reshape(h, 3, n, h // n)
    bias = jnp.stack([b for _, b in params]).reshape(3, n, h // n)
    y = linear_lib.linear(x.astype(cfg.dtype), kernel.astype(cfg.dtype))
    y = linear_lib.bias_add(y, bias.astype(cfg.dtype))  # [B, T, 3, N, D]
    q, k, v = (_constrain(jnp.transpose(y[:, :, i], (0, 2, 1, 3)),
                          ("act_batch", "act_heads", "act_length", None))
               for i in range(3))  # Each [B, N, T, D].
    rate = 0.0 if deterministic else cfg.attention_probs_dropout_prob
    ctx = attention_lib.attend(q, k, v, mask, impl=cfg.attention_impl,
                               rate=rate, dropout_rng=dropout_rng,
                               dtype=cfg.dtype)  # [B, N, T, D]
    kernel, bias = self.attention_output()
    kernel = kernel.astype(cfg.dtype).reshape(n, h // n, h)  # [N, D, H]
    return linear_lib.bias_add(jnp.einsum("BNTD,NDH->BTH", ctx, kernel),
                               bias.astype(cfg.dtype))


class TransformerLayer(nn.Module):
  """One post-LN BERT layer: self-attention and feed-forward sublayers."""

  cfg: ModelConfig

  def setup(self):
    cfg = self.cfg
    self.attention = SelfAttention(cfg)
    nn.share_scope(self, self.attention)  # Its params sit in this layer's.
    self.attention_layer_norm = _layer_norm(cfg, "attention_LayerNorm")
    self.intermediate = dense(cfg, cfg.intermediate_size, ("embed", "mlp"),
                              "intermediate")
    self.output = dense(cfg, cfg.hidden_size, ("mlp", "embed"), "output")
    self.output_layer_norm = _layer_norm(cfg, "output_LayerNorm")

  def __call__(self, x: Array, mask: Array, deterministic: bool,
               dropout_rng: Array | None = None) -> Array:
    """x: [batch, length, hidden]; mask: [batch, 1, 1, length] bool.

    The layer's three dropouts share one key (`dropout_rng`, or one drawn
    from the "dropout" stream), as sites 0-2 of its counter space.
    """
    cfg = self.cfg
    rate = cfg.hidden_dropout_prob
    train = not deterministic and (
        rate > 0 or cfg.attention_probs_dropout_prob > 0)
    if train and dropout_rng is None:
      dropout_rng = self.make_rng("dropout")
    y = self.attention(x, mask, not train, dropout_rng)  # [B, T, H]
    if train:
      y = dropout_lib.dropout(y, rate, dropout_rng, site=1)
    x = self.attention_layer_norm(x + y)
    y = gelu(_constrain(self.intermediate(x),
                        ("act_batch", "act_length", "act_mlp")))
    y = self.output(y)
    if train:
      y = dropout_lib.dropout(y, rate, dropout_rng, site=2)
    x = self.output_layer_norm(x + y)
    return _constrain(x, ("act_batch", "act_length", "act_embed"))


class Encoder(nn.Module):
  """`embeddings_project` (when E != H) and the stack of layers."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, embedded: Array, attention_mask: Array,
               deterministic: bool) -> Array:
    """[batch, length, E] -> [batch, length, H]."""
    cfg = self.cfg
    x = embedded
    if cfg.embedding_size != cfg.hidden_size:
      x = dense(cfg, cfg.hidden_size, ("embed_in", "embed"),
                "embeddings_project", init_lib.tf_dense)(x)
    mask = attention_mask.astype(jnp.bool_)[:, None, None, :]
    # One key per layer, split from one draw of the "dropout" stream: the
    # same keys however the stack runs, so the same dropout masks.
    has_dropout = (cfg.hidden_dropout_prob > 0
                   or cfg.attention_probs_dropout_prob > 0)
    keys = (None if deterministic or not has_dropout
            else jax.random.split(self.make_rng("dropout"),
                                  cfg.num_hidden_layers))
    names = [f"layer_{i}" for i in range(cfg.num_hidden_layers)]
    if self.is_initializing():  # Creates the per-layer params.
      for i, name in enumerate(names):
        x = TransformerLayer(cfg, name=name)(
            x, mask, deterministic, None if keys is None else keys[i])
      return x
    params = self.variables["params"]
    return stack.apply_layers(
        TransformerLayer(cfg, parent=None), [params[n] for n in names], x,
        mask, deterministic=deterministic, keys=keys, scan=cfg.scan_layers,
        remat_policy=cfg.remat_policy)


class DiscriminatorTower(nn.Module):
  """Encoder + replaced-token head: dense(H,H) -> GELU -> dense(H,1)."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, embedded: Array, attention_mask: Array,
               deterministic: bool) -> Array:
    """Returns per-token replaced-token logits [batch, length] (float32)."""
    cfg = self.cfg
    x = Encoder(cfg, name="encoder")(embedded, attention_mask, deterministic)
    x = gelu(dense(cfg, cfg.hidden_size, ("embed", "mlp"), "head_dense")(x))
    x = dense(cfg, 1, ("mlp", None), "head_prediction", init_lib.tf_dense)(x)
    return x[..., 0].astype(jnp.float32)


class GeneratorTower(nn.Module):
  """Encoder + MLM head: dense(H,E) -> GELU -> LayerNorm -> tied logits."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, embedded: Array, attention_mask: Array,
               word_table: Array, masked_positions: Array | None,
               deterministic: bool) -> Array:
    """Vocabulary logits (float32) at `masked_positions` ([batch, P]).

    The head runs only at the given positions: [batch, P, vocab]. With no
    positions it runs at every position: [batch, length, vocab].
    """
    cfg = self.cfg
    x = Encoder(cfg, name="encoder")(embedded, attention_mask, deterministic)
    if masked_positions is not None:  # [B, T, H] -> [B, P, H]
      x = jnp.take_along_axis(x, masked_positions[..., None], axis=1)
    x = gelu(dense(cfg, cfg.embedding_size, ("embed", "embed_in"),
                    "head_dense")(x))
    x = _layer_norm(cfg, "head_LayerNorm", axis="embed_in")(x)
    bias = self.param("output_bias", nn.with_logical_partitioning(
        nn.initializers.zeros, ("vocab",)), (cfg.vocab_size,),
                      cfg.param_dtype)
    logits = linear_lib.linear(x, word_table.astype(cfg.dtype).T)
    return linear_lib.bias_add(logits.astype(jnp.float32),
                               bias.astype(jnp.float32))


def _defaults(input_ids, attention_mask, token_type_ids):
  ones, zeros = jnp.ones_like(input_ids), jnp.zeros_like(input_ids)
  return (ones if attention_mask is None else attention_mask,
          zeros if token_type_ids is None else token_type_ids)


class ElectraDiscriminator(nn.Module):
  """Standalone discriminator, as transformers' `ElectraForPreTraining`."""

  cfg: ModelConfig

  def setup(self):
    self.embeddings = Embeddings(self.cfg)
    self.discriminator = DiscriminatorTower(self.cfg)

  def __call__(self, input_ids: Array, attention_mask: Array | None = None,
               token_type_ids: Array | None = None,
               deterministic: bool = True) -> Array:
    """[batch, length] ids -> replaced-token logits [batch, length]."""
    attention_mask, token_type_ids = _defaults(
        input_ids, attention_mask, token_type_ids)
    x = self.embeddings(input_ids, token_type_ids, deterministic)
    return self.discriminator(x, attention_mask, deterministic)


class ElectraGenerator(nn.Module):
  """Standalone generator, as transformers' `ElectraForMaskedLM`."""

  cfg: ModelConfig

  def setup(self):
    self.embeddings = Embeddings(self.cfg)
    self.generator = GeneratorTower(self.cfg)

  def __call__(self, input_ids: Array, attention_mask: Array | None = None,
               token_type_ids: Array | None = None,
               masked_positions: Array | None = None,
               deterministic: bool = True) -> Array:
    """Vocabulary logits at `masked_positions` (else every position)."""
    attention_mask, token_type_ids = _defaults(
        input_ids, attention_mask, token_type_ids)
    x = self.embeddings(input_ids, token_type_ids, deterministic)
    return self.generator(x, attention_mask, self.embeddings.word_table(),
                          masked_positions, deterministic)


class ElectraPretrainingModel(nn.Module):
  """Generator and discriminator sharing one embedding block.

  `gen_cfg` is None for the uniform-generator ablation (no generator
  params); `disc_cfg` is None for the MLM-only baseline (no discriminator).
  """

  disc_cfg: ModelConfig | None
  gen_cfg: ModelConfig | None
  untied_generator_embeddings: bool = False

  def setup(self):
    shared = self.disc_cfg or self.gen_cfg
    self.embeddings = Embeddings(shared)
    if self.gen_cfg is not None:
      if self.untied_generator_embeddings:
        self.generator_embeddings = Embeddings(self.gen_cfg)
      self.generator = GeneratorTower(self.gen_cfg)
    if self.disc_cfg is not None:
      self.discriminator = DiscriminatorTower(self.disc_cfg)

  def generator_logits(self, input_ids: Array, input_mask: Array,
                       segment_ids: Array, masked_positions: Array,
                       deterministic: bool = True) -> Array:
    """Masked-LM logits [batch, P, vocab] at `masked_positions`."""
    emb = (self.generator_embeddings if self.untied_generator_embeddings
           else self.embeddings)
    x = emb(input_ids, segment_ids, deterministic)
    return self.generator(x, input_mask, emb.word_table(), masked_positions,
                          deterministic)

  def discriminator_logits(self, input_ids: Array, input_mask: Array,
                           segment_ids: Array,
                           deterministic: bool = True) -> Array:
    """Replaced-token logits [batch, length]."""
    x = self.embeddings(input_ids, segment_ids, deterministic)
    return self.discriminator(x, input_mask, deterministic)

  def __call__(self, input_ids, input_mask, segment_ids, masked_positions,
               deterministic: bool = True):
    """Runs both towers (used by `init`); returns (gen, disc) logits."""
    gen = None if self.gen_cfg is None else self.generator_logits(
        input_ids, input_mask, segment_ids, masked_positions, deterministic)
    disc = None if self.disc_cfg is None else self.discriminator_logits(
        input_ids, input_mask, segment_ids, deterministic)
    return gen, disc


def discriminator_params(params: dict) -> dict:
  """The params of an `ElectraDiscriminator` inside pretraining params."""
  return {"embeddings": params["embeddings"],
          "discriminator": params["discriminator"]}


def generator_params(params: dict) -> dict:
  """The params of an `ElectraGenerator` inside pretraining params."""
  emb = params.get("generator_embeddings", params["embeddings"])
  return {"embeddings": emb, "generator": params["generator"]}
