"""Pretraining curves of one or more runs, from their TensorBoard events.

  python -m electra_jax.plot --workdir=runs/small --workdir=runs/small_b \
      --output=curves.png --labels=a,b --smooth=0.6

Reads the `events.out.tfevents.*` files that `reporting.MetricWriter` writes
into each workdir's root, without TensorFlow: the TFRecord framing is parsed
here and the protos come from tensorboardX. Train curves are lines, eval
curves markers; one color per run.
"""

import struct
import sys

from absl import app
from absl import flags
from absl import logging
from etils import epath
from tensorboardX.proto import event_pb2
from tensorboardX.record_writer import masked_crc32c

from electra_jax import errors

_PATTERN = "events.out.tfevents.*"
# (title, [(tag suffix, style key)], is_optional); each suffix is drawn as
# `train/<suffix>` and `eval/<suffix>`, or as is when it contains a "/".
_PANELS = (
    ("MLM loss", [("masked_lm_loss", "")], False),
    ("MLM accuracy", [("masked_lm_accuracy", ""),
                      ("sampled_masked_lm_accuracy", "sampled")], False),
    ("Discriminator loss", [("disc_loss", "")], False),
    ("Discriminator AUC (eval)", [("eval/disc_auc", ""),
                                  ("eval/disc_auc_unigram", "unigram fakes")],
     False),
    ("Disc precision / recall", [("disc_precision", "precision"),
                                 ("disc_recall", "recall")], False),
    ("Learning rate", [("train/learning_rate", "")], False),
    ("Tokens/s per device", [("perf/tokens_per_sec_per_device", "")], False),
    ("Disc logit std", [("disc_logit_std", "")], True),
    ("Generator gain over word frequency at [MASK] (nats, eval)",
     [("eval/masked_lm_context_gain", "")], True),
)


def _read_records(path):
  """Yields the payloads of one TFRecord file, stopping at a partial tail."""
  with epath.Path(path).open("rb") as f:
    data = f.read()
  pos = 0
  while pos < len(data):
    if pos + 12 > len(data):
      break  # The writer is mid-record (run still going): not an error.
    length, header_crc = struct.unpack_from("<QI", data, pos)
    if masked_crc32c(data[pos:pos + 8]) != header_crc:
      # A bad length makes everything after it unframeable.
      logging.warning("%s: corrupt record header at byte %d; stopping.",
                      path, pos)
      return
    end = pos + 12 + length + 4
    if end > len(data):
      break
    payload = data[pos + 12:end - 4]
    if masked_crc32c(payload) == struct.unpack_from("<I", data, end - 4)[0]:
      yield payload
    else:
      logging.warning("%s: bad record checksum at byte %d; skipped.", path, pos)
    pos = end


def _scalar(value):
  """A Summary.Value's number, or None when it holds something else."""
  kind = value.WhichOneof("value")
  if kind == "simple_value":
    return value.simple_value
  if kind == "tensor":  # tensorboardX `new_style` scalars.
    t = value.tensor
    vals = list(t.float_val) or list(t.double_val)
    return vals[0] if len(vals) == 1 else None
  return None


def _load_file(path):
  """Returns (first wall time, {tag: {step: value}}) for one event file."""
  first_time, out = float("inf"), {}
  for payload in _read_records(path):
    event = event_pb2.Event.FromString(payload)
    first_time = min(first_time, event.wall_time)
    for value in event.summary.value:
      number = _scalar(value)
      if number is not None:
        out.setdefault(value.tag, {})[int(event.step)] = float(number)
  return first_time, out


def load_scalars(workdir: str) -> dict[str, list[tuple[int, float]]]:
  """Reads every scalar in `workdir`'s root event files.

  Args:
    workdir: a run directory written by `reporting.MetricWriter`.

  Returns:
    {tag: [(step, value), ...]} sorted by step. Files are merged oldest
    first (by their first event's wall time), so on a resumed run the later
    file wins where both logged the same step.

  Raises:
    ValueError: `workdir` holds no event files (or does not exist).
  """
  root = epath.Path(workdir)
  paths = sorted(str(p) for p in root.glob(_PATTERN)) if root.is_dir() else []
  if not paths:
    raise errors.UserError(
        f"{workdir} has no TensorBoard event files ({_PATTERN})")
  # File names hold whole seconds only, so order by the recorded wall time.
  files = sorted((_load_file(p) + (p,) for p in paths),
                 key=lambda f: (f[0], f[2]))
  merged = {}
  for _, scalars, _ in files:
    for tag, points in scalars.items():
      merged.setdefault(tag, {}).update(points)
  return {tag: sorted(points.items()) for tag, points in merged.items()}


def _smoothed(values, weight):
  """TensorBoard's debiased exponential moving average."""
  out, last = [], 0.0
  for i, v in enumerate(values):
    last = last * weight + (1 - weight) * v
    out.append(last / (1 - weight ** (i + 1)))
  return out


def plot_runs(workdirs, output, labels=None, smooth=0.0):
  """Draws the runs' curves as a grid of panels and saves it to `output`.

  Args:
    workdirs: run directories.
    output: the image path; its format follows the extension.
    labels: legend labels, one per workdir (default: basenames).
    smooth: EMA weight in [0, 1) for train curves; 0 draws them raw.

  Raises:
    ValueError: on bad arguments or a workdir without event files.
  """
  if not workdirs:
    raise errors.UserError("give at least one --workdir")
  labels = labels or [epath.Path(w).name for w in workdirs]
  if len(labels) != len(workdirs):
    raise errors.UserError(f"{len(labels)} labels for {len(workdirs)} workdirs")
  if not 0 <= smooth < 1:
    raise errors.UserError(f"--smooth must be in [0, 1), got {smooth}")
  runs = [load_scalars(w) for w in workdirs]
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")  # Files only; never needs a display.
  from matplotlib import lines  # pylint: disable=g-import-not-at-top
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  def tags(suffix):
    return [suffix] if "/" in suffix else ["train/" + suffix, "eval/" + suffix]

  panels = [p for p in _PANELS if not p[2] or any(
      t in run for run in runs for s, _ in p[1] for t in tags(s))]
  cols = 4
  rows = -(-len(panels) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows),
                           squeeze=False)
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  for ax, (title, series, _) in zip(axes.flat, panels):
    ax.set_title(title, fontsize=10)
    keys = {}  # Style legend: one gray entry per series kind drawn.
    for r, run in enumerate(runs):
      color = colors[r % len(colors)]
      for k, (suffix, name) in enumerate(series):
        for tag in tags(suffix):
          if not run.get(tag):
            continue
          steps, values = zip(*run[tag])
          style = dict(linestyle=("-", ":")[k % 2], linewidth=1.2)
          if tag.startswith("eval/"):
            style.update(marker=("o", "s")[k % 2], markersize=4, alpha=0.9)
          elif smooth:
            values = _smoothed(values, smooth)
          ax.plot(steps, values, color=color, **style)
          key = " ".join(x for x in (tag.split("/")[0], name) if x)
          keys[key] = lines.Line2D([], [], color="0.3", **style)
    if not keys:
      ax.text(0.5, 0.5, "no data", ha="center", va="center",
              transform=ax.transAxes, color="0.5")
      ax.set_xticks([])
      ax.set_yticks([])
      continue
    if title.startswith("Discriminator AUC"):
      ax.axhline(0.5, color="0.5", linestyle="--", linewidth=1)  # Chance.
    if len(keys) > 1:
      ax.legend(list(keys.values()), list(keys), fontsize=7)
    ax.set_xlabel("step", fontsize=8)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
  for ax in axes.flat[len(panels):]:
    ax.axis("off")
  handles = [lines.Line2D([], [], color=colors[r % len(colors)], linewidth=2)
             for r in range(len(runs))]
  fig.legend(handles, labels, loc="upper center", ncol=min(len(runs), 6),
             frameon=False)
  fig.tight_layout(rect=(0, 0, 1, 0.94))
  epath.Path(output).parent.mkdir(parents=True, exist_ok=True)
  with epath.Path(output).open("wb") as f:  # A file in a bucket too.
    fig.savefig(f, dpi=100, format=epath.Path(output).suffix[1:] or "png")
  plt.close(fig)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  f = flags.FLAGS
  try:
    plot_runs(f.workdir, f.output, f.labels, f.smooth)
  except ValueError as e:
    # User mistakes get one line, not a traceback.
    print(f"electra_jax: error: {e}", file=sys.stderr)
    sys.exit(1)


def _define_flags() -> None:
  """Defined only when run as a program, so that importing this module
  never clashes with another entry point's flags."""
  flags.DEFINE_multi_string("workdir", None, "Run directory; repeat for more.")
  flags.DEFINE_string("output", None, "Where to write the figure (.png).")
  flags.DEFINE_list("labels", None, "Legend labels, one per --workdir "
                    "(default: each workdir's basename).")
  flags.DEFINE_float("smooth", 0.0, "TensorBoard-style EMA weight in [0, 1) "
                     "applied to train curves.")


def cli() -> None:
  """The `electra-plot` console script."""
  _define_flags()
  flags.mark_flags_as_required(["workdir", "output"])
  errors.run(main)


if __name__ == "__main__":
  cli()
