"""pyproject.toml: the wheel holds every package and the presets, its
console scripts run from any directory, and `--config` finds presets by
name."""

import ast
import os
import pathlib
import shutil
import subprocess
import sys
import tomllib

import pytest

from electra_jax import presets
from tests import testing

_PYPROJECT = pathlib.Path(testing.ROOT) / "pyproject.toml"


def _project():
  return tomllib.loads(_PYPROJECT.read_text())


def test_every_package_is_listed():
  root = pathlib.Path(testing.ROOT)
  found = {".".join(p.parent.relative_to(root).parts)
           for p in (root / "electra_jax").rglob("__init__.py")}
  listed = set(_project()["tool"]["setuptools"]["packages"])
  assert listed == found | {"electra_jax.configs"}


def test_accelerator_extras_pin_the_jax_of_requirements():
  pins = dict(line.split("==") for line in
              (pathlib.Path(testing.ROOT) / "requirements.txt").read_text()
              .splitlines() if "==" in line and not line.startswith("#"))
  extras = _project()["project"]["optional-dependencies"]
  for extra in ("tpu", "cuda12", "cuda13"):
    assert extras[extra] == [f"jax[{extra}]=={pins['jax']}"]


def test_scripts_name_existing_cli_functions():
  # Read, not imported: the entry modules define absl flags on import.
  scripts = _project()["project"]["scripts"]
  assert {"electra-pretrain", "electra-preprocess", "electra-export",
          "electra-finetune"} <= set(scripts)
  for target in scripts.values():
    module, function = target.split(":")
    path = pathlib.Path(testing.ROOT, *module.split(".")).with_suffix(".py")
    tree = ast.parse(path.read_text())
    assert function in {f.name for f in tree.body
                        if isinstance(f, ast.FunctionDef)}, target


def test_presets_resolve_by_name_path_or_not_at_all(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  small = os.path.join(testing.ROOT, "configs", "small.py")
  assert presets.resolve("small") == small
  assert presets.resolve("configs/small.py") == small
  assert presets.resolve("finetune:task=sst2,size=base") == (
      os.path.join(testing.ROOT, "configs", "finetune.py")
      + ":task=sst2,size=base")
  assert presets.resolve("configs/nope.py") == "configs/nope.py"
  # A file here wins over the preset of the same name.
  (tmp_path / "configs").mkdir()
  (tmp_path / "configs" / "small.py").write_text("")
  assert presets.resolve("configs/small.py") == "configs/small.py"
  assert presets.resolve_argv(["p", "--config", "tiny", "--workdir=w"]) == [
      "p", "--config", os.path.join(testing.ROOT, "configs", "tiny.py"),
      "--workdir=w"]
  assert {"tiny", "mini", "small", "base", "large", "finetune"} <= set(
      presets.names())


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
  """The wheel built from a copy of the checkout, installed (without its
  dependencies, which this venv has) into a directory of its own."""
  tmp = tmp_path_factory.mktemp("packaging")
  src = tmp / "src"
  src.mkdir()
  for name in ("pyproject.toml", "README.md", "requirements.txt"):
    shutil.copy(os.path.join(testing.ROOT, name), src / name)
  for name in ("electra_jax", "configs"):
    shutil.copytree(os.path.join(testing.ROOT, name), src / name,
                    ignore=shutil.ignore_patterns("__pycache__"))
  pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
  subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", ".",
                        "-w", str(tmp / "dist")], cwd=src, check=True)
  wheel, = (tmp / "dist").glob("electra_jax-*.whl")
  site = tmp / "site"
  subprocess.run(pip + ["install", "--no-deps", "--target", str(site),
                        str(wheel)], check=True)
  return site


def test_installed_console_script_pretrains_from_another_directory(
    installed, tmp_path):
  data = testing.write_dataset(str(tmp_path / "data"), num_train=32,
                               num_eval=8)
  (tmp_path / "data" / "tokenizer.model").write_bytes(b"unused")  # Copied.
  env = dict(os.environ, PYTHONPATH=str(installed), JAX_PLATFORMS="cpu")
  where = subprocess.run(
      [sys.executable, "-c", "import electra_jax; print(electra_jax.__file__)"],
      cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
  assert where.stdout.startswith(str(installed)), where.stdout
  run = subprocess.run(
      [str(installed / "bin" / "electra-pretrain"), "--config=tiny",
       f"--workdir={tmp_path / 'run'}", f"--config.input.data_dir={data}",
       f"--config.input.max_seq_length={testing.L}",
       "--config.input.batch_size=8", "--config.num_train_steps=2",
       "--config.eval.every_steps=0", "--config.eval.num_batches=1"],
      cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
      check=False)
  assert run.returncode == 0, run.stderr[-3000:]
  assert (tmp_path / "run" / "config.json").is_file()
  assert (tmp_path / "run" / "checkpoints" / "2").is_dir(), run.stderr[-2000:]


def test_unknown_preset_lists_the_presets(installed, tmp_path):
  env = dict(os.environ, PYTHONPATH=str(installed), JAX_PLATFORMS="cpu")
  run = subprocess.run(
      [str(installed / "bin" / "electra-finetune"), "--config=nope",
       f"--workdir={tmp_path}"], cwd=tmp_path, env=env, capture_output=True,
      text=True, timeout=300, check=False)
  assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
  assert "presets: base, finetune, large, mini" in run.stderr, run.stderr
