"""ELECTRA vs. an MLM-only (BERT-style) baseline at equal pretraining compute.

The paper's claim (Clark et al., 2020, Sec. 3.2-3.3) at toy scale: for the
same training FLOPs, replaced-token detection yields a better encoder than
masked language modelling. The real experiment:

  .venv/bin/python experiments/electra_vs_mlm.py --root=runs/evm \
      --data_dir=data/real16k --train_file=data/labeled/train.csv \
      --eval_file=data/labeled/dev.csv --seeds=3

Stages (each skipped when its output is complete, so rerunning the same
command continues where it stopped; logs in ROOT/logs/<stage>.log):
  electra      ROOT/electra: `python -m electra_jax.main` for --electra_steps
               (default: the preset's num_train_steps).
  mlm          ROOT/mlm: objective.electra_objective=False (a full-size
               generator) for round(electra_steps * F_electra / F_mlm) steps,
               F = train.flops_per_sequence(config, vocab)["total"] of each
               resolved config (same batch size, so equal total FLOPs); its
               num_warmup_steps keeps ELECTRA's fraction of the run.
  ft_electra, ft_mlm, ft_scratch
               `python -m electra_jax.finetune` (task=classification) from
               each pretrained workdir, and from random init with the
               preset's discriminator architecture and the data's tokenizer.
  curves       ROOT/pretraining_curves.png (`python -m electra_jax.plot`).
  report       ROOT/results.md, ROOT/results.json, ROOT/electra_vs_mlm.png
               (always rewritten).
Subprocesses run from the repository root; all paths are made absolute.
`--override=--config.a.b=v` (repeatable) goes to both pretraining runs and
into the FLOP count; `--ft_override=--config.a.b=v` goes to the three
fine-tunings. The data's vocab_size and max_seq_length are passed
too (a run must match the data it reads).
"""

import csv
import json
import os
import shlex
import shutil
import subprocess
import sys
import time

from absl import app
from absl import flags
from ml_collections import config_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
# pylint: disable=g-import-not-at-top,wrong-import-position
from electra_jax import train as train_lib
from electra_jax.finetune import restore

FLAGS = flags.FLAGS
flags.DEFINE_string("root", None, "Output directory of the experiment.")
flags.DEFINE_string("config", "configs/mini.py", "Pretraining preset.")
flags.DEFINE_string("data_dir", None, "Preprocessed data (has metadata.json).")
flags.DEFINE_integer("vocab_size", None, "Default: data_dir/metadata.json's.")
flags.DEFINE_integer("electra_steps", None,
                     "ELECTRA steps; default: the config's num_train_steps.")
flags.DEFINE_integer("seeds", 3, "Fine-tuning trials (seeds) per model.")
flags.DEFINE_string("train_file", None, "Labeled training CSV/TSV/JSONL.")
flags.DEFINE_string("eval_file", None, "Labeled dev CSV/TSV/JSONL.")
flags.DEFINE_string("text_column", "text", "Text column(s), comma-separated.")
flags.DEFINE_string("label_column", "label", "Label column.")
flags.DEFINE_integer("ft_max_seq_length", 64, "Fine-tuning sequence length.")
flags.DEFINE_float("ft_epochs", None, "Fine-tuning epochs; default: task's.")
flags.DEFINE_string("ft_size", "small", "configs/finetune.py size: its "
                    "learning rate and layer-wise decay (small: 3e-4).")
flags.DEFINE_list("stages", [], "Run only these stages (e.g. ft_electra,"
                  "ft_scratch, to use a second core while another instance "
                  "pretrains); empty: all, then the report.")
flags.DEFINE_multi_string("ft_override", [], "A fine-tuning flag for all "
                          "three models, e.g. --ft_override=--config."
                          "optimizer.layerwise_lr_decay=0.")
flags.DEFINE_multi_string("override", [], "A pretraining flag for both runs, "
                          "e.g. --override=--config.input.batch_size=16.")

MODELS = {"electra": "ELECTRA", "mlm": "MLM-only", "scratch": "No pretraining"}
_START = time.time()


class Error(Exception):
  """A user mistake or a failed stage: one line on stderr, exit 1."""


def progress(stage: str, message: str) -> None:
  print(f"[{time.time() - _START:7.0f}s] {stage}: {message}", flush=True)


def check_inputs() -> tuple[dict, str]:
  """Validates flags and files; returns (metadata, config path)."""
  for name in ("root", "data_dir", "train_file", "eval_file"):
    if not FLAGS[name].value:
      raise Error(f"--{name} is required.")
  config_file, sep, arg = FLAGS.config.partition(":")
  if not os.path.isfile(config_file):
    raise Error(f"--config={config_file}: no such file.")
  meta_path = os.path.join(FLAGS.data_dir, "metadata.json")
  if not os.path.isfile(meta_path):
    raise Error(f"--data_dir={FLAGS.data_dir} has no metadata.json: not a "
                "preprocessed dataset (python -m electra_jax.preprocess) or "
                "preprocessing did not finish.")
  with open(meta_path) as f:
    metadata = json.load(f)
  for name in ("train_file", "eval_file"):
    path = FLAGS[name].value
    if not os.path.isfile(path):
      raise Error(f"--{name}={path}: no such file.")
    if path.endswith((".csv", ".tsv")):
      with open(path, newline="") as f:
        header = next(csv.reader(f, delimiter="\t" if path.endswith(".tsv")
                                 else ","), [])
      wanted = FLAGS.text_column.split(",") + [FLAGS.label_column]
      missing = [c for c in wanted if c.strip() not in header]
      if missing:
        raise Error(f"--{name}={path} has no column(s) {missing}; its "
                    f"header is {header} (see --text_column, --label_column).")
  if FLAGS.seeds < 1 or (FLAGS.electra_steps or 1) < 1:
    raise Error("--seeds and --electra_steps must be positive.")
  return metadata, os.path.abspath(config_file) + sep + arg


def resolve(config_flags_argv: list[str]):
  """The config `electra_jax.main` would build from these flags."""
  argv = ["resolve", *config_flags_argv]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values,
                                  lock_config=True, sys_argv=argv)
  try:
    values(argv)
  except (flags.Error, KeyError, ValueError, AttributeError) as e:
    message = e.args[0] if isinstance(e, KeyError) and e.args else e
    raise Error(f"bad --config/--override: {message}") from None
  return values.config


def run_stage(root: str, name: str, cmd: list[str], done) -> None:
  """Runs `cmd` unless `done()` or not selected; log ROOT/logs/<name>.log."""
  if FLAGS.stages and name not in FLAGS.stages:
    progress(name, "not selected (--stages)")
    return
  log = os.path.join(root, "logs", f"{name}.log")
  os.makedirs(os.path.dirname(log), exist_ok=True)
  stamp = os.path.join(root, "logs", f"{name}.cmd")  # What made the output.
  if done():
    with open(log, "a") as f:
      f.write(f"# {time.ctime()}: skipped, output complete\n")
    progress(name, "skipped (output complete)")
    if os.path.exists(stamp):
      with open(stamp) as f:
        if f.read() != shlex.join(cmd):
          progress(name, f"WARNING: made by another command ({stamp}); "
                   "delete its output to redo it with this one")
    return
  progress(name, f"running, log {log}")
  with open(stamp, "w") as f:
    f.write(shlex.join(cmd))
  start = time.time()
  with open(log, "a") as f:
    f.write(f"# {time.ctime()}: (cd {REPO} && {shlex.join(cmd)})\n")
    f.flush()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT)
    while True:
      try:
        rc = proc.wait(timeout=120)
        break
      except subprocess.TimeoutExpired:  # A heartbeat: the log's last line.
        with open(log, errors="replace") as g:
          tail = (g.readlines() or [""])[-1].strip()
        progress(name, f"{time.time() - start:.0f}s | {tail[-150:]}")
  if rc or not done():
    with open(log, errors="replace") as g:
      sys.stderr.write("".join(g.readlines()[-25:]))
    raise Error(f"stage {name} failed (exit {rc}); see {log}")
  progress(name, f"done in {time.time() - start:.0f}s")


def format_flops(x: float) -> str:
  return f"{x:.2e}".replace("e+", "e")


def mean_std(summary: dict) -> str:
  return f"{summary['mean']:.4f} ± {summary['std']:.4f}"


def write_report(root: str, results: dict) -> None:
  """ROOT/results.json, results.md and electra_vs_mlm.png."""
  with open(os.path.join(root, "results.json"), "w") as f:
    json.dump(results, f, indent=2)
  metric = results["metric"]
  lines = [
      "# ELECTRA vs. MLM-only at equal pretraining FLOPs", "",
      f"Preset `{results['config']}`, data `{results['data_dir']}` "
      f"(vocab {results['vocab_size']}, {results['max_seq_length']} tokens, "
      f"batch {results['batch_size']}). Dev {metric} of "
      f"`{results['eval_file']}` after fine-tuning on "
      f"`{results['train_file']}`; final = last epoch, best = best epoch "
      "(selected on the same dev set, so optimistic). Std is the population "
      "std over seeds.", "",
      "| model | pretraining steps | pretraining FLOPs | final per seed | "
      "final mean ± std | best per seed | best mean ± std |",
      "| --- | ---: | ---: | --- | --- | --- | --- |"]
  for m in results["models"].values():
    per = lambda k, m=m: ", ".join(f"{t[k]:.4f}" for t in m["trials"])
    lines.append(
        f"| {m['label']} | {m['pretraining_steps']} | "
        f"{format_flops(m['pretraining_flops'])} | {per('final')} | "
        f"{mean_std(m['final'])} | {per('best')} | {mean_std(m['best'])} |")
  per_seq = results["flops_per_sequence"]
  fe, fm = per_seq["electra"]["total"], per_seq["mlm"]["total"]
  gen, disc = (format_flops(per_seq["electra"][k])
               for k in ("generator", "discriminator"))
  steps_e, steps_m = (results["models"][k]["pretraining_steps"]
                      for k in ("electra", "mlm"))
  lines += [
      "", f"Training FLOPs per sequence (electra_jax.flops; matmuls, "
      f"3x forward): ELECTRA {format_flops(fe)} (generator {gen} + "
      f"discriminator {disc}), MLM-only {format_flops(fm)} (a "
      "discriminator-size generator; the MLM heads are counted at the masked "
      f"positions only). MLM-only steps = round({steps_e} * {fe:.6g} / "
      f"{fm:.6g}) = {steps_m}; pretraining FLOPs = per sequence x batch x "
      "steps.",
      "", f"Warmup: {results['warmup_note']}", "",
      f"## Commands (run from `{REPO}`)", ""]
  for stage, cmd in results["commands"].items():
    lines += [f"{stage}:", "", "    " + cmd, ""]
  with open(os.path.join(root, "results.md"), "w") as f:
    f.write("\n".join(lines))

  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
  models = list(results["models"].values())
  for ax, which in zip(axes, ("final", "best")):
    xs = range(len(models))
    ax.bar(xs, [m[which]["mean"] for m in models],
           yerr=[m[which]["std"] for m in models], capsize=6,
           color=["tab:blue", "tab:orange", "tab:gray"], alpha=0.7)
    for x, m in zip(xs, models):
      ys = [t[which] for t in m["trials"]]
      jitter = [0.25 * (k / max(1, len(ys) - 1) - 0.5) for k in range(len(ys))]
      ax.scatter([x + j for j in jitter], ys, color="black", s=14, zorder=3)
    ax.set_xticks(list(xs), [m["label"] for m in models])
    ax.set_title(f"Dev {metric}, {which} epoch (mean ± std, seeds)")
  axes[0].set_ylabel(f"dev {metric}")
  fe, fm = (format_flops(m["pretraining_flops"]) for m in models[:2])
  fig.suptitle(f"Equal pretraining compute: ELECTRA {fe}, MLM-only {fm} FLOPs")
  fig.tight_layout()
  fig.savefig(os.path.join(root, "electra_vs_mlm.png"), dpi=100)
  plt.close(fig)


def experiment() -> None:
  metadata, config_path = check_inputs()
  root, data_dir = (os.path.abspath(p) for p in (FLAGS.root, FLAGS.data_dir))
  vocab = FLAGS.vocab_size or metadata["vocab_size"]
  tokenizer = os.path.join(data_dir, metadata["tokenizer"])
  base = [f"--config.input.data_dir={data_dir}",
          f"--config.model.vocab_size={vocab}",
          f"--config.input.max_seq_length={metadata['max_seq_length']}",
          *FLAGS.override]
  config_argv = [a for a in base if a.startswith("--config.")]
  electra_cfg = resolve([f"--config={config_path}", *config_argv])
  steps_e = FLAGS.electra_steps or electra_cfg.num_train_steps
  mlm_cfg = resolve([f"--config={config_path}", *config_argv,
                     "--config.objective.electra_objective=False"])
  f_e = train_lib.flops_per_sequence(electra_cfg, vocab)
  f_m = train_lib.flops_per_sequence(mlm_cfg, vocab)
  steps_m = max(1, int(round(steps_e * f_e["total"] / f_m["total"])))
  warmup_e = electra_cfg.optimizer.num_warmup_steps
  warmup_m = int(round(warmup_e * steps_m / steps_e))
  warmup_note = (f"ELECTRA {warmup_e} of {steps_e} steps; MLM-only scaled to "
                 f"{warmup_m} of {steps_m} (the same fraction, "
                 f"{warmup_e / steps_e:.3f}, rounded); the LR decays to the "
                 "end of each run.")
  progress("plan", f"ELECTRA {steps_e} steps x {format_flops(f_e['total'])} "
           f"FLOPs/seq, MLM-only {steps_m} steps x "
           f"{format_flops(f_m['total'])}; warmup: {warmup_note}")

  py = sys.executable
  pretrain = {
      "electra": (steps_e, [f"--config.num_train_steps={steps_e}"]),
      "mlm": (steps_m, [f"--config.num_train_steps={steps_m}",
                        "--config.objective.electra_objective=False",
                        f"--config.optimizer.num_warmup_steps={warmup_m}"])}
  commands = {}
  for name, (steps, extra) in pretrain.items():
    workdir = os.path.join(root, name)
    cmd = [py, "-m", "electra_jax.main", f"--config={config_path}",
           f"--workdir={workdir}", *base, *extra]
    commands[name] = shlex.join(cmd)
    ckpt = os.path.join(workdir, "checkpoints", str(steps))
    run_stage(root, name, cmd, lambda c=ckpt: os.path.isdir(c))

  ft = [py, "-m", "electra_jax.finetune",
        f"--config={REPO}/configs/finetune.py:task=classification,"
        f"size={FLAGS.ft_size}",
        "--config.data.source=files",
        f"--config.data.train_file={os.path.abspath(FLAGS.train_file)}",
        f"--config.data.eval_file={os.path.abspath(FLAGS.eval_file)}",
        f"--config.data.text_columns={FLAGS.text_column}",
        f"--config.data.label_column={FLAGS.label_column}",
        f"--config.num_trials={FLAGS.seeds}",
        f"--config.max_seq_length={FLAGS.ft_max_seq_length}"]
  if FLAGS.ft_epochs is not None:
    ft.append(f"--config.num_train_epochs={FLAGS.ft_epochs}")
  ft += FLAGS.ft_override
  # Random init: the preset's discriminator, the pretraining data's tokenizer.
  scratch = [f"--config.model.{k}={electra_cfg.model[k]}"
             for k in restore.ARCHITECTURE]
  scratch.append(f"--config.tokenizer={tokenizer}")
  for name in MODELS:
    workdir = os.path.join(root, f"ft_{name}")
    init = ([f"--config.init_from={os.path.join(root, name)}"]
            if name != "scratch" else scratch)
    cmd = ft + [f"--workdir={workdir}"] + init
    commands[f"ft_{name}"] = shlex.join(cmd)
    results_file = os.path.join(workdir, "results.json")
    if os.path.isdir(workdir) and not os.path.exists(results_file):
      progress(f"ft_{name}", f"removing incomplete {workdir} (fine-tuning "
               "does not resume)")
      shutil.rmtree(workdir)
    run_stage(root, f"ft_{name}", cmd,
              lambda r=results_file: os.path.exists(r))

  curves = os.path.join(root, "pretraining_curves.png")
  cmd = [py, "-m", "electra_jax.plot", f"--workdir={root}/electra",
         f"--workdir={root}/mlm", f"--output={curves}",
         "--labels=ELECTRA,MLM-only"]
  commands["curves"] = shlex.join(cmd)
  run_stage(root, "curves", cmd, lambda: os.path.exists(curves))
  if FLAGS.stages and "report" not in FLAGS.stages:
    return

  batch = electra_cfg.input.batch_size
  steps = {"electra": steps_e, "mlm": steps_m, "scratch": 0}
  per_seq = {"electra": f_e["total"], "mlm": f_m["total"], "scratch": 0.0}
  models, metric = {}, None
  for name, label in MODELS.items():
    with open(os.path.join(root, f"ft_{name}", "results.json")) as f:
      r = json.load(f)
    metric = r["main_metric"]
    models[name] = {
        "label": label, "pretraining_steps": steps[name],
        "pretraining_flops": per_seq[name] * batch * steps[name],
        "workdir": os.path.join(root, name) if steps[name] else None,
        "trials": [{"seed": t["seed"], "final": t["final"][metric],
                    "best": t["best"][metric], "best_step": t["best_step"]}
                   for t in r["trials"]],
        "final": r["summary"]["final"][metric],
        "best": r["summary"]["best"][metric]}
  write_report(root, {
      "config": FLAGS.config, "data_dir": data_dir, "vocab_size": vocab,
      "max_seq_length": metadata["max_seq_length"], "batch_size": batch,
      "train_file": FLAGS.train_file, "eval_file": FLAGS.eval_file,
      "metric": metric, "flops_per_sequence": {"electra": f_e, "mlm": f_m},
      "warmup_steps": {"electra": warmup_e, "mlm": warmup_m},
      "warmup_note": warmup_note, "models": models, "commands": commands})
  for m in models.values():
    progress("report", f"{m['label']:>15}: final {mean_std(m['final'])}, "
             f"best {mean_std(m['best'])}")
  progress("report", f"wrote {root}/results.md, results.json, "
           "electra_vs_mlm.png, pretraining_curves.png")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  try:
    experiment()
  except Error as e:
    print(f"electra_jax: error: {' '.join(str(e).split())}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
