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
  main = ["electra_jax.main", "--config=configs/tiny.py",
          f"--workdir={tmp / 'run'}"]
  workdir = f"--workdir={tmp / 'run'}"
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
  ]


@pytest.mark.parametrize("case", range(11))
def test_a_user_mistake_is_one_line(tmp_path, case):
  args, message, code = _cases(tmp_path)[case]
  result = _run(*args)
  assert result.returncode == code, result.stderr[-3000:]
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  lines = [l for l in result.stderr.splitlines()
           if l.startswith("electra_jax: error: ")]
  assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]
