"""Parity with transformers' PyTorch ELECTRA, and the import/export paths."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from electra_jax import convert
from electra_jax import model as model_lib
from electra_jax.convert import transformers_io

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

# (embedding_size, hidden_size, layers, heads): E == H and E != H.
CONFIGS = [(32, 32, 2, 2), (16, 48, 2, 4), (24, 64, 1, 1)]
VOCAB, LENGTH, BATCH = 97, 12, 3


def _hf_config(e, h, layers, heads, **kw):
  return transformers.ElectraConfig(
      vocab_size=VOCAB, embedding_size=e, hidden_size=h,
      num_hidden_layers=layers, num_attention_heads=heads,
      intermediate_size=2 * h, max_position_embeddings=64, **kw)


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  ids = rng.integers(1, VOCAB, (BATCH, LENGTH))
  mask = np.ones((BATCH, LENGTH), np.int64)
  mask[1, 7:] = 0  # Padding in the attention mask.
  mask[2, 3:] = 0
  ids[mask == 0] = 0
  types = np.zeros((BATCH, LENGTH), np.int64)
  types[:, LENGTH // 2:] = 1  # Both token types.
  return ids, mask, types


def _save_hf(model_cls, cfg, path, seed):
  torch.manual_seed(seed)
  hf = model_cls(cfg).eval()
  with torch.no_grad():  # Non-trivial biases and LayerNorm params.
    for name, p in hf.named_parameters():
      if "LayerNorm" in name or name.endswith("bias"):
        p.add_(0.1 * torch.randn_like(p))
  hf.save_pretrained(path)
  return hf


def _torch_out(hf, ids, mask, types):
  with torch.no_grad():
    out = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
             token_type_ids=torch.tensor(types))
  return out.logits.numpy()


def _masked_positions():
  return np.array([[1, 4, 9], [0, 2, 6], [1, 2, 0]])


@pytest.mark.parametrize("dims", CONFIGS)
def test_discriminator_parity_import_and_export(tmp_path, dims):
  ids, mask, types = _inputs()
  hf = _save_hf(transformers.ElectraForPreTraining, _hf_config(*dims),
                tmp_path / "hf", seed=1)
  module, params = convert.load_transformers(str(tmp_path / "hf"))
  assert isinstance(module, model_lib.ElectraDiscriminator)
  ours = module.apply({"params": params}, ids, mask, types)
  assert ours.shape == (BATCH, LENGTH)
  want = _torch_out(hf, ids, mask, types)
  np.testing.assert_allclose(ours, want, atol=1e-4, rtol=0)

  convert.save_transformers(module, params, str(tmp_path / "out"))
  back, info = transformers.ElectraForPreTraining.from_pretrained(
      str(tmp_path / "out"), output_loading_info=True)
  assert not any(info.values()), info
  np.testing.assert_allclose(_torch_out(back.eval(), ids, mask, types), want,
                             atol=1e-5, rtol=0)


@pytest.mark.parametrize("dims", CONFIGS)
def test_generator_parity_import_and_export(tmp_path, dims):
  ids, mask, types = _inputs(1)
  hf = _save_hf(transformers.ElectraForMaskedLM, _hf_config(*dims),
                tmp_path / "hf", seed=2)
  module, params = convert.load_transformers(str(tmp_path / "hf"))
  assert isinstance(module, model_lib.ElectraGenerator)
  want = _torch_out(hf, ids, mask, types)  # [B, T, V]
  full = module.apply({"params": params}, ids, mask, types)
  assert full.shape == (BATCH, LENGTH, VOCAB)
  np.testing.assert_allclose(full, want, atol=1e-4, rtol=0)
  pos = _masked_positions()
  at = module.apply({"params": params}, ids, mask, types,
                    masked_positions=jnp.asarray(pos))
  np.testing.assert_allclose(
      at, np.take_along_axis(want, pos[..., None], axis=1), atol=1e-4, rtol=0)

  convert.save_transformers(module, params, str(tmp_path / "out"))
  back, info = transformers.ElectraForMaskedLM.from_pretrained(
      str(tmp_path / "out"), output_loading_info=True)
  assert not any(info.values()), info
  np.testing.assert_allclose(_torch_out(back.eval(), ids, mask, types), want,
                             atol=1e-5, rtol=0)


def test_round_trip_is_identity_and_bytes_are_stable(tmp_path):
  _save_hf(transformers.ElectraForMaskedLM, _hf_config(16, 48, 2, 4),
           tmp_path / "hf", seed=3)
  module, params = convert.load_transformers(str(tmp_path / "hf"))
  convert.save_transformers(module, params, str(tmp_path / "a"))
  module2, params2 = convert.load_transformers(str(tmp_path / "a"))
  assert module2.cfg == module.cfg
  jax.tree.map(np.testing.assert_array_equal, params, params2)
  convert.save_transformers(module2, params2, str(tmp_path / "b"))
  for name in ("model.safetensors", "config.json"):
    assert (tmp_path / "a" / name).read_bytes() == (
        tmp_path / "b" / name).read_bytes()


def test_pretraining_pair_shares_embeddings(tmp_path):
  disc_cfg = _hf_config(16, 48, 2, 4)
  gen_cfg = _hf_config(16, 16, 2, 1)
  disc = _save_hf(transformers.ElectraForPreTraining, disc_cfg,
                  tmp_path / "d", seed=4)
  gen = transformers.ElectraForMaskedLM(gen_cfg).eval()
  gen.electra.embeddings.load_state_dict(disc.electra.embeddings.state_dict())
  gen.save_pretrained(tmp_path / "g")
  d, g, params = convert.load_pretraining_pair(str(tmp_path / "d"),
                                               str(tmp_path / "g"))
  assert set(params) == {"embeddings", "generator", "discriminator"}
  pretrain = model_lib.ElectraPretrainingModel(d, g)
  ids, mask, types = _inputs()
  pos = _masked_positions()
  gen_logits, disc_logits = pretrain.apply({"params": params}, ids, mask,
                                           types, pos)
  np.testing.assert_allclose(disc_logits, _torch_out(disc, ids, mask, types),
                             atol=1e-4, rtol=0)
  want = np.take_along_axis(_torch_out(gen, ids, mask, types),
                            pos[..., None], axis=1)
  np.testing.assert_allclose(gen_logits, want, atol=1e-4, rtol=0)

  # Embeddings that differ need the untied option.
  other = _save_hf(transformers.ElectraForMaskedLM, gen_cfg, tmp_path / "g2",
                   seed=5)
  del other
  with pytest.raises(convert.ConversionError, match="untied"):
    convert.load_pretraining_pair(str(tmp_path / "d"), str(tmp_path / "g2"))
  _, _, untied = convert.load_pretraining_pair(
      str(tmp_path / "d"), str(tmp_path / "g2"),
      untied_generator_embeddings=True)
  assert "generator_embeddings" in untied


def test_pytorch_bin_is_read_with_the_safe_loader(tmp_path):
  hf = _save_hf(transformers.ElectraForPreTraining, _hf_config(32, 32, 1, 2),
                tmp_path / "hf", seed=6)
  os.remove(tmp_path / "hf" / "model.safetensors")
  torch.save(hf.state_dict(), tmp_path / "hf" / "pytorch_model.bin")
  module, params = convert.load_transformers(str(tmp_path / "hf"))
  ids, mask, types = _inputs()
  np.testing.assert_allclose(module.apply({"params": params}, ids, mask, types),
                             _torch_out(hf, ids, mask, types), atol=1e-4)
  # A pickle with arbitrary objects is refused, not executed.
  torch.save({"x": object()}, tmp_path / "hf" / "pytorch_model.bin")
  with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
    convert.load_transformers(str(tmp_path / "hf"))


def _small_dir(tmp_path):
  _save_hf(transformers.ElectraForPreTraining, _hf_config(32, 32, 1, 2),
           tmp_path / "hf", seed=7)
  return tmp_path / "hf"


def test_bad_inputs_give_clear_errors(tmp_path):
  with pytest.raises(convert.ConversionError, match="not a directory"):
    convert.load_transformers(str(tmp_path / "nope"))
  path = _small_dir(tmp_path)
  tensors, _ = transformers_io.read_tensors(str(path))
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top

  # Missing key: the error names the file and the parameter.
  key = "electra.encoder.layer.0.attention.self.key.bias"
  save_file({k: v for k, v in tensors.items() if k != key},
            str(path / "model.safetensors"))
  with pytest.raises(convert.ConversionError,
                     match=f"model.safetensors: missing parameter {key}"):
    convert.load_transformers(str(path))

  # Wrong shape.
  bad = dict(tensors)
  bad[key] = np.zeros((5,), np.float32)
  save_file(bad, str(path / "model.safetensors"))
  with pytest.raises(convert.ConversionError, match=f"{key} has shape"):
    convert.load_transformers(str(path))

  # Unknown extra tensor.
  extra = dict(tensors, **{"electra.pooler.weight": np.zeros(3, np.float32)})
  save_file(extra, str(path / "model.safetensors"))
  with pytest.raises(convert.ConversionError, match="electra.pooler.weight"):
    convert.load_transformers(str(path))

  # Not an ELECTRA config.
  cfg = json.loads((path / "config.json").read_text())
  cfg["model_type"] = "bert"
  (path / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(convert.ConversionError, match="config.json: model_type"):
    convert.load_transformers(str(path))

  os.remove(path / "config.json")
  with pytest.raises(convert.ConversionError, match="config.json: missing"):
    convert.load_transformers(str(path))


def test_export_rejects_params_of_another_config(tmp_path):
  cfg = model_lib.ModelConfig(vocab_size=50, embedding_size=16, hidden_size=32,
                              num_hidden_layers=1, num_attention_heads=2,
                              intermediate_size=64)
  module = model_lib.ElectraDiscriminator(cfg)
  params = module.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
  params = params["params"]
  small = model_lib.ElectraDiscriminator(
      model_lib.ModelConfig(**{**cfg.__dict__, "num_hidden_layers": 2}))
  with pytest.raises(convert.ConversionError, match="missing"):
    convert.save_transformers(small, params, str(tmp_path / "x"))
