"""Benchmark of the real ELECTRA train step: tokens/s, MFU, compile time.

  python -m electra_jax.benchmark --config=configs/small.py --batch_size=32 \
      --seq_len=128 --steps=10

Builds the same sharded step as training (generator + sampling +
discriminator + optimizer) on synthetic token batches, compiles it, runs
warm-up steps, then times `--steps` steps one by one. MFU is the analytic
training FLOPs (generator and discriminator counted separately, the
generator's head only at masked positions) over a matmul peak measured on
the same device in the same run: the fastest of large square products run
between the timed steps and for two seconds after them. The last line
printed is one JSON object.
"""

import json
import resource
import statistics
import time
from typing import Callable

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags
import numpy as np

from electra_jax import errors
from electra_jax import flops as flops_lib
from electra_jax import presets
from electra_jax import reporting
from electra_jax import runtime
from electra_jax import sharding
from electra_jax import train as train_lib
from electra_jax.data import spec as data_spec


def matmul_probe(dtype: str, n: int | None = None) -> Callable[[], float]:
  """A compiled large square matmul on device 0; each call runs it once
  and returns its FLOP/s."""
  device = jax.devices()[0]
  if n is None:
    n = 2048 if device.platform == "cpu" else 8192
  # Random operands: constant ones or zeros can run faster than real data.
  ka, kb = jax.random.split(jax.random.key(0))
  a = jax.device_put(jax.random.normal(ka, (n, n), dtype), device)
  b = jax.device_put(jax.random.normal(kb, (n, n), dtype), device)
  # Compiled ahead, so that it runs inside the step's mesh context too.
  matmul = jax.jit(lambda x, y: x @ y).lower(a, b).compile()
  matmul(a, b).block_until_ready()

  def probe() -> float:
    t = time.perf_counter()
    matmul(a, b).block_until_ready()
    return 2 * n**3 / (time.perf_counter() - t)

  return probe


def measure_matmul_peak(dtype: str, n: int | None = None,
                        seconds: float = 2.0,
                        probe: Callable[[], float] | None = None) -> float:
  """FLOP/s of the fastest of repeated large square matmuls on device 0
  (the achievable peak), over `seconds` and at least 3 products."""
  probe = probe or matmul_probe(dtype, n)
  best, reps, start = 0.0, 0, time.perf_counter()
  while time.perf_counter() - start < seconds or reps < 3:
    best = max(best, probe())
    reps += 1
  return best


def synthetic_spec(config: ml_collections.ConfigDict
                   ) -> data_spec.DataSpec:
  """The data facts of synthetic batches: `config.model.vocab_size` ids, or
  BERT's uncased WordPiece vocabulary (the reference's) when it is 0, with
  BERT's special ids."""
  return data_spec.DataSpec(
      vocab_size=config.model.vocab_size or 30522, pad_id=0, cls_id=101,
      sep_id=102, mask_id=103, max_seq_length=config.input.max_seq_length)


def synthetic_batch(config: ml_collections.ConfigDict,
                    spec: data_spec.DataSpec, seed: int = 0):
  """Random tokens with [CLS]/[SEP] and some padding, as real batches."""
  rng = np.random.default_rng(seed)
  b, length = config.input.batch_size, config.input.max_seq_length
  ids = rng.integers(1000, spec.vocab_size, (b, length))
  ids[:, 0] = spec.cls_id
  lengths = rng.integers(length * 3 // 4, length + 1, b)
  ids[np.arange(b), lengths - 1] = spec.sep_id
  mask = (np.arange(length) < lengths[:, None]).astype(np.int32)
  segments = (np.arange(length) >= length // 2).astype(np.int32) * mask
  return {"input_ids": (ids * mask).astype(np.int32), "input_mask": mask,
          "segment_ids": segments}


def sized_config(config: ml_collections.ConfigDict, batch_size: int,
                 seq_len: int) -> ml_collections.ConfigDict:
  """An unlocked copy of `config` with this batch size and length."""
  config = ml_collections.ConfigDict(config.to_dict())
  config.input.batch_size = batch_size
  config.input.max_seq_length = seq_len
  config.model.max_position_embeddings = max(
      config.model.max_position_embeddings, seq_len)
  return config


def run(config: ml_collections.ConfigDict, steps: int, warmup: int) -> dict:
  """Compiles and times the train step; returns the figures."""
  if steps < 1 or warmup < 0:
    raise ValueError(f"need steps >= 1 and warmup >= 0 (got steps={steps}, "
                     f"warmup={warmup}): the figures are medians of the "
                     "timed steps.")
  mesh, rules = train_lib.mesh_and_rules(config)
  spec = synthetic_spec(config)
  sharding.check_batch_size(config.input.batch_size, mesh)
  # The peak is probed between the timed steps too (outside their timing),
  # so that it sees the same machine as they do: on a shared or throttled
  # host the matmul rate moves by tens of percent from minute to minute,
  # and a peak taken only once moves MFU with it.
  dtype = str(train_lib.compute_dtype(config.model.dtype))
  probe = matmul_probe(dtype)
  with sharding.use(mesh, rules):
    built = train_lib.build(config, spec, mesh, rules, jax.random.key(0))
    batch = sharding.global_batch(synthetic_batch(config, spec), mesh)
    rng = jax.random.key(1)
    runtime.release_host_memory()  # As the training loop does.
    t0 = time.perf_counter()
    compiled = built.train_step.lower(built.state, batch, rng).compile()
    compile_s = time.perf_counter() - t0
    runtime.release_host_memory()
    state = built.state
    for _ in range(warmup):
      state, metrics = compiled(state, batch, rng)
    jax.block_until_ready(metrics)
    times, rates = [], []
    for _ in range(steps):
      t = time.perf_counter()
      state, metrics = compiled(state, batch, rng)
      jax.block_until_ready(metrics)
      times.append(time.perf_counter() - t)
      rates.extend(probe() for _ in range(2))
  per_seq = built.flops_per_sequence
  b, length = config.input.batch_size, config.input.max_seq_length
  step_s = statistics.median(times)
  n_dev = jax.device_count()
  achieved = per_seq["total"] * b / step_s / n_dev
  peak = max(max(rates), measure_matmul_peak(dtype, probe=probe))
  out = {
      "device": jax.devices()[0].device_kind,
      "num_devices": n_dev,
      "dtype": dtype,
      "batch_size": b,
      "seq_len": length,
      "compile_seconds": compile_s,
      "step_seconds_median": step_s,
      "step_seconds_min": min(times),
      "step_seconds_max": max(times),
      "tokens_per_second": b * length / step_s,
      "train_flops_per_step": per_seq["total"] * b,
      "generator_flops_per_step": per_seq["generator"] * b,
      "discriminator_flops_per_step": per_seq["discriminator"] * b,
      "achieved_flops_per_second_per_device": achieved,
      "measured_matmul_peak_flops": peak,
      "mfu": achieved / peak,
      "peak_host_memory_mib": resource.getrusage(
          resource.RUSAGE_SELF).ru_maxrss / 1024,
      "loss": float(metrics["loss"][0]),
  }
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    out["peak_device_memory_mib"] = stats["peak_bytes_in_use"] / 2**20
  if flops_lib.peak_flops():
    out["mfu_vs_spec_peak"] = achieved / flops_lib.peak_flops()
  return out


def _define_flags() -> None:
  config_flags.DEFINE_config_file("config", presets.resolve("small"),
                                  "Config file.", lock_config=True)
  flags.DEFINE_integer("batch_size", 32, "Global batch size.", lower_bound=1)
  flags.DEFINE_integer("seq_len", 128, "Sequence length.", lower_bound=2)
  flags.DEFINE_integer("steps", 10, "Timed steps.", lower_bound=1)
  flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.",
                       lower_bound=0)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  reporting.quiet_library_logs()
  f = flags.FLAGS
  config = sized_config(f.config, f.batch_size, f.seq_len)
  result = run(config, f.steps, f.warmup)
  print(f"{result['device']}: {result['tokens_per_second']:,.0f} tokens/s, "
        f"MFU {result['mfu']:.1%} of a measured "
        f"{result['measured_matmul_peak_flops'] / 1e12:.2f} TFLOP/s "
        f"matmul, compile {result['compile_seconds']:.1f}s")
  print(json.dumps(result))


def cli() -> None:
  """The `electra-benchmark` console script."""
  _define_flags()
  errors.run(main)


if __name__ == "__main__":
  cli()
