"""Logs, TensorBoard events, config dump, parameter overview and progress.

Follows clu's shape (one writer with `write_scalars`/`write_hparams`, a
periodic progress report) without its TensorFlow dependency: events are
written with tensorboardX, and only by process 0.
"""

import json
import logging as logging_std
import os
import shutil
import tempfile
import time
from typing import Any, Mapping

from absl import logging
from etils import epath
from flax import traverse_util
import jax
import numpy as np


class MetricWriter:
  """TensorBoard scalars and hparams in `workdir`, from process 0 only.

  For a gs:// workdir the event files are written to a local directory and
  copied to the bucket after every write and at `close` (tensorboardX's own
  bucket writer uploads again when it is garbage-collected, after `close`).
  """

  def __init__(self, workdir: str):
    self._writer = None
    self._local, self._remote = None, None
    if jax.process_index() == 0:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      logdir = workdir
      if "://" in str(workdir):
        self._local = tempfile.mkdtemp(prefix="electra_jax_events_")
        self._remote = epath.Path(workdir)
        logdir = self._local
      self._writer = SummaryWriter(logdir=logdir)

  def _sync(self) -> None:
    """Copies the local event files to the bucket (a remote workdir)."""
    if self._local is None:
      return
    for root, _, names in os.walk(self._local):  # A local directory.
      for name in names:
        relative = os.path.relpath(os.path.join(root, name), self._local)
        target = self._remote / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        epath.Path(root, name).copy(target, overwrite=True)

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    if self._writer is None:
      return
    for name, value in scalars.items():
      self._writer.add_scalar(name, float(value), global_step=step)
    self._writer.flush()
    self._sync()

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    if self._writer is None:
      return
    flat = {k: v if isinstance(v, (int, float, str, bool)) else str(v)
            for k, v in hparams.items()}
    self._writer.add_hparams(flat, {}, name="hparams")
    self._sync()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
      self._sync()
      if self._local is not None:
        shutil.rmtree(self._local, ignore_errors=True)
      self._writer = None


def write_config(record: dict[str, Any], workdir: str) -> None:
  """Saves a run's config record as `workdir/config.json` (process 0)."""
  if jax.process_index() != 0:
    return
  workdir = epath.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "config.json").write_text(json.dumps(record, indent=2,
                                                  sort_keys=True))


def flat_config(record: dict[str, Any]) -> dict[str, Any]:
  """`{"a": {"b": 1}}` -> `{"a.b": 1}`, for TensorBoard's hparams."""
  return traverse_util.flatten_dict(record, sep=".")


def log_parameter_overview(params: Any) -> None:
  """Logs each top-level module's parameter count, and the total."""
  flat = traverse_util.flatten_dict(params, sep="/")
  totals: dict[str, int] = {}
  for name, value in flat.items():
    top = name.split("/")[0]
    totals[top] = totals.get(top, 0) + int(np.prod(value.shape))
  for top, n in sorted(totals.items()):
    logging.info("params %-22s %12s", top, f"{n:,}")
  logging.info("params %-22s %12s (%d arrays)", "total",
               f"{sum(totals.values()):,}", len(flat))


class ProgressReport:
  """Steps/s, tokens/s, MFU and ETA between two calls of `report`."""

  def __init__(self, num_train_steps: int, tokens_per_step: int,
               flops_per_step: float, peak_flops_per_device: float | None):
    self._total = num_train_steps
    self._tokens = tokens_per_step
    self._flops = flops_per_step
    self._peak = peak_flops_per_device
    self._last_step = None
    self._last_time = None

  def start(self, step: int) -> None:
    self._last_step, self._last_time = step, time.perf_counter()

  def report(self, step: int) -> dict[str, float]:
    """Returns `perf/*` scalars for the steps since the last call."""
    now = time.perf_counter()
    steps = step - self._last_step
    elapsed = max(now - self._last_time, 1e-9)
    self._last_step, self._last_time = step, now
    if steps <= 0:
      return {}
    n = jax.device_count()
    rate = steps / elapsed
    out = {
        "perf/steps_per_sec": rate,
        "perf/step_time_seconds": 1.0 / rate,
        "perf/tokens_per_sec_per_device": rate * self._tokens / n,
        "perf/eta_seconds": (self._total - step) / rate,
    }
    if self._peak:
      out["perf/mfu"] = rate * self._flops / (n * self._peak)
    return out


def format_line(step: int, total: int, scalars: Mapping[str, float]) -> str:
  """A human-readable progress line."""
  parts = [f"step {step}/{total}"]
  short = [("train/loss", "loss", ".4f"),
           ("train/masked_lm_loss", "mlm", ".3f"),
           ("train/masked_lm_accuracy", "mlm_acc", ".3f"),
           ("train/disc_loss", "disc", ".4f"),
           ("train/disc_accuracy", "disc_acc", ".3f"),
           ("train/learning_rate", "lr", ".2e"),
           ("train/grad_norm", "gnorm", ".3f"),
           ("perf/tokens_per_sec_per_device", "tok/s/dev", ",.0f"),
           ("perf/mfu", "mfu", ".1%")]
  for key, label, fmt in short:
    if key in scalars:
      parts.append(f"{label} {scalars[key]:{fmt}}")
  if "perf/eta_seconds" in scalars:
    eta = int(scalars["perf/eta_seconds"])
    parts.append(f"eta {eta // 3600}h{eta % 3600 // 60:02d}m{eta % 60:02d}s")
  return " | ".join(parts)


class _DropLibraryInfo(logging_std.Filter):
  """Drops INFO-level records from chatty libraries (orbax logs every file
  it writes); warnings and errors still pass."""

  _PATHS = ("/orbax/", "/jax/_src/distributed", "/jax/_src/xla_bridge")

  def filter(self, record: logging_std.LogRecord) -> bool:
    return record.levelno >= logging_std.WARNING or not any(
        p in record.pathname for p in self._PATHS)


def quiet_library_logs() -> None:
  """Keeps the progress lines readable (call once, from an entry point)."""
  logging.get_absl_handler().addFilter(_DropLibraryInfo())
