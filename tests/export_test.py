"""Export to transformers, the demo, and no pickle on any load path."""

import os
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from electra_jax import demo
from electra_jax import export
from electra_jax import loop
from electra_jax import model as model_lib
from electra_jax import pretrained
from electra_jax import train as train_lib
from tests import testing

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  cache = str(tmp_path_factory.mktemp("data"))
  workdir = tmp_path_factory.mktemp("run")
  loop.train_and_evaluate(testing.tiny_config(cache, steps=2),
                          str(workdir))
  return workdir


def test_export_loads_in_transformers_with_equal_logits(tmp_path, run):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  config, params, _ = pretrained.restore_params(str(run))
  export.export(str(run), str(tmp_path / "a"))
  ids = np.random.default_rng(0).integers(5, config.model.vocab_size, (2, 12))
  mask = np.ones_like(ids)
  mask[1, 8:] = 0
  t_ids, t_mask = torch.tensor(ids), torch.tensor(mask)

  disc, info = transformers.ElectraForPreTraining.from_pretrained(
      str(tmp_path / "a" / "discriminator"), output_loading_info=True)
  assert not any(info.values()), info
  ours = model_lib.ElectraDiscriminator(
      train_lib.discriminator_config(config, config.model.vocab_size)).apply(
          {"params": model_lib.discriminator_params(params)}, ids, mask)
  with torch.no_grad():
    theirs = disc.eval()(input_ids=t_ids, attention_mask=t_mask).logits
  np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-4)

  gen, info = transformers.ElectraForMaskedLM.from_pretrained(
      str(tmp_path / "a" / "generator"), output_loading_info=True)
  assert not any(info.values()), info
  ours = model_lib.ElectraGenerator(train_lib.generator_config(
      config, config.model.vocab_size)).apply(
      {"params": model_lib.generator_params(params)}, ids, mask)
  with torch.no_grad():
    theirs = gen.eval()(input_ids=t_ids, attention_mask=t_mask).logits
  np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-4)
  # The run's tokenizer file as it was, and what transformers loads.
  for tower in ("discriminator", "generator"):
    for name in ("tokenizer.model", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json"):
      assert (tmp_path / "a" / tower / name).exists(), (tower, name)

  # Same params in, the same bytes out.
  export.export(str(run), str(tmp_path / "b"))
  for path in (tmp_path / "a").rglob("*"):
    if path.is_file():
      other = tmp_path / "b" / path.relative_to(tmp_path / "a")
      assert path.read_bytes() == other.read_bytes(), path


def test_load_discriminator_from_workdir_and_export(tmp_path, run):
  cfg, params = pretrained.load_discriminator(str(run))
  export.export(str(run), str(tmp_path / "x"))
  cfg2, params2 = pretrained.load_discriminator(str(tmp_path / "x"))
  assert cfg2.hidden_size == cfg.hidden_size
  assert set(params) == {"embeddings", "discriminator"}
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(params),
               jax.device_get(params2))


def test_demo_fills_masks_and_scores_tokens(run):
  result = demo.run(str(run), "The [MASK] of a [MASK] is returned.", top_k=3)
  assert len(result["fills"]) == 2
  for fill in result["fills"]:
    probs = [p for _, p in fill]
    assert len(fill) == 3 and probs == sorted(probs, reverse=True)
    assert 0 < sum(probs) <= 1 + 1e-6
  assert result["tokens"] and all(0 <= p <= 1 for _, p in result["tokens"])
  with pytest.raises(ValueError, match="at most 32"):
    demo.run(str(run), "word " * 64)


def test_no_pickle_on_any_load_path():
  """Loads go through safetensors, orbax/tensorstore and JSON only; the one
  torch.load reads .bin files with the weights-only (no-pickle) loader."""
  sources = (ROOT / "electra_jax").rglob("*.py")
  for path in sources:
    text = path.read_text()
    assert not re.search(r"^\s*import (c?pickle|dill)|pickle\.load|"
                         r"np\.load\(.*allow_pickle=True", text, re.M), path
    for call in re.findall(r"torch\.load\([^)]*\)", text):
      assert "weights_only=True" in call, (path, call)
