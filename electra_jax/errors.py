"""Mistakes in what a user passed, and how the command-line entries show
them: one line, `electra_jax: error: ...`, exit code 1, no traceback. Real
bugs keep their traceback.
"""

import sys
from typing import Any, Callable
import uuid

from absl import app
from etils import epath


class UserError(ValueError):
  """A wrong path, setting or input that the user can fix; the message says
  what is wrong and how to fix it."""


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


def run(main: Callable[[list[str]], Any]) -> None:
  """`absl.app.run(main)`, with `UserError`s printed as one line."""
  try:
    app.run(main)
  except UserError as e:
    print(f"electra_jax: error: {e}", file=sys.stderr)
    sys.exit(1)
