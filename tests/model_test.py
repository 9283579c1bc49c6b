"""Model shapes, stable parameter names, dtypes and preset sizes."""

import collections
import functools
import re

from flax import traverse_util
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from electra_jax import model as model_lib
from electra_jax import train as train_lib
from electra_jax.nn import attention as attention_lib
from electra_jax.nn import dropout as dropout_lib
from tests import testing

BERT_VOCAB = 30522  # The presets' reference vocabulary (uncased WordPiece).


def _count(module, *args):
  shapes = jax.eval_shape(module.init, jax.random.key(0), *args)
  return sum(x.size for x in jax.tree.leaves(shapes))


@pytest.mark.parametrize("name,millions", [("small", 13.5), ("base", 110),
                                           ("large", 335)])
def test_discriminator_preset_sizes(name, millions):
  cfg = train_lib.discriminator_config(testing.load_config(name), BERT_VOCAB)
  n = _count(model_lib.ElectraDiscriminator(cfg), jnp.zeros((1, 8), jnp.int32))
  assert abs(n / 1e6 - millions) / millions < 0.01, n


def test_generator_sizes_follow_the_reference():
  small = train_lib.generator_config(testing.load_config("small"), BERT_VOCAB)
  assert (small.hidden_size, small.num_attention_heads,
          small.intermediate_size, small.num_hidden_layers) == (64, 1, 256, 12)
  base = train_lib.generator_config(testing.load_config("base"), BERT_VOCAB)
  assert (base.hidden_size, base.num_attention_heads,
          base.intermediate_size, base.embedding_size) == (256, 4, 1024, 768)
  plus = train_lib.generator_config(testing.load_config("small_plus"),
                                   BERT_VOCAB)
  assert plus.hidden_size == 256 and plus.embedding_size == 128
  mlm = testing.load_config("small")
  mlm.objective.electra_objective = False
  assert (train_lib.generator_config(mlm, BERT_VOCAB)
          == train_lib.discriminator_config(mlm, BERT_VOCAB))


def _tiny_pretraining():
  config = testing.load_config("tiny")
  config.model.vocab_size = 101
  model = train_lib.pretraining_model(config, config.model.vocab_size)
  ids = jnp.ones((2, 16), jnp.int32)
  pos = jnp.zeros((2, 3), jnp.int32)
  return model, (ids, ids, jnp.zeros_like(ids), pos)


def test_pretraining_shapes_names_and_dtypes():
  model, args = _tiny_pretraining()
  variables = jax.eval_shape(model.init, jax.random.key(0), *args)
  flat = traverse_util.flatten_dict(nn.unbox(variables["params"]), sep="/")
  assert all(v.dtype == jnp.float32 for v in flat.values())
  # Stable names: convert/ and checkpoints depend on them.
  for name in [
      "embeddings/word_embeddings/embedding",
      "embeddings/position_embeddings/embedding",
      "embeddings/token_type_embeddings/embedding",
      "embeddings/LayerNorm/scale",
      "discriminator/encoder/embeddings_project/kernel",
      "discriminator/encoder/layer_1/query/kernel",
      "discriminator/encoder/layer_1/attention_LayerNorm/bias",
      "discriminator/encoder/layer_1/output_LayerNorm/scale",
      "discriminator/head_prediction/kernel",
      "generator/encoder/layer_0/intermediate/kernel",
      "generator/head_LayerNorm/scale",
      "generator/output_bias",
  ]:
    assert name in flat, name
  assert not any(k.startswith("generator_embeddings") for k in flat)
  assert "generator/encoder/embeddings_project/kernel" not in flat  # E == Hg.

  gen, disc = model.apply(model.init(jax.random.key(0), *args), *args)
  assert gen.shape == (2, 3, 101) and gen.dtype == jnp.float32
  assert disc.shape == (2, 16) and disc.dtype == jnp.float32


def test_init_follows_the_reference():
  # The reference's dense layers without an initializer (embeddings_project
  # in both towers, the discriminator's dense(1)) get TF's glorot uniform:
  # U(-b, b) with b = sqrt(6 / (fan_in + fan_out)), std b / sqrt(3). All
  # other kernels and tables: normal(0.02) truncated at 2 stddev, whose std
  # is 0.02 * 0.8796 (the std of a unit normal truncated to [-2, 2]).
  config = testing.load_config("small")
  config.model.vocab_size = 101
  config.model.num_hidden_layers = 1
  model = train_lib.pretraining_model(config, config.model.vocab_size)
  ids = jnp.ones((1, 8), jnp.int32)
  args = (ids, ids, jnp.zeros_like(ids), jnp.zeros((1, 2), jnp.int32))
  params = nn.unbox(model.init(jax.random.key(0), *args)["params"])
  flat = {k: np.asarray(v) for k, v in
          traverse_util.flatten_dict(params, sep="/").items()}
  glorot = {"discriminator/encoder/embeddings_project/kernel": (128, 256),
            "generator/encoder/embeddings_project/kernel": (128, 64),
            "discriminator/head_prediction/kernel": (256, 1)}
  for name, (fan_in, fan_out) in glorot.items():
    x, bound = flat[name], np.sqrt(6 / (fan_in + fan_out))
    assert x.shape == (fan_in, fan_out)
    assert np.abs(x).max() <= bound and np.abs(x).max() > 0.97 * bound, name
    np.testing.assert_allclose(x.std(), bound / np.sqrt(3), rtol=0.08)
  normal = [k for k in flat if k.endswith(("kernel", "embedding"))
            and k not in glorot]
  assert len(normal) == 17  # 3 tables, 2 x 6 per layer, 2 head_dense.
  for name in normal:
    x = flat[name]
    assert np.abs(x).max() <= 0.04, name
    np.testing.assert_allclose(x.std(), 0.02 * 0.8796, rtol=0.1, err_msg=name)
  for name, x in flat.items():  # Biases zeros, LayerNorm scales ones.
    if name not in glorot and name not in normal:
      assert name.endswith(("bias", "scale")), name
      np.testing.assert_array_equal(x, float(name.endswith("scale")))


def test_sinusoidal_position_init_is_the_transformer_table_at_init_scale():
  config = testing.load_config("small")
  config.model.vocab_size = 101
  config.model.num_hidden_layers = 1
  config.model.position_embedding_init = "sinusoidal"
  model = train_lib.pretraining_model(config, config.model.vocab_size)
  ids = jnp.ones((1, 8), jnp.int32)
  args = (ids, ids, jnp.zeros_like(ids), jnp.zeros((1, 2), jnp.int32))
  params = nn.unbox(model.init(jax.random.key(0), *args)["params"])
  table = np.asarray(
      params["embeddings"]["position_embeddings"]["embedding"])
  num, width = table.shape  # 512 x 128.
  pos, i = np.arange(num)[:, None], np.arange(0, width, 2)[None]
  angle = pos / 10000.0 ** (i / width)
  want = np.empty((num, width))
  want[:, 0::2], want[:, 1::2] = np.sin(angle), np.cos(angle)
  np.testing.assert_allclose(table, want * 0.02 * np.sqrt(2), atol=2e-6)
  np.testing.assert_allclose(np.sqrt((table ** 2).mean()), 0.02, rtol=1e-3)
  # Position i + k is the same rotation of position i for every i.
  rot = np.zeros((width, width))
  for j, f in enumerate(1 / 10000.0 ** (np.arange(0, width, 2) / width)):
    c, s = np.cos(3 * f), np.sin(3 * f)
    rot[2 * j:2 * j + 2, 2 * j:2 * j + 2] = [[c, -s], [s, c]]
  np.testing.assert_allclose(table[:-3] @ rot, table[3:], atol=1e-5)
  with pytest.raises(ValueError, match="position_embedding_init='sine'"):
    model_lib.ModelConfig(vocab_size=9, embedding_size=8, hidden_size=8,
                          num_hidden_layers=1, num_attention_heads=1,
                          intermediate_size=8, position_embedding_init="sine")


def test_every_param_has_logical_axis_names():
  model, args = _tiny_pretraining()
  variables = jax.eval_shape(model.init, jax.random.key(0), *args)
  boxed = jax.tree.leaves(variables["params"],
                          is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert boxed and all(isinstance(x, nn.LogicallyPartitioned) for x in boxed)
  assert all(len(x.names) == x.value.ndim for x in boxed)


def test_bfloat16_compute_keeps_float32_params_and_logits():
  config = testing.load_config("tiny")
  config.model.vocab_size = 101
  config.model.dtype = "bfloat16"
  model = train_lib.pretraining_model(config, config.model.vocab_size)
  ids = jnp.ones((2, 16), jnp.int32)
  pos = jnp.zeros((2, 3), jnp.int32)
  variables = model.init(jax.random.key(0), ids, ids, ids, pos)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables))
  gen, disc = model.apply(variables, ids, ids, ids, pos)
  assert gen.dtype == disc.dtype == jnp.float32


def test_bfloat16_embedding_gradients_accumulate_in_float32():
  # 4096 lookups of one id: summed in bfloat16 (8-bit mantissa) the table's
  # gradient stalls far below the true sum; in float32 it matches the
  # float32 model's to within bfloat16 rounding of the terms.
  ids = jnp.full((16, 256), 7, jnp.int32)
  mask, types = jnp.ones_like(ids), ids % 2

  def grads(dtype):
    cfg = model_lib.ModelConfig(
        vocab_size=11, embedding_size=16, hidden_size=16,
        num_hidden_layers=1, num_attention_heads=1, intermediate_size=32,
        dtype=jnp.dtype(dtype))
    model = model_lib.ElectraDiscriminator(cfg)
    params = model.init(jax.random.key(0), ids[:1, :8])["params"]
    loss = lambda p: jnp.sum(  # pylint: disable=g-long-lambda
        model.apply({"params": p}, ids, mask, types).astype(jnp.float32))
    g = jax.grad(loss)(nn.unbox(params))["embeddings"]
    return {k: np.asarray(g[k]["embedding"]) for k in (
        "word_embeddings", "token_type_embeddings", "position_embeddings")}

  g32, g16 = grads("float32"), grads("bfloat16")
  for name in g32:
    assert g16[name].dtype == np.float32
    np.testing.assert_allclose(g16[name], g32[name], rtol=0.05,
                               atol=0.02 * np.abs(g32[name]).max())
  assert np.abs(g32["word_embeddings"][7]).max() > 1.0  # A large sum.


def test_untied_generator_embeddings_and_mlm_only():
  config = testing.load_config("tiny")
  config.model.vocab_size = 101
  config.generator.untied_generator_embeddings = True
  model = train_lib.pretraining_model(config, config.model.vocab_size)
  ids = jnp.ones((2, 16), jnp.int32)
  pos = jnp.zeros((2, 3), jnp.int32)
  params = model.init(jax.random.key(0), ids, ids, ids, pos)["params"]
  assert params["generator_embeddings"]["word_embeddings"][
      "embedding"].value.shape == (101, 32)  # Generator width: 0.5 * 64.
  config.generator.untied_generator_embeddings = False
  config.objective.electra_objective = False
  params = train_lib.pretraining_model(config, config.model.vocab_size).init(
      jax.random.key(0), ids, ids, ids, pos)["params"]
  assert set(params) == {"embeddings", "generator"}


def test_padding_does_not_change_unpadded_outputs():
  config = testing.load_config("tiny")
  config.model.vocab_size = 101
  cfg = train_lib.discriminator_config(config, config.model.vocab_size)
  module = model_lib.ElectraDiscriminator(cfg)
  ids = jax.random.randint(jax.random.key(1), (1, 10), 1, 101)
  params = module.init(jax.random.key(0), ids)["params"]
  short = module.apply({"params": params}, ids[:, :6])
  padded = jnp.where(jnp.arange(10) < 6, ids, 0)
  mask = (jnp.arange(10) < 6)[None].astype(jnp.int32)
  long = module.apply({"params": params}, padded, mask)
  np.testing.assert_allclose(short, long[:, :6], atol=1e-5)


def test_dropout_is_active_only_when_not_deterministic():
  config = testing.load_config("tiny")
  config.model.vocab_size = 101
  module = model_lib.ElectraDiscriminator(
      train_lib.discriminator_config(config, config.model.vocab_size))
  ids = jax.random.randint(jax.random.key(1), (2, 10), 1, 101)
  params = module.init(jax.random.key(0), ids)["params"]
  a = module.apply({"params": params}, ids)
  b = module.apply({"params": params}, ids)
  c = module.apply({"params": params}, ids, deterministic=False,
                   rngs={"dropout": jax.random.key(2)})
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)


def test_sequence_longer_than_positions_is_a_clear_error():
  config = testing.load_config("tiny")
  config.model.vocab_size = 101
  module = model_lib.ElectraDiscriminator(
      train_lib.discriminator_config(config, config.model.vocab_size))
  with pytest.raises(ValueError, match="max_position_embeddings"):
    module.init(jax.random.key(0), jnp.zeros((1, 129), jnp.int32))


@pytest.mark.parametrize("rate,shape", [(0.1, (64, 33, 256)),
                                        (0.5, (64, 33, 256)),
                                        (0.1, (64, 256, 33))])
def test_dropout_rate_and_scale(rate, shape):
  x = jnp.ones(shape, jnp.float32)
  y = np.asarray(dropout_lib.dropout(x, rate, jax.random.key(0)))
  dropped = (y == 0).mean()
  assert abs(dropped - rate) < 0.005
  assert abs(y.mean() - 1.0) < 0.01  # Inverted dropout keeps the mean.
  np.testing.assert_allclose(y[y != 0], 1.0 / (1.0 - rate), rtol=1e-4)
  again = np.asarray(dropout_lib.dropout(x, rate, jax.random.key(0)))
  np.testing.assert_array_equal(y, again)
  other = np.asarray(dropout_lib.dropout(x, rate, jax.random.key(1)))
  # A new key, an independent mask: they differ w.p. 2 r (1 - r).
  assert abs((y != other).mean() - 2 * rate * (1 - rate)) < 0.01
  np.testing.assert_array_equal(dropout_lib.dropout(x, 0.0, None), x)


def test_dropout_sites_sharing_a_key_draw_independent_masks():
  x = jnp.ones((32, 64, 128), jnp.float32)
  key = jax.random.key(0)
  a, b = (np.asarray(dropout_lib.dropout(x, 0.5, key, site=s)) != 0
          for s in (0, 1))
  assert abs((a != b).mean() - 0.5) < 0.01
  # Neighbouring elements (one hash gives four draws) are independent too.
  assert abs((a[..., 1:] != a[..., :-1]).mean() - 0.5) < 0.01


def test_dropout_with_other_key_implementations():
  # Non-Threefry keys (e.g. rbg) take `jax.random.bits`, with the same
  # rate, scale and per-site independence.
  x = jnp.ones((32, 64, 130), jnp.float32)
  key = jax.random.key(0, impl="rbg")
  a, b = (np.asarray(dropout_lib.dropout(x, 0.25, key, site=s))
          for s in (0, 1))
  assert abs((a == 0).mean() - 0.25) < 0.005
  np.testing.assert_allclose(a[a != 0], 1 / 0.75, rtol=1e-4)
  assert abs(((a != 0) != (b != 0)).mean() - 2 * 0.25 * 0.75) < 0.01


def test_dropout_hashes_once_per_four_elements():
  # The packed keep bits (u8, a quarter of the elements) are a fusion's
  # output, so each Threefry evaluation runs once, not once per element
  # that reads it (XLA would otherwise fuse the hash into the consumer);
  # and one Threefry (22 xors) is compiled for forward and backward.
  x = jnp.ones((8, 16, 64), jnp.float32)
  fn = jax.jit(lambda v, k: jax.vjp(
      lambda y: dropout_lib.dropout(y, 0.1, k), v)[1](v))
  hlo = fn.lower(x, jax.random.key(0)).compile().as_text()
  assert re.search(r"= u8\[8,16,16\]\S* fusion\(", hlo), hlo
  assert hlo.count(" xor(") <= 25, hlo.count(" xor(")


def test_dropout_mask_is_independent_of_sharding():
  x = jnp.ones((8, 16, 64), jnp.float32)
  mesh = jax.make_mesh((8,), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))
  sharded = jax.device_put(
      x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data")))
  fn = jax.jit(lambda v: dropout_lib.dropout(v, 0.1, jax.random.key(3)))
  np.testing.assert_array_equal(fn(sharded), fn(x))


def _pretraining_with(**model_overrides):
  config = testing.load_config("tiny")
  config.model.vocab_size = 101
  for key, value in model_overrides.items():
    config.model[key] = value
  return train_lib.pretraining_model(config, config.model.vocab_size)


def test_scan_and_remat_compute_the_same_function_with_the_same_params():
  rng = np.random.default_rng(0)
  ids = jnp.asarray(rng.integers(5, 101, (2, 16)), jnp.int32)
  mask = jnp.ones_like(ids).at[1, 12:].set(0)
  pos = jnp.asarray([[1, 4, 7], [2, 3, 9]], jnp.int32)
  args = (ids, mask, jnp.zeros_like(ids), pos)
  plain = _pretraining_with()
  params = nn.unbox(plain.init(jax.random.key(0), *args)["params"])

  def loss(model, p, deterministic=True):
    gen, disc = model.apply({"params": p}, *args, deterministic,
                            rngs={"dropout": jax.random.key(1)})
    return jnp.sum(gen ** 2) * 1e-3 + jnp.sum(disc ** 2)

  want = jax.value_and_grad(functools.partial(loss, plain))(params)
  want_train = jax.jit(functools.partial(loss, plain, deterministic=False))(
      params)
  assert np.isfinite(want_train) and want_train != want[0]
  for scan, policy in [(True, "none"), (True, "dots"), (False, "full"),
                       (True, "dots_no_batch")]:
    model = _pretraining_with(scan_layers=scan, remat_policy=policy)
    # The same param tree (checkpoints and export are unaffected).
    scan_init = nn.unbox(model.init(jax.random.key(0), *args)["params"])
    assert (jax.tree.structure(scan_init) == jax.tree.structure(params))
    got = jax.jit(jax.value_and_grad(functools.partial(loss, model)))(params)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
    for g, w in zip(jax.tree.leaves(got[1]), jax.tree.leaves(want[1])):
      np.testing.assert_allclose(g, w, rtol=2e-4, atol=1e-6)
    # With dropout on, each layer draws the same masks scanned or not.
    train = jax.jit(functools.partial(loss, model, deterministic=False))
    np.testing.assert_allclose(train(params), want_train, rtol=1e-5)


def test_each_tower_traces_its_layer_once():
  """The unrolled layers share one traced function per tower (tracing and
  differentiating 24 layers separately took seconds of the step's lowering);
  the values are checked against the plain submodule loop in the test
  above (scan) and against transformers in the parity tests."""
  _, args = _tiny_pretraining()
  for remat in ("none", "full"):
    model = _pretraining_with(num_hidden_layers=3, remat_policy=remat)
    variables = model.init(jax.random.key(0), *args)
    jaxpr = jax.make_jaxpr(lambda v, m=model: m.apply(v, *args))(variables)
    calls = collections.Counter(
        id(e.params["jaxpr"]) for e in jaxpr.eqns
        if e.primitive.name in ("jit", "pjit") and e.params["name"] == "apply")
    # One traced layer per tower, called once per layer.
    assert sorted(calls.values()) == [3, 3], calls


def test_unknown_remat_policy_is_a_clear_error():
  with pytest.raises(ValueError, match="remat_policy='some'.*dots"):
    _pretraining_with(remat_policy="some")


def test_threefry2x32_matches_jax():
  from jax.extend import random as jex_random  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  k1, k2 = (jnp.uint32(v) for v in rng.integers(0, 2**32, 2))
  x1, x2 = (jnp.asarray(rng.integers(0, 2**32, (7, 33)), jnp.uint32)
            for _ in range(2))
  want = jex_random.threefry2x32_p.bind(k1, k2, x1, x2)
  got = jax.jit(dropout_lib.threefry2x32)(k1, k2, x1, x2)
  for g, w in zip(got, want):
    np.testing.assert_array_equal(g, w)


def test_fused_attention_matches_ours():
  # The cuDNN path's argument handling, run with XLA's implementation here.
  ks = jax.random.split(jax.random.key(0), 3)
  q, k, v = (jax.random.normal(key, (2, 3, 8, 4)) for key in ks)
  mask = (jnp.arange(8)[None, :] < jnp.array([[8], [5]]))[:, None, None, :]
  want = attention_lib.attend(q, k, v, mask, impl="xla", rate=0.0,
                             dropout_rng=None, dtype=jnp.float32)
  got = attention_lib.fused(q, k, v, mask, implementation="xla")
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_attention_impl_errors_are_clear():
  with pytest.raises(ValueError, match="attention_impl='flash'"):
    _pretraining_with(attention_impl="flash")
  model = _pretraining_with(attention_impl="cudnn",
                            attention_probs_dropout_prob=0.0)
  ids = jnp.ones((1, 8), jnp.int32)
  with pytest.raises(ValueError, match="needs an NVIDIA GPU"):
    model.init(jax.random.key(0), ids, ids, ids, ids[:, :2])
