"""Mistakes in what a user passed, and how the command-line entries show
them: one line, `electra_jax: error: ...`, exit code 1, no traceback. Real
bugs keep their traceback.
"""

import sys
from typing import Any, Callable
import uuid

from absl import app
from absl import flags
from etils import epath

from electra_jax import presets


class UserError(ValueError):
  """A wrong path, setting or input that the user can fix; the message says
  what is wrong and how to fix it."""


class MissingFile(UserError, FileNotFoundError):
  """A file or directory the user named, or that a step needs, is not
  there; still a `FileNotFoundError` for callers that catch that."""


def check_writable(path: str) -> None:
  """Fails in seconds, naming `path`, when a bucket path cannot be written
  (a missing bucket, no permission), instead of minutes into a run.

  Local paths are left to the first write, which names them already.
  """
  if "://" not in str(path):
    return
  marker = epath.Path(path) / f".electra_jax_write_check_{uuid.uuid4().hex}"
  try:
    marker.write_text("")
    marker.unlink()
  except Exception as e:  # pylint: disable=broad-except
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    raise UserError(
        f"{path}: cannot write there ({type(e).__name__}: {first}). Check "
        "the bucket name and that these credentials may write to it.") from e


def _fail(message: str, code: int) -> None:
  print(f"electra_jax: error: {message}", file=sys.stderr)
  sys.exit(code)


def _config_hint(message: str) -> str:
  """A missing config file's message, with the presets one can name."""
  if "No such file or directory" not in message or not presets.names():
    return message
  return (f"{message}; presets: {', '.join(presets.names())} "
          "(e.g. --config=tiny)")


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a config file that does not load, refuses
  its argument, or gets a `--config.a.b=v` that names no field (raised
  from inside ml_collections) reported as one line, exit code 2: usage
  errors. A `--config` naming a shipped preset is found from any directory
  (`presets.resolve`)."""
  try:
    rest = flags.FLAGS(presets.resolve_argv(argv))
  except flags.Error as e:
    message = str(e)
    if "Traceback (most recent call last)" in message:
      # ml_collections quotes the config file's traceback: keep its first
      # line (the flag) and its last (the error).
      lines = [line for line in message.splitlines() if line.strip()]
      message = f"{lines[0].rstrip(':')}: {lines[-1].strip()}"
    _fail(_config_hint(message), 2)
  except (AttributeError, KeyError) as e:  # An override naming no field.
    detail = str(e.args[0] if e.args else e).strip("'\"")
    for escaped, plain in (("\\'", "'"), ("\\n", "; "), ("\n", "; ")):
      detail = detail.replace(escaped, plain)
    _fail(f"a --config override names no config field: {detail}", 2)
  except ValueError as e:  # A config file's get_config(arg) refused arg.
    _fail(" ".join(str(e).split()), 2)
  for name in flags.FLAGS:
    flag = flags.FLAGS[name]
    # A config file that failed to load parses to a placeholder that
    # raises on first use.
    if (type(flag.value).__name__ == "_ErrorConfig"
        and hasattr(flag.value, "_error")):
      error = " ".join(str(flag.value._error).split())  # pylint: disable=protected-access
      _fail(_config_hint(f"--{name}: {error}"), 2)
  return rest


def run(main: Callable[[list[str]], Any]) -> None:
  """`absl.app.run(main)`, with user errors printed as one line:
  `UserError`s (exit code 1) and flag mistakes (exit code 2)."""
  try:
    app.run(main, flags_parser=_parse_flags)
  except UserError as e:
    _fail(str(e), 1)
