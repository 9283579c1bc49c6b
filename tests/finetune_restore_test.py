"""Restoring pretrained discriminators (or an MLM-only run's generator
encoder) into task models, and the tokenizer that comes with them."""

import dataclasses
import functools
import logging
import json
import os
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from safetensors import numpy as safetensors_numpy

from electra_jax import errors
from electra_jax import export
from electra_jax import loop
from electra_jax import model as model_lib
from electra_jax import pretrained
from electra_jax import train as train_lib
from electra_jax.data import input_pipeline
from electra_jax.finetune import heads
from electra_jax.finetune import restore
from electra_jax.finetune import train as ft_train
from tests import testing
from tests.testing import fast_compiles  # pylint: disable=W0611
from tests.testing import hf_dir  # pylint: disable=unused-import


@functools.lru_cache(maxsize=None)  # One compile for the tests below.
def _task_params(cfg, kind="classification", num_labels=3, style="official"):
  module = heads.TaskModel(cfg, kind, num_labels, style)
  ids = np.ones((2, 8), np.int32)
  return module, jax.jit(lambda r: nn.unbox(module.init(r, ids, ids, ids)))(
      jax.random.key(1))["params"]


def _flat(tree):
  return {jax.tree_util.keystr(p): np.asarray(v)
          for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_transformers_restore_gives_the_pretrained_weights_exactly(hf_dir):
  cfg, disc = pretrained.load_discriminator(hf_dir)
  _, fresh = _task_params(cfg)
  subtrees = heads.pretrained_subtrees(disc)
  heads.check_compatible(fresh, subtrees)
  params = heads.merge_pretrained(fresh, subtrees)
  # Every encoder leaf is the checkpoint's; nothing of the RTD head is kept.
  assert set(params) == {"embeddings", "encoder", "head"}
  assert "embeddings_project" in params["encoder"]  # E=16 != H=32.
  for key, source in (("embeddings", disc["embeddings"]),
                      ("encoder", disc["discriminator"]["encoder"])):
    got, want = _flat(params[key]), _flat(source)
    assert got.keys() == want.keys()
    for name in want:
      np.testing.assert_array_equal(got[name], want[name])
  # Independently of convert/: straight from the saved state dict.
  state = safetensors_numpy.load_file(
      os.path.join(hf_dir, "model.safetensors"))
  np.testing.assert_array_equal(
      params["encoder"]["layer_1"]["query"]["kernel"],
      state["electra.encoder.layer.1.attention.self.query.weight"].T)
  np.testing.assert_array_equal(
      params["embeddings"]["word_embeddings"]["embedding"],
      state["electra.embeddings.word_embeddings.weight"])
  # The head is the fresh initialisation, not the discriminator's head.
  np.testing.assert_array_equal(params["head"]["output"]["kernel"],
                                fresh["head"]["output"]["kernel"])
  assert params["head"]["output"]["kernel"].shape == (32, 3)
  assert "discriminator_predictions.dense.weight" in state  # Was there.


def test_pretraining_params_restore_without_generator():
  pre_config = model_lib.ModelConfig(**testing.TINY)
  module = model_lib.ElectraPretrainingModel(
      pre_config, dataclasses.replace(pre_config, hidden_size=16,
                                      num_attention_heads=1,
                                      intermediate_size=32))
  ids = np.ones((1, 8), np.int32)
  shapes = jax.eval_shape(lambda: nn.unbox(module.init(
      jax.random.key(0), ids, ids, ids, ids[:, :2])))["params"]
  rng = np.random.default_rng(0)  # Distinct values in every leaf.
  full = jax.tree.map(lambda s: rng.normal(size=s.shape).astype(np.float32),
                      shapes)
  disc = model_lib.discriminator_params(full)
  _, fresh = _task_params(pre_config)
  params = heads.merge_pretrained(fresh, heads.pretrained_subtrees(disc))
  assert set(params) == {"embeddings", "encoder", "head"}
  for key, source in (("embeddings", full["embeddings"]),
                      ("encoder", full["discriminator"]["encoder"])):
    got, want = _flat(params[key]), _flat(source)
    assert got.keys() == want.keys()
    for name in want:
      np.testing.assert_array_equal(got[name], want[name])
  generator_leaves = {id(x) for x in jax.tree.leaves(full["generator"])}
  assert not generator_leaves & {id(x) for x in jax.tree.leaves(params)}
  assert params["head"]["output"]["kernel"].shape == (32, 3)


def test_mismatched_architecture_is_refused():
  def shapes(cfg):
    module = heads.TaskModel(cfg, "classification", 3)
    ids = np.ones((1, 4), np.int32)
    return jax.eval_shape(lambda: nn.unbox(module.init(
        jax.random.key(0), ids, ids, ids)))["params"]
  fresh = shapes(model_lib.ModelConfig(**testing.TINY))
  wrong = shapes(model_lib.ModelConfig(**{**testing.TINY,
                                         "intermediate_size": 48}))
  heads.check_compatible(fresh, {"encoder": fresh["encoder"]})
  with pytest.raises(ValueError, match="do not fit"):
    heads.check_compatible(fresh, {"encoder": wrong["encoder"]})


def test_reinit_keeps_fresh_init_where_asked(hf_dir):
  config = testing.finetune_config("task=classification,size=small")
  config.init_from = hf_dir
  config.reinit_top_layers, config.reinit_embeddings = 1, True
  task = restore.resolve(config)
  assert task.fresh == (("embeddings",), ("encoder", "embeddings_project"),
                        ("encoder", "layer_1"))
  # The fine-tuning init itself (jitted as in training), restored from the
  # resolved task.
  tx = optax.sgd(0.1)
  create = jax.jit(functools.partial(
      ft_train._create_state, model=task.model, length=8, tx=tx,  # pylint: disable=protected-access
      fresh=task.fresh))
  fresh = create(jax.random.key(3), None).params
  params = create(jax.random.key(3), task.pretrained).params
  got, init = _flat(params), _flat(fresh)
  want = _flat({k: task.pretrained[k] for k in ("embeddings", "encoder")})
  restored = {n for n in want if np.array_equal(got[n], want[n])}
  kept = {n for n in got if np.array_equal(got[n], init[n])}
  assert restored and kept
  for name in want:
    fresh_path = ("['embeddings']" in name or "embeddings_project" in name
                  or "layer_1" in name)
    assert (name in kept, name in restored) == (fresh_path, not fresh_path)
  assert all(n in kept for n in got if n.startswith("['head']"))


def test_reinit_more_layers_than_the_encoder_has_is_refused(hf_dir):
  config = testing.finetune_config("task=classification,size=small")
  config.init_from = hf_dir
  config.reinit_top_layers = 3
  with pytest.raises(errors.UserError,
                     match="reinit_top_layers=3 but the encoder has 2"):
    restore.resolve(config)


def test_reinit_without_init_from_is_reported(hf_dir, caplog):
  config = testing.finetune_config("task=classification,size=small")
  config.tokenizer = os.path.join(hf_dir, "vocab.txt")
  config.reinit_embeddings = True
  with caplog.at_level(logging.WARNING):
    task = restore.resolve(config)
  assert task.pretrained is None and not task.fresh
  assert any("have no effect without --config.init_from" in r.getMessage()
             for r in caplog.records)


def test_resolve_adopts_the_checkpoint_architecture_and_tokenizer(hf_dir):
  config = testing.finetune_config("task=classification,size=small")
  config.init_from = hf_dir
  task = restore.resolve(config)
  assert task.config.model.hidden_size == 32
  assert task.config.model.num_hidden_layers == 2
  assert task.cfg.embedding_size == 16
  assert task.config.tokenizer == os.path.join(hf_dir, "vocab.txt")
  assert task.tokenizer.special_ids["cls_id"] == 2
  assert set(task.pretrained) == {"embeddings", "encoder"}


def test_tokenizer_lookup(tmp_path):
  config = testing.finetune_config("task=sst2")
  with pytest.raises(ValueError, match="config.tokenizer"):
    restore.find_tokenizer(config)
  config.init_from = str(tmp_path)
  with pytest.raises(FileNotFoundError, match="No tokenizer"):
    restore.find_tokenizer(config)
  export = tmp_path / "discriminator"
  export.mkdir()
  (export / "tokenizer.model").write_bytes(b"")
  assert restore.find_tokenizer(config) == str(export / "tokenizer.model")
  config.tokenizer = "/explicit/vocab.txt"
  assert restore.find_tokenizer(config) == "/explicit/vocab.txt"


@pytest.mark.parametrize("kind,style,leaves,shape", [
    ("classification", "official", {"output"}, (3, 4)),
    ("classification", "transformers", {"dense", "output"}, (3, 4)),
    ("regression", "official", {"output"}, (3,)),
    ("tagging", "official", {"output"}, (3, 8, 4))])  # qa: qa_head_test.
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_heads(kind, style, leaves, shape, dtype):
  cfg = model_lib.ModelConfig(**testing.TINY, dtype=jnp.dtype(dtype))
  module = heads.TaskModel(cfg, kind, 4, style)
  ids = np.ones((3, 8), np.int32)
  variables = jax.eval_shape(lambda: nn.unbox(module.init(
      jax.random.key(0), ids, ids, ids)))
  assert set(variables["params"]["head"]) == leaves
  out = jax.eval_shape(lambda v: module.apply(v, ids, ids, ids), variables)
  assert out.shape == shape and out.dtype == np.float32  # Upcast logits.
  assert {x.dtype for x in jax.tree.leaves(variables)} == {np.dtype("float32")}


@pytest.fixture(scope="module")
def mlm_only_run(tmp_path_factory):
  """A 2-step pretraining run of the MLM-only (BERT) baseline."""
  config = testing.tiny_config(
      str(tmp_path_factory.mktemp("data")), steps=2)
  config.objective.electra_objective = False
  workdir = tmp_path_factory.mktemp("mlm_only")
  loop.train_and_evaluate(config, str(workdir))
  return workdir


def _assert_generator_encoder(subtrees, saved):
  """`subtrees` are exactly the run's embeddings and generator encoder."""
  assert set(subtrees) == {"embeddings", "encoder"}
  assert "embeddings_project" in subtrees["encoder"]  # E=32 != H=64.
  for key, source in (("embeddings", saved["embeddings"]),
                      ("encoder", saved["generator"]["encoder"])):
    got, want = _flat(subtrees[key]), _flat(source)
    assert got.keys() == want.keys()
    for name in want:
      np.testing.assert_array_equal(got[name], want[name])


def test_mlm_only_run_restores_its_generator_encoder(tmp_path, mlm_only_run,
                                                     caplog):
  config, saved, _ = pretrained.restore_params(str(mlm_only_run))
  saved = jax.device_get(saved)
  assert set(saved) == {"embeddings", "generator"}
  # The full-size generator's encoder is the tree a discriminator of the
  # run's size has: same names, same shapes.
  ids = np.ones((1, 8), np.int32)
  disc = jax.eval_shape(lambda: nn.unbox(model_lib.ElectraDiscriminator(
      train_lib.discriminator_config(config, config.model.vocab_size)).init(
          jax.random.key(0), ids)))["params"]
  assert (jax.tree.map(lambda x: x.shape, saved["generator"]["encoder"])
          == jax.tree.map(lambda x: x.shape, disc["discriminator"]["encoder"]))

  ft = testing.finetune_config("task=classification")
  ft.init_from = str(mlm_only_run)
  ft.data.labels = "neg,pos"
  with caplog.at_level(logging.INFO):
    task = restore.resolve(ft)
  assert sum("MLM-only run" in r.getMessage() for r in caplog.records) == 1
  _assert_generator_encoder(task.pretrained, saved)
  run_cfg = train_lib.discriminator_config(config, config.model.vocab_size)
  for name in restore.ARCHITECTURE:
    assert getattr(task.cfg, name) == getattr(run_cfg, name), name
  assert task.config.tokenizer == pretrained.tokenizer_path(
      str(mlm_only_run))

  # Its export has only generator/ (an ElectraForMaskedLM); the same
  # encoder comes back from there, and the tokenizer stored with it.
  assert export.export(str(mlm_only_run), str(tmp_path / "x")) == [
      str(tmp_path / "x" / "generator")]
  ft.init_from = str(tmp_path / "x")
  task = restore.resolve(ft)
  _assert_generator_encoder(task.pretrained, saved)
  assert os.path.dirname(task.config.tokenizer) == str(
      tmp_path / "x" / "generator")


def test_mlm_only_run_fine_tunes(tmp_path, mlm_only_run):
  train = testing.write_csv(tmp_path / "train.csv", ["id", "text", "label"],
                            testing.classification_rows(0, 32))
  config = testing.finetune_run_config(
      "classification", str(mlm_only_run), num_train_epochs=1,
      **{"data.train_file": train, "data.eval_file": train})
  results = ft_train.train_and_evaluate(config, str(tmp_path / "work"))
  assert results["num_train_steps"] == 2
  assert np.isfinite(results["trials"][0]["best"]["accuracy"])


def test_no_encoder_to_fine_tune_is_a_clear_error(tmp_path, mlm_only_run,
                                                  monkeypatch):
  # A run's workdir without its checkpoints/ (none saved, or not copied).
  workdir = tmp_path / "run"
  workdir.mkdir()
  shutil.copy(mlm_only_run / "config.json", workdir)
  shutil.copytree(mlm_only_run / input_pipeline.TOKENIZER_DIR,
                  workdir / input_pipeline.TOKENIZER_DIR)
  with pytest.raises(FileNotFoundError,
                     match="no checkpoints/, so neither a discriminator nor "
                     "an MLM-only generator"):
    restore.load_encoder(str(workdir))
  # A checkpoint with neither tower (no config builds one; the guard stays).
  (workdir / "checkpoints").mkdir()
  monkeypatch.setattr(pretrained, "restore_params",
                      lambda path: (None, {"embeddings": {}}, 0))
  with pytest.raises(ValueError, match="neither a discriminator nor a "
                     r"generator \(params \['embeddings'\]\)"):
    restore.load_encoder(str(workdir))


def test_a_run_older_than_a_config_key_still_restores(tmp_path, mlm_only_run):
  # Runs made before `model.position_embedding_init` existed (their
  # config.json lacks it) restore for fine-tuning, export and the probe,
  # with the key's default: what they ran with.
  old = tmp_path / "old_run"
  shutil.copytree(mlm_only_run, old)
  record = json.loads((old / "config.json").read_text())
  del record["model"]["position_embedding_init"]
  (old / "config.json").write_text(json.dumps(record))
  config = pretrained.load_run_config(str(old))
  assert config.model.position_embedding_init == "normal"
  cfg, subtrees = restore.load_encoder(str(old))
  assert set(subtrees) == {"embeddings", "encoder"}
  assert cfg.hidden_size == config.model.hidden_size
