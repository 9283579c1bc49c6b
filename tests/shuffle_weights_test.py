"""experiments/shuffle_weights.py: a loadable copy whose encoder tensors keep
their values but not their order."""

import os
import subprocess
import sys

import numpy as np
from safetensors import numpy as safetensors_numpy

from electra_jax import pretrained
from electra_jax.finetune import heads
from tests.testing import hf_dir  # pylint: disable=unused-import

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "experiments", "shuffle_weights.py")


def run(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, SCRIPT, *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300,
                        check=False)


def test_encoder_is_permuted_and_the_copy_fine_tunes_as_any(tmp_path, hf_dir):
  out = str(tmp_path / "shuffled")
  proc = run(f"--input={hf_dir}", f"--output={out}", "--seed=3")
  assert proc.returncode == 0, proc.stderr[-2000:]
  before = safetensors_numpy.load_file(os.path.join(hf_dir,
                                                    "model.safetensors"))
  after = safetensors_numpy.load_file(os.path.join(out, "model.safetensors"))
  assert before.keys() == after.keys()
  moved = 0
  for name, value in before.items():
    if name.startswith("electra.encoder."):
      # Same values (so mean, spread, norm), other places.
      np.testing.assert_array_equal(np.sort(after[name], None),
                                    np.sort(value, None))
      moved += value.size > 1 and not np.array_equal(after[name], value)
    else:
      np.testing.assert_array_equal(after[name], value)
  assert moved >= 8
  assert os.path.isfile(os.path.join(out, "vocab.txt"))  # The tokenizer too.
  # Restores as fine-tuning restores any transformers directory.
  _, params = pretrained.load_discriminator(out)
  subtrees = heads.pretrained_subtrees(params)
  np.testing.assert_array_equal(
      subtrees["encoder"]["layer_0"]["query"]["kernel"],
      after["electra.encoder.layer.0.attention.self.query.weight"].T)


def test_bad_prefix_and_input_are_one_line_errors(tmp_path, hf_dir):
  proc = run(f"--input={hf_dir}", f"--output={tmp_path / 'a'}",
             "--prefix=bert.")
  assert proc.returncode == 1
  assert "no tensor name starts with 'bert.'" in proc.stderr
  assert "Traceback" not in proc.stderr
  assert not os.path.exists(tmp_path / "a")  # Nothing written.
  proc = run(f"--input={tmp_path}", f"--output={tmp_path / 'b'}")
  assert proc.returncode == 1 and "not found" in proc.stderr
