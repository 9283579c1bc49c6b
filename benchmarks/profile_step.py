"""Where the train step's time goes: a per-op table from a profiler trace.

  python benchmarks/profile_step.py --config=configs/small.py \
      --batch_size=32 --seq_len=128 [--config.model.dtype=bfloat16]

Builds the same step as `electra_jax.benchmark`, traces a few steps with
`jax.profiler` (a Perfetto trace under --out), and prints the ops that take
the most time per step: on GPU the device kernels, on CPU the XLA thunks.
Each op is named with the model code it came from (the HLO `op_name`
metadata), and the ops are also summed by that source, so the table reads
as "generator head backward: 12 ms". The optimized HLO is written next to
the trace.
"""

import collections
import glob
import gzip
import json
import os
import re
import sys

from absl import app
from absl import flags
import jax
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from electra_jax import benchmark  # pylint: disable=g-import-not-at-top
from electra_jax import sharding
from electra_jax import train as train_lib

config_flags.DEFINE_config_file("config", "configs/small.py", "Config file.",
                                lock_config=True)
flags.DEFINE_integer("batch_size", 32, "Global batch size.", lower_bound=1)
flags.DEFINE_integer("seq_len", 128, "Sequence length.", lower_bound=2)
flags.DEFINE_integer("steps", 3, "Traced steps.", lower_bound=1)
flags.DEFINE_integer("top", 40, "Rows of each table.", lower_bound=1)
flags.DEFINE_string("out", "/tmp/electra_jax_profile", "Trace directory.")


def _op_sources(hlo_text: str) -> dict[str, str]:
  """HLO instruction name -> the jax op_name metadata that produced it."""
  sources = {}
  for m in re.finditer(r'^\s*(?:ROOT )?%?([\w.\-]+) = .*?op_name="([^"]*)"',
                       hlo_text, re.M):
    sources.setdefault(m.group(1), m.group(2))
  return sources


def _short_source(op_name: str) -> str:
  """`jit(train_step)/transpose(jvp(Model.generator_logits))/generator/
  encoder/layer_3/x` -> `bwd Model.generator_logits/.../layer_*/x`."""
  direction = "bwd" if "transpose(" in op_name else "fwd"
  path = re.sub(r"layer_\d+", "layer_*", op_name)
  path = re.sub(r"^jit\(train_step\)/", "", path)
  unwrapped = None
  while unwrapped != path:  # transpose(jvp(f)) -> f; jit(g) stays.
    unwrapped, path = path, re.sub(r"(?:transpose|jvp|vmap)\(([^()]*)\)",
                                   r"\1", path)
  # The encoder's layers run through one jitted function (model.Encoder):
  # `encoder/encoder._unrolled_layers/layer_*/jit(apply)/TransformerLayer/x`
  # -> `encoder/layer_*/x`.
  path = re.sub(r"/\w+\._unrolled_layers/", "/", path)
  path = path.replace("/jit(apply)/TransformerLayer/", "/")
  return f"{direction} {path}"


def _device_events(trace: dict) -> tuple[list[dict], str]:
  """The complete ('X') events of the accelerator, or of the host's XLA
  runtime when there is no accelerator."""
  names = {e["pid"]: e["args"]["name"] for e in trace["traceEvents"]
           if e.get("ph") == "M" and e.get("name") == "process_name"}
  device = {pid for pid, n in names.items() if n.startswith("/device:")}
  events = [e for e in trace["traceEvents"]
            if e.get("ph") == "X" and "dur" in e]
  if device:
    return [e for e in events if e["pid"] in device], "device"
  skip = ("ThreadpoolListener", "ThunkExecutor", "PjitFunction", "$",
          "TfrtCpu", "Execute", "SlinkyThreadPool", "ParseArguments",
          "CommonPjRt")
  return [e for e in events if not e["name"].startswith(skip)
          and not e["name"].startswith("jit_")], "host"


def main(argv):
  del argv
  f = flags.FLAGS
  config = benchmark.sized_config(f.config, f.batch_size, f.seq_len)
  mesh, rules = train_lib.mesh_and_rules(config)
  sharding.check_batch_size(config.input.batch_size, mesh)
  spec = benchmark.synthetic_spec(config)
  with sharding.use(mesh, rules):
    built = train_lib.build(config, spec, mesh, rules, jax.random.key(0))
    batch = sharding.global_batch(benchmark.synthetic_batch(config, spec),
                                  mesh)
    rng = jax.random.key(1)
    compiled = built.train_step.lower(built.state, batch, rng).compile()
    os.makedirs(f.out, exist_ok=True)
    hlo = compiled.as_text()
    with open(os.path.join(f.out, "train_step.hlo.txt"), "w") as fh:
      fh.write(hlo)
    state = built.state
    for _ in range(2):
      state, metrics = compiled(state, batch, rng)
    jax.block_until_ready(metrics)
    with jax.profiler.trace(f.out, create_perfetto_trace=True):
      for _ in range(f.steps):
        state, metrics = compiled(state, batch, rng)
        jax.block_until_ready(metrics)
  path = sorted(glob.glob(os.path.join(f.out, "**", "perfetto_trace.json.gz"),
                          recursive=True))[-1]
  with gzip.open(path) as fh:
    events, where = _device_events(json.load(fh))
  sources = _op_sources(hlo)
  by_op, count, by_source = (collections.Counter(), collections.Counter(),
                             collections.Counter())
  for e in events:
    args = e.get("args", {})
    op = args.get("hlo_op") or e["name"]
    by_op[op] += e["dur"]
    count[op] += 1
    by_source[_short_source(sources.get(op, op))] += e["dur"]
  total = sum(by_op.values())
  per_step = lambda us: us / 1e3 / f.steps  # pylint: disable=g-long-lambda
  print(f"{where} op time {per_step(total):.1f} ms/step over {f.steps} steps"
        f" ({len(by_op)} ops); trace: {path}")
  print(f"\n{'ms/step':>8s} {'%':>5s} {'calls':>5s}  op  <- source")
  for op, us in by_op.most_common(f.top):
    print(f"{per_step(us):8.2f} {100 * us / total:5.1f} "
          f"{count[op] // f.steps:5d}  {op}  <- "
          f"{_short_source(sources.get(op, '?'))[-110:]}")
  print(f"\n{'ms/step':>8s} {'%':>5s}  source (layers merged)")
  for src, us in by_source.most_common(f.top):
    print(f"{per_step(us):8.2f} {100 * us / total:5.1f}  {src[-130:]}")


if __name__ == "__main__":
  app.run(main)
