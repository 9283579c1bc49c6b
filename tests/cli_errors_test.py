"""User mistakes at the command line: one line `electra_jax: error: ...`,
exit code 1, no traceback."""

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
  main = ["electra_jax.main", "--config=configs/tiny.py",
          f"--workdir={tmp / 'run'}"]
  return [
      (main + [f"--config.input.data_dir={no_metadata}"],
       "has no metadata.json"),
      (main + [f"--config.input.data_dir={data}",
               f"--config.input.max_seq_length={testing.L}",
               "--config.model.vocab_size=999"],
       "pass --config.model.vocab_size=1000"),
      (["electra_jax.preprocess", f"--input={tmp}/nothing/*.txt",
        f"--output_dir={tmp / 'out'}"], "matched no files"),
      (["electra_jax.export", f"--workdir={empty}",
        f"--output={tmp / 'export'}"], "config.json: missing"),
      (["electra_jax.plot", f"--workdir={empty}",
        f"--output={tmp / 'p.png'}"], "has no TensorBoard event files"),
  ]


@pytest.mark.parametrize("case", range(5))
def test_a_user_mistake_is_one_line(tmp_path, case):
  args, message = _cases(tmp_path)[case]
  result = _run(*args)
  assert result.returncode == 1, result.stderr[-3000:]
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  lines = [l for l in result.stderr.splitlines()
           if l.startswith("electra_jax: error: ")]
  assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]
