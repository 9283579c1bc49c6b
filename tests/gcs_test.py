"""The whole cycle on gs:// paths, against a local GCS emulator: preprocess
from a bucket into a bucket, pretrain with data and workdir in the bucket,
stop and resume exactly, export to the bucket, load the export in
transformers, fine-tune from it. Nothing local may be named like the bucket.
"""

import json
import os
import subprocess
import sys

from etils import epath
import jax
import numpy as np
import pytest

from electra_jax import loop
from electra_jax import model as model_lib
from electra_jax import pretrained
from electra_jax.data import default_corpus
from electra_jax.data import options as options_lib
from electra_jax.data import preprocess
from electra_jax.finetune import train as ft_train
from tests import testing

BUCKET = "electra-test"


@pytest.fixture(scope="module")
def gcs():
  with testing.gcs_emulator(BUCKET) as env:
    yield env


@pytest.fixture(scope="module")
def gs_data(gcs, tmp_path_factory):
  """A corpus uploaded to the bucket, preprocessed from there into it."""
  del gcs
  text = tmp_path_factory.mktemp("text")
  default_corpus.write_corpus(str(text), 300_000)
  for path in sorted(text.glob("*.txt")):
    epath.Path(path).copy(epath.Path(f"gs://{BUCKET}/text/{path.name}"))
  metadata = preprocess.preprocess(options_lib.Options(
      output_dir=f"gs://{BUCKET}/data",
      inputs=(f"gs://{BUCKET}/text/*.txt",), vocab_size=1000,
      max_seq_length=32, eval_fraction=0.1, num_workers=1))
  assert metadata["num_train_examples"] > 100
  return f"gs://{BUCKET}/data"


def _config(data_dir):
  config = testing.tiny_config(cache="")  # The cache is not used:
  config.input.data_dir = data_dir  # the data is in the bucket.
  return config


def _names(url):
  return sorted(p.name for p in epath.Path(url).iterdir())


def test_the_whole_cycle_lives_in_the_bucket(gs_data, tmp_path, monkeypatch):
  assert "metadata.json" in _names(gs_data)
  assert any(n.endswith(".array_record") for n in _names(gs_data))

  # Pretrain, stopped at step 3 (as a preemption would), then resumed.
  run, full = f"gs://{BUCKET}/run", f"gs://{BUCKET}/full"
  original = loop.PreemptionWatch.should_stop
  monkeypatch.setattr(loop.PreemptionWatch, "should_stop",
                      lambda self, m, step: step == 3 or original(self, m,
                                                                  step))
  loop.train_and_evaluate(_config(gs_data), run)
  monkeypatch.undo()
  assert pretrained.restore_params(run)[2] == 3
  loop.train_and_evaluate(_config(gs_data), run)
  loop.train_and_evaluate(_config(gs_data), full)
  _, resumed, step = pretrained.restore_params(run)
  _, uninterrupted, _ = pretrained.restore_params(full)
  assert step == 6
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(resumed),
               jax.device_get(uninterrupted))
  names = _names(run)
  assert {"checkpoints", "config.json", "tokenizer"} <= set(names), names
  assert any(n.startswith("events.out.tfevents") for n in names), names

  # Export through the command line, bucket to bucket.
  export = f"gs://{BUCKET}/export"
  result = subprocess.run(
      [sys.executable, "-m", "electra_jax.export", f"--workdir={run}",
       f"--output={export}"], cwd=testing.ROOT, env=dict(os.environ),
      capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert {"config.json", "model.safetensors", "tokenizer.model"} <= set(
      _names(f"{export}/discriminator"))

  # transformers loads the export (copied down: it reads local files).
  transformers = pytest.importorskip("transformers")
  torch = pytest.importorskip("torch")
  local = tmp_path / "discriminator"
  local.mkdir()
  for name in _names(f"{export}/discriminator"):
    epath.Path(f"{export}/discriminator/{name}").copy(local / name)
  disc = transformers.ElectraForPreTraining.from_pretrained(str(local))
  ids = np.array([[2, 10, 11, 12, 3]], np.int32)
  with torch.no_grad():
    theirs = disc.eval()(input_ids=torch.tensor(ids)).logits.numpy()
  # The run's own discriminator, read from the bucket's checkpoint.
  cfg, params = pretrained.load_discriminator(run)
  ours = model_lib.ElectraDiscriminator(cfg).apply({"params": params}, ids)
  np.testing.assert_allclose(ours, theirs, atol=1e-4)

  # Fine-tune from the bucket's export into the bucket.
  rows = testing.classification_rows(0, 64)
  csv_file = testing.write_csv(tmp_path / "train.csv", ["id", "text", "label"],
                               rows)
  ft_dir = f"gs://{BUCKET}/ft"
  config = testing.finetune_run_config(
      "classification", export, **{"data.train_file": csv_file,
                                   "data.eval_file": csv_file,
                                   "num_train_epochs": 1.0})
  ft_train.train_and_evaluate(config, ft_dir)
  results = json.loads(epath.Path(f"{ft_dir}/results.json").read_text())
  assert results["num_train_steps"] == 4  # 64 rows, batch 16, 1 epoch.
  assert 0.0 <= results["trials"][0]["final"]["accuracy"] <= 1.0
  assert "trial_0" in _names(ft_dir)
  # The encoder came from the bucket's export: the saved task has its size.
  task = json.loads(epath.Path(f"{ft_dir}/task.json").read_text())
  assert (task["model"]["hidden_size"], task["model"]["vocab_size"]) == (
      cfg.hidden_size, cfg.vocab_size)

  # Nothing local is named like the bucket (the old failure mode).
  for root in (testing.ROOT, os.getcwd(), str(tmp_path)):
    assert not os.path.exists(os.path.join(root, "gs:")), root


@pytest.mark.parametrize("args", [
    ["-m", "electra_jax.main", "--config=configs/tiny.py",
     "--workdir=gs://no-such-bucket/run"],
    ["-m", "electra_jax.preprocess", "--input=README.md",
     "--output_dir=gs://no-such-bucket/data"],
])
def test_a_missing_bucket_is_one_line_naming_the_path(gcs, args):
  result = subprocess.run([sys.executable, *args], cwd=testing.ROOT,
                          env=dict(os.environ, **gcs), capture_output=True,
                          text=True, timeout=300, check=False)
  assert result.returncode == 1, result.stderr[-2000:]
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  lines = [l for l in result.stderr.splitlines()
           if l.startswith("electra_jax: error:")]
  assert len(lines) == 1 and "gs://no-such-bucket/" in lines[0], lines
  assert "cannot write there" in lines[0]
