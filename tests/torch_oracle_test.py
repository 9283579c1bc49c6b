"""The PyTorch training-dynamics oracle (benchmarks/torch_oracle.py): a tiny
end-to-end run with JAX's event tags, and its optimizer against optax."""

import glob
import json
import math
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("tensorboardX")

# pylint: disable=g-import-not-at-top,wrong-import-position
from tensorboardX.proto import event_pb2
from transformers.models.electra import modeling_electra

from benchmarks import torch_oracle
from electra_jax import defaults
from electra_jax import optimizer
from electra_jax import train as train_lib
from electra_jax.nn import init as init_lib
from tests import testing
# pylint: enable=g-import-not-at-top,wrong-import-position


def read_scalars(workdir):
  """{tag: {step: value}} from the event files in `workdir`'s root."""
  out = {}
  for path in glob.glob(f"{workdir}/events.out.tfevents.*"):
    data, pos = open(path, "rb").read(), 0
    while pos + 12 <= len(data):
      (length,) = struct.unpack_from("<Q", data, pos)
      event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
      for value in event.summary.value:
        if value.WhichOneof("value") == "simple_value":
          out.setdefault(value.tag, {})[event.step] = value.simple_value
      pos += 12 + length + 4
  return out


def oracle_config(data_dir, steps, **overrides):
  config = testing.load_config("tiny")
  config.input.data_dir = data_dir
  config.model.vocab_size = 1000
  config.input.max_seq_length = testing.L
  config.input.batch_size = 4
  config.num_train_steps = steps
  config.log_every_steps = 3
  config.eval.every_steps = steps
  config.eval.num_batches = 2
  config.optimizer.num_warmup_steps = 2
  for section, values in overrides.items():
    config[section].update(values)
  return config


@pytest.fixture(name="data_dir", scope="module")
def _data_dir(tmp_path_factory):
  return testing.write_dataset(
      tmp_path_factory.mktemp("oracle") / "data", num_train=24, num_eval=6)


def test_tiny_run_writes_jax_tags(data_dir, tmp_path):
  config = oracle_config(data_dir, steps=6)
  final = torch_oracle.train_and_evaluate(config, str(tmp_path), threads=1)
  scalars = read_scalars(tmp_path)
  train = ["loss", "masked_lm_loss", "masked_lm_accuracy",
           "sampled_masked_lm_accuracy", "disc_loss", "disc_accuracy",
           "learning_rate", "grad_norm"]
  for tag in [f"train/{t}" for t in train] + [
      "perf/tokens_per_sec_per_device"]:
    assert sorted(scalars[tag]) == [3, 6], tag
  for tag in ("loss", "masked_lm_loss", "masked_lm_accuracy",
              "sampled_masked_lm_accuracy", "disc_loss", "disc_accuracy",
              "disc_precision", "disc_recall", "disc_auc",
              "disc_auc_unigram"):
    assert list(scalars[f"eval/{tag}"]) == [6], tag
    assert final[tag] == pytest.approx(scalars[f"eval/{tag}"][6], rel=1e-5)
  for points in scalars.values():
    assert all(math.isfinite(v) for v in points.values())
  # The logged rate is the mean schedule over the steps since the last log.
  schedule = optimizer.learning_rate_schedule(
      train_lib.optimizer_config(config), 6)
  want = np.mean([float(schedule(c)) for c in range(3, 6)])
  assert scalars["train/learning_rate"][6] == pytest.approx(want, rel=1e-6)
  saved = json.loads((tmp_path / "config.json").read_text())
  assert saved["input"]["mask_id"] == 4  # From metadata.json.


@pytest.mark.parametrize("overrides", [
    dict(objective=dict(electra_objective=False)),
    dict(objective=dict(uniform_generator=True)),
    dict(objective=dict(disallow_correct=True)),
    dict(generator=dict(untied_generator_embeddings=True)),
    dict(optimizer=dict(bias_correction=True, schedule="warmup_cosine",
                        num_warmup_steps=1))])
def test_variants_run(data_dir, tmp_path, overrides):
  final = torch_oracle.train_and_evaluate(
      oracle_config(data_dir, steps=2, **overrides), str(tmp_path), threads=1)
  assert math.isfinite(final["loss"])
  mlm_only = "electra_objective" in overrides.get("objective", {})
  assert ("disc_auc" in final) != mlm_only


def test_unsupported_optimizer_is_a_clear_error(data_dir, tmp_path):
  config = oracle_config(data_dir, steps=2, optimizer=dict(optimizer="lamb"))
  with pytest.raises(NotImplementedError, match="lamb"):
    torch_oracle.train_and_evaluate(config, str(tmp_path), threads=1)


@pytest.mark.parametrize("schedule", ["reference", "warmup_cosine",
                                      "constant"])
def test_learning_rate_matches_jax_schedule(schedule):
  config = defaults.get_config()
  config.optimizer.update(schedule=schedule, num_warmup_steps=10,
                          lr_decay_power=0.5)
  opt = train_lib.optimizer_config(config)
  want = optimizer.learning_rate_schedule(opt, 100)
  for count in (0, 1, 5, 10, 11, 57, 99, 100):  # float32 cos near pi: abs.
    assert torch_oracle.learning_rate(opt, 100, count) == pytest.approx(
        float(want(count)), rel=1e-6, abs=1e-6 * opt.learning_rate)


@pytest.mark.parametrize("bias_correction", [False, True])
def test_adamw_matches_jax_optimizer(bias_correction):
  config = defaults.get_config()
  config.num_train_steps = 10
  config.optimizer.update(num_warmup_steps=0, learning_rate=0.1,
                          weight_decay_rate=0.1,
                          bias_correction=bias_correction)
  tx, _ = optimizer.create_optimizer(train_lib.optimizer_config(config),
                                     config.num_train_steps)
  rng = np.random.default_rng(0)
  shapes = {"dense": {"kernel": (3, 4), "bias": (4,)},
            "LayerNorm": {"scale": (4,), "bias": (4,)}}
  names = {("dense", "kernel"): "dense.weight", ("dense", "bias"): "dense.bias",
           ("LayerNorm", "scale"): "LayerNorm.weight",
           ("LayerNorm", "bias"): "LayerNorm.bias"}
  params = jax.tree.map(lambda s: rng.normal(size=s).astype(np.float32),
                        shapes, is_leaf=lambda x: isinstance(x, tuple))
  torch_params = {n: torch.nn.Parameter(torch.tensor(params[a][b]))
                  for (a, b), n in names.items()}
  ours = torch_oracle.ReferenceAdamW(torch_params.items(), config.optimizer,
                                     config.num_train_steps)
  jax_params = jax.tree.map(jnp.asarray, params)
  state = tx.init(jax_params)
  for _ in range(3):  # Grad norms ~5 > max_grad_norm=1: clipping is on.
    grads = jax.tree.map(lambda p: rng.normal(size=p.shape).astype(
        np.float32), params)
    updates, state = tx.update(jax.tree.map(jnp.asarray, grads), state,
                               jax_params)
    jax_params = jax.tree.map(jnp.add, jax_params, updates)
    for (a, b), n in names.items():
      torch_params[n].grad = torch.tensor(grads[a][b])
    ours.step()
    for (a, b), n in names.items():
      np.testing.assert_allclose(torch_params[n].detach().numpy(),
                                 np.asarray(jax_params[a][b]), atol=1e-6)


@pytest.mark.parametrize("untied", [False, True])
def test_sinusoidal_position_start_is_electra_jax_s(untied):
  config = oracle_config("unused", steps=1,
                         model=dict(position_embedding_init="sinusoidal"),
                         generator=dict(untied_generator_embeddings=untied))
  oracle = torch_oracle.Oracle(config)
  tables = [m.position_embeddings.weight.detach().numpy()
            for m in oracle.modules()
            if isinstance(m, modeling_electra.ElectraEmbeddings)]
  assert len(tables) == (2 if untied else 1)
  for table in tables:
    want = init_lib.sinusoidal(config.model.initializer_range)(
        None, table.shape)
    np.testing.assert_allclose(table, np.asarray(want), atol=1e-7)
