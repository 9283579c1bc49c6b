#!/usr/bin/env bash
# Runs the electra_jax benchmark and the PyTorch + transformers baseline on
# the same step, alternating ROUNDS times, and prints the tokens/s ratio.
#
#   bash benchmarks/compare.sh [--rounds 2] [--config configs/small.py]
#                              [--batch_size 32] [--seq_len 128] [--steps 10]
set -euo pipefail
rounds=2 config=configs/small.py batch=32 seq=128 steps=10
usage() { sed -n '2,6p' "$0"; }
# shellcheck source=benchmarks/bench_flags.sh
. "$(dirname "$0")/bench_flags.sh"
parse_bench_flags "$@"
python=${PYTHON:-python}
jax_tps=() torch_tps=()
for ((r = 1; r <= rounds; r++)); do
  j=$("$python" -m electra_jax.benchmark --config="$config" \
      --batch_size="$batch" --seq_len="$seq" --steps="$steps" 2>/dev/null \
      | tail -n 1)
  t=$(JAX_PLATFORMS=cpu "$python" benchmarks/torch_baseline.py \
      --config="$config" --batch_size="$batch" --seq_len="$seq" \
      --steps="$steps" 2>/dev/null | tail -n 1)
  jax_tps+=("$(echo "$j" | "$python" -c 'import json,sys; print(json.load(sys.stdin)["tokens_per_second"])')")
  torch_tps+=("$(echo "$t" | "$python" -c 'import json,sys; print(json.load(sys.stdin)["tokens_per_second"])')")
  echo "round $r: electra_jax $j"
  echo "round $r: torch       $t"
done
"$python" - "${jax_tps[*]}" "${torch_tps[*]}" <<'PY'
import statistics, sys
j = [float(x) for x in sys.argv[1].split()]
t = [float(x) for x in sys.argv[2].split()]
mj, mt = statistics.median(j), statistics.median(t)
print(f"electra_jax {mj:,.0f} tokens/s, torch {mt:,.0f} tokens/s "
      f"(medians of {len(j)}): ratio {mj / mt:.2f}x")
PY
