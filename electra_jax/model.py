"""ELECTRA in Flax linen: embeddings, post-LN transformer, generator and
discriminator towers, and the pretraining model that ties them together.

Numerics follow google-research/electra and transformers' ELECTRA exactly:
exact (erf) GELU, LayerNorm eps 1e-12, post-LN BERT layers, a shared
embedding block (word, position, token type, LayerNorm) with one
`embeddings_project` per tower when `embedding_size != hidden_size`.

Parameter trees (names are stable; `convert/` maps them one-to-one to
transformers names):

  ElectraDiscriminator:   {"embeddings", "discriminator"}
  ElectraGenerator:       {"embeddings", "generator"}
  ElectraPretrainingModel {"embeddings", "generator", "discriminator"}
                          (+ "generator_embeddings" when untied)

so the discriminator of a pretraining run is just
`{k: params[k] for k in ("embeddings", "discriminator")}`.
"""

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from electra_jax import linear as linear_lib

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
          f"num_attention_heads={self.num_attention_heads}."
      )
    if self.attention_impl not in ("xla", "cudnn"):
      raise ValueError(
          f"attention_impl={self.attention_impl!r} is not 'xla' or 'cudnn' "
          "(config.model.attention_impl).")
    if self.remat_policy not in REMAT_POLICIES:
      raise ValueError(
          f"remat_policy={self.remat_policy!r} is not one of "
          f"{sorted(REMAT_POLICIES)} (config.model.remat_policy).")


def _keep_linear(policy):
  """`policy`, also keeping the outputs of `linear_lib.linear` (the dense
  products, whose custom VJP hides their `dot_general` from `policy`)."""
  return jax.checkpoint_policies.save_from_both_policies(
      policy, jax.checkpoint_policies.save_only_these_names(
          linear_lib.CHECKPOINT_NAME))


# Which activations the backward pass keeps (the rest are recomputed):
# "none" keeps all (no rematerialization), "full" keeps only each layer's
# input, "dots" the matmul outputs, "dots_no_batch" the matmul outputs
# except attention's batched ones (the [B, N, T, T] scores and weights).
REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": _keep_linear(jax.checkpoint_policies.checkpoint_dots),
    "dots_no_batch": _keep_linear(
        jax.checkpoint_policies.dots_with_no_batch_dims_saveable),
}


def discriminator_config(config: ml_collections.ConfigDict) -> ModelConfig:
  """The discriminator's `ModelConfig` from the run config."""
  m = config.model
  return ModelConfig(
      vocab_size=m.vocab_size,
      embedding_size=m.embedding_size or m.hidden_size,
      hidden_size=m.hidden_size,
      num_hidden_layers=m.num_hidden_layers,
      num_attention_heads=m.num_attention_heads,
      intermediate_size=m.intermediate_size,
      hidden_dropout_prob=m.hidden_dropout_prob,
      attention_probs_dropout_prob=m.attention_probs_dropout_prob,
      max_position_embeddings=m.max_position_embeddings,
      type_vocab_size=m.type_vocab_size,
      initializer_range=m.initializer_range,
      layer_norm_eps=m.layer_norm_eps,
      dtype=jnp.dtype(m.dtype),
      param_dtype=jnp.dtype(m.param_dtype),
      attention_impl=m.attention_impl,
      scan_layers=m.scan_layers,
      remat_policy=m.remat_policy,
  )


def generator_config(config: ml_collections.ConfigDict) -> ModelConfig:
  """The generator's `ModelConfig`, as electra's `get_generator_config`.

  Width and depth are fractions of the discriminator's; heads are
  `max(1, hidden // 64)` and the FFN is `4 * hidden`. The MLM-only baseline
  (`electra_objective=False`) trains a full-size generator, as the reference.
  With untied embeddings the generator's embeddings have its own width.
  """
  disc = discriminator_config(config)
  if not config.objective.electra_objective:
    return disc
  g = config.generator
  hidden = int(round(disc.hidden_size * g.generator_hidden_size))
  layers = int(round(disc.num_hidden_layers * g.generator_layers))
  if hidden < 1 or layers < 1:
    raise ValueError(
        f"generator_hidden_size={g.generator_hidden_size} and "
        f"generator_layers={g.generator_layers} give a generator of width "
        f"{hidden} and depth {layers}; both must be at least 1."
    )
  return dataclasses.replace(
      disc,
      embedding_size=(
          hidden if g.untied_generator_embeddings else disc.embedding_size
      ),
      hidden_size=hidden,
      num_hidden_layers=layers,
      num_attention_heads=max(1, hidden // 64),
      intermediate_size=4 * hidden,
  )


def gelu(x: Array) -> Array:
  """Exact erf GELU, `x * (1 + erf(x / sqrt(2))) / 2`, as transformers'.

  (flax's `nn.gelu` defaults to the tanh approximation, and its exact form
  goes through `erfc`, which XLA computes with an exponential: ~25% slower
  on CPU for the same values to within 1e-6.)
  """
  return 0.5 * x * (1.0 + jax.lax.erf(x * jnp.asarray(0.7071067811865476,
                                                        x.dtype)))


def _dense(
    cfg: ModelConfig, features: int, names: tuple[str, str], name: str
) -> linear_lib.Dense:
  init = nn.initializers.truncated_normal(cfg.initializer_range)
  return linear_lib.Dense(
      features,
      dtype=cfg.dtype,
      param_dtype=cfg.param_dtype,
      kernel_init=nn.with_logical_partitioning(init, names),
      bias_init=nn.with_logical_partitioning(
          nn.initializers.zeros, (names[1],)
      ),
      name=name,
  )


def _layer_norm(cfg: ModelConfig, name: str, axis: str = "embed"):
  return nn.LayerNorm(
      epsilon=cfg.layer_norm_eps,
      dtype=cfg.dtype,
      param_dtype=cfg.param_dtype,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones, (axis,)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (axis,)),
      name=name,
  )


def _constrain(x: Array, names: tuple[str | None, ...]) -> Array:
  return nn.with_logical_constraint(x, names)


_THREEFRY_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def threefry2x32(k1: Array, k2: Array, x1: Array, x2: Array
                 ) -> tuple[Array, Array]:
  """Threefry-2x32-20 (Salmon et al., 2011) written out in jnp.

  The same bits as JAX's `threefry2x32` primitive (a test checks), but as
  plain elementwise ops: XLA fuses the hash into the dropout that uses it.
  On CPU the primitive lowers to a loop over its five blocks, one per
  dropout site, which cost over 10 s of the step's compile time and a
  memory pass per block.
  """
  ks = (k1, k2, k1 ^ k2 ^ jnp.uint32(0x1BD11BDA))
  x1, x2 = x1 + ks[0], x2 + ks[1]
  for block in range(5):
    for r in _THREEFRY_ROTATIONS[block % 2]:
      x1 = x1 + x2
      x2 = x1 ^ ((x2 << jnp.uint32(r)) | (x2 >> jnp.uint32(32 - r)))
    x1 = x1 + ks[(block + 1) % 3]
    x2 = x2 + ks[(block + 2) % 3] + jnp.uint32(block + 1)
  return x1, x2


# Site ids go into the high bits of the column counter; the columns of one
# array (a quarter of its last dim) must stay below this.
_SITE_SHIFT = 24


def _random_words(rng: Array, lead: tuple[int, ...], cols: int,
                  site: Array) -> tuple[Array, Array]:
  """Two uniform uint32 words per [*lead, cols] element, a function of
  (key, site, index) only: the same however the array is sharded."""
  if str(jax.random.key_impl(rng)) != "threefry2x32":  # e.g. rbg keys.
    words = jax.random.bits(jax.random.fold_in(rng, site), (2, *lead, cols),
                            jnp.uint32)
    return words[0], words[1]
  row = jnp.zeros((*lead, cols), jnp.uint32)
  stride = 1
  for axis in reversed(range(len(lead))):
    row += jax.lax.broadcasted_iota(jnp.uint32, row.shape, axis) * stride
    stride *= lead[axis]
  col = jax.lax.broadcasted_iota(jnp.uint32, row.shape, len(lead))
  col += site.astype(jnp.uint32) << _SITE_SHIFT
  key = jax.random.key_data(rng)
  return threefry2x32(key[0], key[1], row, col)


@functools.partial(jax.jit, static_argnums=(1, 2))
def keep_bits(rng: Array, shape: tuple[int, ...], threshold: int,
              site: Array) -> Array:
  """The packed keep mask of a dropout over `shape`: a uint8 array of shape
  [*shape[:-1], ceil(shape[-1] / 4)] whose bit i of element [..., c] keeps
  element [..., 4c + i]. An element is kept when its 16-bit draw is at
  least `threshold`.

  One threefry evaluation gives two 32-bit words, so four 16-bit draws:
  a quarter of the hash work of `jax.random.bits` (which XORs the two
  words into one). The packed bits are materialized: fused into the
  dropout instead, XLA would evaluate the hash once per element, four
  times over, in the forward and again in the backward pass. They are the
  backward pass's residual, at two bits per element. `jit` traces this
  once per shape.
  """
  *lead, last = shape
  cols = -(-last // 4)
  if cols >= 1 << _SITE_SHIFT:
    raise ValueError(f"dropout over a last dim of {last} is not supported "
                     f"(at most {4 << _SITE_SHIFT}).")
  w1, w2 = _random_words(rng, tuple(lead), cols, site)
  t = jnp.uint32(threshold)
  bits = ((w1 & 0xFFFF) >= t).astype(jnp.uint8)
  bits |= ((w1 >> 16) >= t).astype(jnp.uint8) << 1
  bits |= ((w2 & 0xFFFF) >= t).astype(jnp.uint8) << 2
  bits |= ((w2 >> 16) >= t).astype(jnp.uint8) << 3
  # `% 251` is the identity on these 4-bit values, but XLA counts a
  # remainder as expensive and so will not fuse (and repeat) this hash
  # into each consumer; an optimization barrier is removed before fusion.
  return bits % jnp.uint8(251)


def _unpack(bits: Array, last: int) -> Array:
  """[..., cols] packed keep bits -> [..., last] bool."""
  shifts = jnp.arange(4, dtype=jnp.uint8)
  keep = (bits[..., None] >> shifts) & 1
  return keep.reshape(*bits.shape[:-1], -1)[..., :last].astype(jnp.bool_)


def dropout(x: Array, rate: float, rng: Array, site: int = 0) -> Array:
  """Inverted dropout whose keep mask comes from 16-bit random draws.

  The draws cost a quarter of the random-bit work of `bernoulli` (see
  `keep_bits`). An element is dropped when its draw is below
  `round(rate * 2**16)`: the drop rate is `rate` to within 2**-17, and the
  kept values are scaled by the exact inverse keep probability, so the
  expectation is unchanged. The mask depends only on the key, the `site`
  (several dropouts can share one key: a layer draws one) and the
  element's index, not on how the array is sharded.
  """
  if rate <= 0.0:
    return x
  if rate >= 1.0:
    return jnp.zeros_like(x)
  threshold = min(round(rate * 65536), 65535)
  bits = keep_bits(rng, x.shape, threshold, jnp.uint32(site))
  return _keep_and_scale(x, bits, 65536.0 / (65536 - threshold))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _keep_and_scale(x: Array, bits: Array, scale: float) -> Array:
  """`where(keep, x * scale, 0)` with `keep` unpacked from `bits`; the
  backward pass keeps only the packed bits."""
  return jnp.where(_unpack(bits, x.shape[-1]), x * jnp.asarray(scale, x.dtype),
                   jnp.zeros((), x.dtype))


def _keep_and_scale_fwd(x, bits, scale):
  return _keep_and_scale(x, bits, scale), bits


def _keep_and_scale_bwd(scale, bits, g):
  return _keep_and_scale(g, bits, scale), None


_keep_and_scale.defvjp(_keep_and_scale_fwd, _keep_and_scale_bwd)


class Dropout(nn.Module):
  """`dropout` with the module's "dropout" RNG stream; no params."""

  rate: float

  @nn.compact
  def __call__(self, x: Array, deterministic: bool) -> Array:
    if deterministic or self.rate <= 0.0:
      return x
    return dropout(x, self.rate, self.make_rng("dropout"))


class Embeddings(nn.Module):
  """Word + position + token-type embeddings, LayerNorm, dropout."""

  cfg: ModelConfig

  def setup(self):
    cfg = self.cfg
    init = nn.initializers.truncated_normal(cfg.initializer_range)

    def embed(num, axes, name):
      return nn.Embed(
          num,
          cfg.embedding_size,
          dtype=cfg.dtype,
          param_dtype=cfg.param_dtype,
          embedding_init=nn.with_logical_partitioning(init, axes),
          name=name,
      )

    self.word_embeddings = embed(cfg.vocab_size, ("vocab", "embed"),
                                 "word_embeddings")
    self.position_embeddings = embed(cfg.max_position_embeddings,
                                     (None, "embed"), "position_embeddings")
    self.token_type_embeddings = embed(cfg.type_vocab_size, (None, "embed"),
                                       "token_type_embeddings")
    self.layer_norm = _layer_norm(cfg, "LayerNorm")
    self.dropout = Dropout(cfg.hidden_dropout_prob)

  def __call__(
      self, input_ids: Array, token_type_ids: Array, deterministic: bool
  ) -> Array:
    """[batch, length] ids -> [batch, length, embedding_size]."""
    length = input_ids.shape[1]
    if length > self.cfg.max_position_embeddings:
      raise ValueError(
          f"Sequence length {length} exceeds max_position_embeddings="
          f"{self.cfg.max_position_embeddings}."
      )
    # Lookups read the float32 tables and cast after, so that the tables'
    # gradients accumulate in float32. (Gathering from a bfloat16 copy made
    # XLA scatter-add the gradient in bfloat16: on GPU a contended atomic
    # loop over the repeated ids that took over 90% of the step, and a sum
    # of thousands of terms at 8 bits of precision.) The position rows are
    # a slice and the few token types a one-hot product, so neither needs a
    # scatter at all.
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


def _square_dense_params(module: nn.Module, names: tuple[str, str]):
  """The [H, H] kernel and [H] bias of a Dense layer, named as nn.Dense."""
  cfg = module.cfg
  h = cfg.hidden_size
  init = nn.initializers.truncated_normal(cfg.initializer_range)
  kernel = module.param("kernel", nn.with_logical_partitioning(init, names),
                        (h, h), cfg.param_dtype)
  bias = module.param("bias", nn.with_logical_partitioning(
      nn.initializers.zeros, (names[1],)), (h,), cfg.param_dtype)
  return kernel, bias


class DenseParams(nn.Module):
  """The [H, H] kernel and [H] bias of a Dense layer, named as nn.Dense's,
  for a caller that applies several of them in one product."""

  cfg: ModelConfig
  names: tuple[str, str]

  @nn.compact
  def __call__(self) -> tuple[Array, Array]:
    return _square_dense_params(self, self.names)


def project_heads(cfg: ModelConfig, x: Array,
                  params: list[tuple[Array, Array]]) -> list[Array]:
  """Query, key and value projections as one product, into heads.

  The params are three ordinary Dense kernels and biases (transformers'
  names map one-to-one). One product with their stacked [H, 3, N, D]
  kernel instead of three [H, H] ones runs better on every backend (on CPU
  ~10% faster for the attention block; the head axis N stays its own, so
  that it keeps its sharding), and the outputs are laid out [batch, heads, length, head_dim]:
  the attention einsums then need no transposes, which on CPU made the
  attention over twice as fast as the [batch, length, heads, dim] layout.
  """
  h, n = cfg.hidden_size, cfg.num_attention_heads
  k = len(params)
  kernel = jnp.stack([w for w, _ in params], axis=1).reshape(h, k, n, h // n)
  bias = jnp.stack([b for _, b in params]).reshape(k, n, h // n)
  y = linear_lib.linear(x.astype(cfg.dtype), kernel.astype(cfg.dtype))
  y = linear_lib.bias_add(y, bias.astype(cfg.dtype))  # [B, T, K, N, D]
  return [_constrain(jnp.transpose(y[:, :, i], (0, 2, 1, 3)),
                     ("act_batch", "act_heads", "act_length", None))
          for i in range(len(params))]


class HeadsOutput(nn.Module):
  """The attention output projection, from [B, N, T, D] back to [B, T, H]."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, ctx: Array) -> Array:
    cfg = self.cfg
    h, n = cfg.hidden_size, cfg.num_attention_heads
    kernel, bias = _square_dense_params(self, ("joined_kv", "embed"))
    kernel = kernel.astype(cfg.dtype).reshape(n, h // n, h)  # [N, D, H]
    return linear_lib.bias_add(jnp.einsum("BNTD,NDH->BTH", ctx, kernel),
                               bias.astype(cfg.dtype))


def fused_attention(q: Array, k: Array, v: Array, mask: Array, *,
                    implementation: str) -> Array:
  """`jax.nn.dot_product_attention` on [B, N, T, D] inputs.

  The [B, 1, 1, S] padding mask is broadcast to [B, 1, T, S]: cuDNN takes
  the mask as a bias whose last two dims must be the sequence lengths (a
  [B, 1, 1, S] mask was refused on an H200).
  """
  t = lambda y: jnp.swapaxes(y, 1, 2)  # pylint: disable=g-long-lambda
  mask = jnp.broadcast_to(mask, (mask.shape[0], 1, q.shape[2], k.shape[2]))
  return t(jax.nn.dot_product_attention(t(q), t(k), t(v), mask=mask,
                                        implementation=implementation))


def attention(q: Array, k: Array, v: Array, mask: Array, *, rate: float,
              deterministic: bool, impl: str, dtype: Dtype,
              dropout_rng: Array | None = None) -> Array:
  """Softmax attention over [B, N, T, D] inputs; softmax in float32.

  `impl="cudnn"` uses `jax.nn.dot_product_attention` (cuDNN flash attention
  on NVIDIA GPUs), which has no dropout on the attention weights.
  """
  if impl == "cudnn":
    if rate and not deterministic:
      raise ValueError(
          "attention_impl=cudnn has no attention dropout; set "
          "--config.model.attention_probs_dropout_prob=0.0 or use "
          "attention_impl=xla.")
    if jax.default_backend() != "gpu":
      raise ValueError(
          "attention_impl=cudnn needs an NVIDIA GPU; this run's backend is "
          f"{jax.default_backend()!r}. Use attention_impl=xla.")
    return fused_attention(q, k, v, mask, implementation="cudnn")
  d = q.shape[-1]
  logits = jnp.einsum("BNTD,BNSD->BNTS", q, k).astype(jnp.float32)
  logits = jnp.where(mask, logits / jnp.sqrt(jnp.float32(d)),
                     jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1).astype(dtype)
  if rate and not deterministic:
    probs = dropout(probs, rate, dropout_rng)
  return jnp.einsum("BNTS,BNSD->BNTD", probs, v)


class TransformerLayer(nn.Module):
  """One post-LN BERT layer: self-attention and feed-forward sublayers."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, x: Array, mask: Array, deterministic: bool,
               dropout_rng: Array | None = None) -> Array:
    """x: [batch, length, hidden]; mask: [batch, 1, 1, length] bool.

    The layer's three dropouts share one key (`dropout_rng`, or one drawn
    from the "dropout" stream), as sites 0-2 of its counter space.
    """
    cfg = self.cfg
    q, k, v = project_heads(cfg, x, [  # Each [B, N, T, D].
        DenseParams(cfg, ("embed", "joined_kv"), name=name)()
        for name in ("query", "key", "value")])
    rate = cfg.attention_probs_dropout_prob
    hidden_rate = cfg.hidden_dropout_prob
    train = not deterministic and (rate > 0 or hidden_rate > 0)
    if train and dropout_rng is None:
      dropout_rng = self.make_rng("dropout")
    ctx = attention(q, k, v, mask, rate=rate, deterministic=deterministic,
                    impl=cfg.attention_impl, dtype=cfg.dtype,
                    dropout_rng=dropout_rng)
    y = HeadsOutput(cfg, name="attention_output")(ctx)  # [B, T, H]
    if train:
      y = dropout(y, hidden_rate, dropout_rng, site=1)
    x = _layer_norm(cfg, "attention_LayerNorm")(x + y)

    y = _dense(cfg, cfg.intermediate_size, ("embed", "mlp"), "intermediate")(x)
    y = gelu(_constrain(y, ("act_batch", "act_length", "act_mlp")))
    y = _dense(cfg, cfg.hidden_size, ("mlp", "embed"), "output")(y)
    if train:
      y = dropout(y, hidden_rate, dropout_rng, site=2)
    x = _layer_norm(cfg, "output_LayerNorm")(x + y)
    return _constrain(x, ("act_batch", "act_length", "act_embed"))


class Encoder(nn.Module):
  """`embeddings_project` (when E != H) and the stack of layers."""

  cfg: ModelConfig

  @nn.compact
  def __call__(
      self, embedded: Array, attention_mask: Array, deterministic: bool
  ) -> Array:
    """[batch, length, E] -> [batch, length, H]."""
    cfg = self.cfg
    x = embedded
    if cfg.embedding_size != cfg.hidden_size:
      x = _dense(cfg, cfg.hidden_size, ("embed_in", "embed"),
                 "embeddings_project")(x)
    mask = attention_mask.astype(jnp.bool_)[:, None, None, :]
    # One key per layer, split from one draw of the "dropout" stream: the
    # same keys unrolled or scanned, so both give the same dropout masks.
    has_dropout = (cfg.hidden_dropout_prob > 0
                   or cfg.attention_probs_dropout_prob > 0)
    keys = (None if deterministic or not has_dropout
            else jax.random.split(self.make_rng("dropout"),
                                  cfg.num_hidden_layers))
    if cfg.scan_layers and not self.is_initializing():
      return self._scan_layers(x, mask, deterministic, keys)
    if not self.is_initializing() and isinstance(x, jax.core.Tracer):
      return self._unrolled_layers(x, mask, deterministic, keys)
    layer = TransformerLayer
    if cfg.remat_policy != "none":
      layer = nn.remat(TransformerLayer, static_argnums=(3,),
                       policy=REMAT_POLICIES[cfg.remat_policy])
    for i in range(cfg.num_hidden_layers):
      x = layer(cfg, name=f"layer_{i}")(
          x, mask, deterministic, None if keys is None else keys[i])
    return x

  def _unrolled_layers(self, x: Array, mask: Array, deterministic: bool,
                       keys: Array | None) -> Array:
    """The layers one after another, each through one jitted function.

    Same params (`layer_{i}`) and the same computation as the plain loop
    over `TransformerLayer` submodules, but JAX traces, differentiates and
    lowers the layer once per call of the encoder instead of once per
    layer (the jit cache serves the rest); XLA inlines the calls, so the
    compiled step is the unrolled one. This takes seconds off the step's
    tracing. The function is made anew per call, so a cached trace never
    outlives the logical-axis rules it was traced under; hence it is used
    only under a trace (jit, grad), where the caller compiles once; eager
    calls keep the plain loop rather than compile a layer per call.
    """
    cfg = self.cfg
    params = self.variables["params"]
    layer = TransformerLayer(cfg, parent=None)

    def apply(layer_params, h, m, key):
      return layer.apply({"params": layer_params}, h, m, deterministic, key)

    if cfg.remat_policy != "none":
      apply = jax.checkpoint(apply, policy=REMAT_POLICIES[cfg.remat_policy])
    apply = jax.jit(apply)
    for i in range(cfg.num_hidden_layers):
      with jax.named_scope(f"layer_{i}"):  # Names ops in HLO and profiles.
        x = apply(params[f"layer_{i}"], x, mask,
                  None if keys is None else keys[i])
    return x

  def _scan_layers(self, x: Array, mask: Array, deterministic: bool,
                   keys: Array | None) -> Array:
    """The layers as one `lax.scan` over their stacked params.

    XLA then compiles one layer instead of `num_hidden_layers` copies (the
    compile time of a deep model drops several-fold). The params stay the
    per-layer `layer_{i}` trees of the unrolled model (checkpoints, export
    and fine-tuning see no difference); they are stacked here, each step,
    which costs one copy of the encoder's weights.
    """
    cfg = self.cfg
    n = cfg.num_hidden_layers
    params = self.variables["params"]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs),
                           *[params[f"layer_{i}"] for i in range(n)])
    layer = TransformerLayer(cfg, parent=None)

    def body(h, layer_params_and_key):
      layer_params, key = layer_params_and_key
      return layer.apply({"params": layer_params}, h, mask, deterministic,
                         key), None

    if cfg.remat_policy != "none":
      body = jax.checkpoint(body, policy=REMAT_POLICIES[cfg.remat_policy],
                            prevent_cse=False)
    x, _ = jax.lax.scan(body, x, (stacked, keys))
    return x


class DiscriminatorTower(nn.Module):
  """Encoder + replaced-token head: dense(H,H) -> GELU -> dense(H,1)."""

  cfg: ModelConfig

  @nn.compact
  def __call__(
      self, embedded: Array, attention_mask: Array, deterministic: bool
  ) -> Array:
    """Returns per-token replaced-token logits [batch, length] (float32)."""
    cfg = self.cfg
    x = Encoder(cfg, name="encoder")(embedded, attention_mask, deterministic)
    x = gelu(_dense(cfg, cfg.hidden_size, ("embed", "mlp"), "head_dense")(x))
    x = _dense(cfg, 1, ("mlp", None), "head_prediction")(x)
    return x[..., 0].astype(jnp.float32)


class GeneratorTower(nn.Module):
  """Encoder + MLM head: dense(H,E) -> GELU -> LayerNorm -> tied logits."""

  cfg: ModelConfig

  @nn.compact
  def __call__(
      self,
      embedded: Array,
      attention_mask: Array,
      word_table: Array,
      masked_positions: Array | None,
      deterministic: bool,
  ) -> Array:
    """Vocabulary logits (float32) at `masked_positions` ([batch, P]).

    The head runs only at the given positions: [batch, P, vocab]. With no
    positions it runs at every position: [batch, length, vocab].
    """
    cfg = self.cfg
    x = Encoder(cfg, name="encoder")(embedded, attention_mask, deterministic)
    if masked_positions is not None:  # [B, T, H] -> [B, P, H]
      x = jnp.take_along_axis(x, masked_positions[..., None], axis=1)
    x = gelu(_dense(cfg, cfg.embedding_size, ("embed", "embed_in"),
                    "head_dense")(x))
    x = _layer_norm(cfg, "head_LayerNorm", axis="embed_in")(x)
    bias = self.param(
        "output_bias",
        nn.with_logical_partitioning(nn.initializers.zeros, ("vocab",)),
        (cfg.vocab_size,),
        cfg.param_dtype,
    )
    logits = linear_lib.linear(x, word_table.astype(cfg.dtype).T)
    return linear_lib.bias_add(logits.astype(jnp.float32),
                               bias.astype(jnp.float32))


def _defaults(input_ids, attention_mask, token_type_ids):
  if attention_mask is None:
    attention_mask = jnp.ones_like(input_ids)
  if token_type_ids is None:
    token_type_ids = jnp.zeros_like(input_ids)
  return attention_mask, token_type_ids


class ElectraDiscriminator(nn.Module):
  """Standalone discriminator, as transformers' `ElectraForPreTraining`."""

  cfg: ModelConfig

  def setup(self):
    self.embeddings = Embeddings(self.cfg)
    self.discriminator = DiscriminatorTower(self.cfg)

  def __call__(
      self,
      input_ids: Array,
      attention_mask: Array | None = None,
      token_type_ids: Array | None = None,
      deterministic: bool = True,
  ) -> Array:
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

  def __call__(
      self,
      input_ids: Array,
      attention_mask: Array | None = None,
      token_type_ids: Array | None = None,
      masked_positions: Array | None = None,
      deterministic: bool = True,
  ) -> Array:
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

  def generator_logits(
      self,
      input_ids: Array,
      input_mask: Array,
      segment_ids: Array,
      masked_positions: Array,
      deterministic: bool = True,
  ) -> Array:
    """Masked-LM logits [batch, P, vocab] at `masked_positions`."""
    emb = (self.generator_embeddings if self.untied_generator_embeddings
           else self.embeddings)
    x = emb(input_ids, segment_ids, deterministic)
    return self.generator(x, input_mask, emb.word_table(), masked_positions,
                          deterministic)

  def discriminator_logits(
      self,
      input_ids: Array,
      input_mask: Array,
      segment_ids: Array,
      deterministic: bool = True,
  ) -> Array:
    """Replaced-token logits [batch, length]."""
    x = self.embeddings(input_ids, segment_ids, deterministic)
    return self.discriminator(x, input_mask, deterministic)

  def __call__(self, input_ids, input_mask, segment_ids, masked_positions,
               deterministic: bool = True):
    """Runs both towers (used by `init`); returns (gen, disc) logits."""
    gen = disc = None
    if self.gen_cfg is not None:
      gen = self.generator_logits(input_ids, input_mask, segment_ids,
                                  masked_positions, deterministic)
    if self.disc_cfg is not None:
      disc = self.discriminator_logits(input_ids, input_mask, segment_ids,
                                       deterministic)
    return gen, disc


def pretraining_model(config: ml_collections.ConfigDict):
  """The `ElectraPretrainingModel` a run config describes."""
  electra = config.objective.electra_objective
  uniform = config.objective.uniform_generator
  if uniform and not electra:
    raise ValueError("uniform_generator needs electra_objective=True: the "
                     "MLM-only baseline trains the generator itself.")
  return ElectraPretrainingModel(
      disc_cfg=discriminator_config(config) if electra else None,
      gen_cfg=None if uniform else generator_config(config),
      untied_generator_embeddings=(
          electra and config.generator.untied_generator_embeddings),
  )


def discriminator_params(params: dict) -> dict:
  """The params of an `ElectraDiscriminator` inside pretraining params."""
  return {"embeddings": params["embeddings"],
          "discriminator": params["discriminator"]}


def generator_params(params: dict) -> dict:
  """The params of an `ElectraGenerator` inside pretraining params."""
  emb = params.get("generator_embeddings", params["embeddings"])
  return {"embeddings": emb, "generator": params["generator"]}
