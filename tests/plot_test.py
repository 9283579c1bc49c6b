"""Reading TensorBoard events back and plotting them (`electra_jax.plot`)."""

import glob
import os
import subprocess
import sys

from matplotlib import image
import pytest
from tensorboardX import SummaryWriter

from electra_jax import plot

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = ("masked_lm_loss", "masked_lm_accuracy", "sampled_masked_lm_accuracy",
         "disc_loss", "disc_precision", "disc_recall")


def write_run(workdir, steps, offset=0.0, logit_std=False, suffix=""):
  """Synthetic curves; every value is exact in float32 (events store f32)."""
  writer = SummaryWriter(logdir=str(workdir), filename_suffix=suffix)
  for s in steps:
    scalars = {f"train/{n}": offset + s / 8 for n in TRAIN}
    scalars["train/learning_rate"] = s / 1024
    scalars["perf/tokens_per_sec_per_device"] = 1000.0 + offset
    if logit_std:
      scalars["train/disc_logit_std"] = 1.0 + s / 64
    if s % 20 == 0:
      scalars["eval/masked_lm_loss"] = offset + s / 4
      scalars["eval/disc_auc"] = 0.5 + s / 256
    for tag, value in scalars.items():
      writer.add_scalar(tag, value, global_step=s)
  writer.close()


def run_cli(*flags):
  return subprocess.run(
      [sys.executable, "-m", "electra_jax.plot", *flags], cwd=ROOT,
      capture_output=True, text=True, timeout=120, check=False)


def test_load_scalars_exact(tmp_path):
  write_run(tmp_path, range(0, 50, 10), offset=0.5)
  scalars = plot.load_scalars(str(tmp_path))
  assert scalars["train/masked_lm_loss"] == [
      (0, 0.5), (10, 1.75), (20, 3.0), (30, 4.25), (40, 5.5)]
  assert scalars["eval/disc_auc"] == [(0, 0.5), (20, 0.578125), (40, 0.65625)]
  assert scalars["train/learning_rate"][-1] == (40, 40 / 1024)
  assert "train/disc_logit_std" not in scalars


def test_resumed_run_merges_later_file_wins(tmp_path):
  # Suffixes sort against the write order: merging must follow time, not name.
  write_run(tmp_path, [0, 10, 20, 30], suffix=".z")
  write_run(tmp_path, [20, 30, 40], offset=100.0, suffix=".a")
  assert len(glob.glob(str(tmp_path / "events.out.tfevents.*"))) == 2
  points = plot.load_scalars(str(tmp_path))["train/disc_loss"]
  assert points == [(0, 0.0), (10, 1.25), (20, 102.5), (30, 103.75),
                    (40, 105.0)]


def test_truncated_and_corrupt_records(tmp_path):
  write_run(tmp_path, [0, 10, 20])
  (path,) = glob.glob(str(tmp_path / "events.out.tfevents.*"))
  with open(path, "rb") as f:
    data = f.read()
  whole = plot.load_scalars(str(tmp_path))
  # A run still writing leaves half a record at the end: dropped quietly.
  with open(path, "wb") as f:
    f.write(data[:-7])
  cut = plot.load_scalars(str(tmp_path))
  assert cut["train/masked_lm_loss"] == whole["train/masked_lm_loss"]
  assert cut["eval/disc_auc"] == whole["eval/disc_auc"][:-1]
  # A flipped payload byte fails its checksum: that record alone is skipped.
  bad = bytearray(data)
  bad[-6] ^= 0xFF
  with open(path, "wb") as f:
    f.write(bytes(bad))
  assert plot.load_scalars(str(tmp_path))["eval/disc_auc"] == (
      whole["eval/disc_auc"][:-1])


def test_cli_writes_png(tmp_path):
  write_run(tmp_path / "run_a", range(0, 100, 10))
  write_run(tmp_path / "run_b", range(0, 60, 10), offset=1.0, logit_std=True)
  out = tmp_path / "figs" / "curves.png"
  result = run_cli(f"--workdir={tmp_path / 'run_a'}",
                   f"--workdir={tmp_path / 'run_b'}", f"--output={out}",
                   "--labels=baseline,candidate", "--smooth=0.5")
  assert result.returncode == 0, result.stderr[-3000:]
  assert out.stat().st_size > 10_000
  pixels = image.imread(str(out))
  height, width, channels = pixels.shape
  assert 400 <= height <= 2000 and 1000 <= width <= 3000, pixels.shape
  assert channels in (3, 4)
  assert pixels[..., :3].std() > 0.05  # Not a blank canvas.


def test_cli_workdir_without_events(tmp_path):
  result = run_cli(f"--workdir={tmp_path}", f"--output={tmp_path / 'x.png'}")
  assert result.returncode == 1
  assert result.stderr.strip() == (
      f"electra_jax: error: {tmp_path} has no TensorBoard event files "
      "(events.out.tfevents.*)")
  assert "Traceback" not in result.stderr
  assert not (tmp_path / "x.png").exists()


def test_plot_runs_empty_panels_and_bad_labels(tmp_path):
  # Only tags no panel shows: every panel says "no data" instead of failing.
  writer = SummaryWriter(logdir=str(tmp_path / "run"))
  writer.add_scalar("train/loss", 1.0, global_step=0)
  writer.close()
  out = tmp_path / "empty.png"
  plot.plot_runs([str(tmp_path / "run")], str(out))
  assert out.stat().st_size > 0
  with pytest.raises(ValueError, match="2 labels for 1 workdirs"):
    plot.plot_runs([str(tmp_path / "run")], str(out), labels=["a", "b"])
