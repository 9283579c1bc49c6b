"""User mistakes at the command line: one line `electra_jax: error: ...`,
no traceback; exit code 2 for a flag mistake, 1 for the rest."""

import os
import subprocess
import sys

import pytest

from tests import testing


def _run(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", *args], cwd=testing.ROOT,
                        env=env, capture_output=True, text=True, timeout=300,
                        check=False)


def _cases(tmp):
  data = testing.write_dataset(str(tmp / "data"), num_train=16, num_eval=4)
  no_metadata = tmp / "partial"
  no_metadata.mkdir()
  empty = tmp / "empty_workdir"
  empty.mkdir()
  binary = tmp / "model.bin"
  binary.write_bytes(bytes(range(256)) * 64)
  blank = tmp / "blank.txt"
  blank.write_text("   \n\n\t\n")
  reviews = tmp / "reviews.csv"
  reviews.write_text("text,label\nA fine film.,1\nA dull film.,0\n")
  main = ["electra_jax.main", "--config=configs/tiny.py",
          f"--workdir={tmp / 'run'}"]
  workdir = f"--workdir={tmp / 'run'}"
  finetune = ["electra_jax.finetune", "--config=finetune:task=classification",
              workdir]
  return [
      (["electra_jax.main", "--config=configs/nope.py", workdir],
       "No such file or directory: 'configs/nope.py'", 2),
      (["electra_jax.main", "--config=configs/tiny.py", workdir,
        "--config.model.hiden_size=3"],
       'Did you mean "hidden_size" instead of "hiden_size"?', 2),
      (["electra_jax.finetune", "--config=configs/finetune.py:task=nope",
        workdir], "Unknown task 'nope'", 2),
      (main + [f"--config.input.data_dir={no_metadata}"],
       "has no metadata.json", 1),
      (main + [f"--config.input.data_dir={data}",
               f"--config.input.max_seq_length={testing.L}",
               "--config.model.vocab_size=999"],
       "pass --config.model.vocab_size=1000", 1),
      (["electra_jax.preprocess", f"--input={tmp}/nothing/*.txt",
        f"--output_dir={tmp / 'out'}"], "matched no files", 1),
      (["electra_jax.preprocess", f"--input={binary}",
        f"--output_dir={tmp / 'out'}"], "looks like a binary file", 1),
      (["electra_jax.preprocess", f"--input={no_metadata}",
        f"--output_dir={tmp / 'out'}"],
       "is a directory but not a dataset saved with Dataset.save_to_disk", 1),
      (["electra_jax.preprocess", f"--input={binary}", "--input_format=tsv",
        f"--output_dir={tmp / 'out'}"], "value should be one of", 2),
      (["electra_jax.export", f"--workdir={empty}",
        f"--output={tmp / 'export'}"], "config.json: missing", 1),
      (["electra_jax.plot", f"--workdir={empty}",
        f"--output={tmp / 'p.png'}"], "has no TensorBoard event files", 1),
      (["electra_jax.preprocess", f"--input={blank}",
        f"--output_dir={tmp / 'out'}"], "every file is empty or whitespace", 1),
      (["electra_jax.export", f"--workdir={tmp / 'not_there'}",
        f"--output={tmp / 'export'}"], "config.json: missing", 1),
      (["electra_jax.demo", f"--workdir={empty}", "The [MASK] sat."],
       "config.json: missing", 1),
      (["electra_jax.benchmark", "--config=nope"],
       "presets: base, finetune, large, mini, small", 2),
      (finetune + ["--config.optimizer.learning_rat=1"],
       'Did you mean "learning_rate"', 2),
      (finetune + [f"--config.data.train_file={tmp / 'none.csv'}",
                   f"--config.data.eval_file={tmp / 'none.csv'}",
                   f"--config.tokenizer={testing.write_vocab(str(tmp))}"],
       "none.csv does not exist", 1),
      (finetune + [f"--config.init_from={empty}",
                   f"--config.data.train_file={reviews}",
                   f"--config.data.eval_file={reviews}",
                   "--config.data.text_columns=text"],
       "config.json: missing", 1),
      (["electra_jax.finetune", "--config=finetune:task=classification",
        f"--workdir={empty}", "--config.mode=predict"],
       "predict mode needs a workdir that fine-tuning", 1),
  ]


@pytest.mark.parametrize("case", range(19))
def test_a_user_mistake_is_one_line(tmp_path, case):
  args, message, code = _cases(tmp_path)[case]
  result = _run(*args)
  assert result.returncode == code, result.stderr[-3000:]
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  lines = [l for l in result.stderr.splitlines()
           if l.startswith("electra_jax: error: ")]
  assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]


def test_a_checkpoint_of_another_model_is_one_line(tmp_path):
  data = testing.write_dataset(str(tmp_path / "data"), num_train=32,
                               num_eval=8)
  (tmp_path / "data" / "tokenizer.model").write_bytes(b"unused")  # Copied.
  run = ["electra_jax.main", "--config=tiny", f"--workdir={tmp_path / 'run'}",
         f"--config.input.data_dir={data}",
         f"--config.input.max_seq_length={testing.L}",
         "--config.input.batch_size=8", "--config.num_train_steps=1",
         "--config.eval.every_steps=0", "--config.eval.num_batches=1"]
  first = _run(*run)
  assert first.returncode == 0, first.stderr[-3000:]
  result = _run(*run, "--config.model.num_hidden_layers=3")
  assert result.returncode == 1, result.stderr[-3000:]
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  lines = [l for l in result.stderr.splitlines()
           if l.startswith("electra_jax: error: ")]
  assert len(lines) == 1 and "does not match" in lines[0], result.stderr[-2000:]


def test_a_fine_tuning_mistake_leaves_the_workdir_free(tmp_path):
  reviews = tmp_path / "reviews.csv"
  reviews.write_text("text,label\nA fine film.,1\nA dull film.,0\n")
  run = ["electra_jax.finetune", "--config=finetune:task=classification,size=tiny",
         f"--workdir={tmp_path / 'ft'}", f"--config.data.train_file={reviews}",
         f"--config.data.eval_file={reviews}", "--config.data.text_columns=text",
         f"--config.tokenizer={testing.write_vocab(str(tmp_path))}",
         "--config.num_train_epochs=1"]
  bad = _run(*run, "--config.loss_reduction=median")
  assert bad.returncode == 1 and "Traceback" not in bad.stderr, bad.stderr
  assert "set --config.loss_reduction to one of sum, mean" in bad.stderr
  good = _run(*run)  # The corrected command runs in the same workdir.
  assert good.returncode == 0, good.stderr[-3000:]
  again = _run(*run)
  assert again.returncode == 1 and "Traceback" not in again.stderr
  assert "already holds a fine-tuning run" in again.stderr, again.stderr
