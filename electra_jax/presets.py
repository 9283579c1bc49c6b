"""Config files by name: `--config=small`, `--config=configs/small.py` or a
path of your own.

A `--config` value names a file. Where that file does not exist relative to
the current directory and the value is a preset's name (`small`,
`configs/small.py`, `finetune:task=sst2`), the preset shipped with
electra_jax is used: the installed package's `electra_jax.configs` (the
repository's `configs/`, mapped there by pyproject.toml), or, when running
from a checkout without installing, the checkout's `configs/`. So the
README's commands work from any directory once the package is installed.
"""

import importlib.util
import os
import pathlib
import re

# Flags that take a config file (ml_collections' DEFINE_config_file).
CONFIG_FLAGS = ("config",)
_NAME = re.compile(r"^(?:configs/)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:\.py)?$")


def _preset_dir() -> pathlib.Path | None:
  try:
    spec = importlib.util.find_spec("electra_jax.configs")
  except ModuleNotFoundError:
    spec = None
  if spec is not None and spec.origin:  # Installed: the package's files.
    return pathlib.Path(spec.origin).parent
  # A checkout run without installing: its configs/ beside the package.
  checkout = pathlib.Path(__file__).resolve().parent.parent / "configs"
  return checkout if checkout.is_dir() else None


def names() -> list[str]:
  """The presets shipped with electra_jax, e.g. ['base', 'finetune', ...]."""
  root = _preset_dir()
  if root is None:
    return []
  return sorted(p.stem for p in root.glob("*.py") if not p.stem.startswith("_"))


def resolve(value: str) -> str:
  """`value` with its file part replaced by a shipped preset's path when
  the file does not exist here and names a preset; else `value` as is."""
  path, sep, arg = value.partition(":")
  if os.path.exists(path):  # Local by design: a config is a local .py file.
    return value
  match = _NAME.match(path)
  root = _preset_dir()
  if match is None or root is None:
    return value
  preset = root / f"{match['name']}.py"
  return f"{preset}{sep}{arg}" if preset.is_file() else value


def resolve_argv(argv: list[str]) -> list[str]:
  """argv with every `--config=V` / `--config V` resolved by `resolve`."""
  out, i = [], 0
  while i < len(argv):
    arg = argv[i]
    for flag in CONFIG_FLAGS:
      if arg.startswith(f"--{flag}="):
        arg = f"--{flag}=" + resolve(arg[len(flag) + 3:])
      elif arg == f"--{flag}" and i + 1 < len(argv):
        out.append(arg)
        i += 1
        arg = resolve(argv[i])
    out.append(arg)
    i += 1
  return out
