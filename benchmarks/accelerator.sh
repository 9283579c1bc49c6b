#!/usr/bin/env bash
# Benchmarks ELECTRA-Small and -Base at bfloat16 on one accelerator (GPU or
# TPU) and prints a results table; each run's JSON line goes to
# $RESULTS_DIR/results.jsonl and its log next to it.
#
#   bash benchmarks/accelerator.sh            # all runs below
#   RUNS="small_b128" bash benchmarks/accelerator.sh
set -uo pipefail
python=${PYTHON:-python}
results=${RESULTS_DIR:-bench_results}
steps=${STEPS:-20}
mkdir -p "$results"
bf16=(--config.model.dtype=bfloat16)
cudnn=(--config.model.attention_impl=cudnn
       --config.model.attention_probs_dropout_prob=0.0)
declare -A args=(
  [small_b128]="--config=configs/small.py --batch_size=128 --seq_len=128"
  [small_b1024]="--config=configs/small.py --batch_size=1024 --seq_len=128"
  [base_b128]="--config=configs/base.py --batch_size=128 --seq_len=512"
  [base_b128_cudnn]="--config=configs/base.py --batch_size=128 --seq_len=512 ${cudnn[*]}"
)
runs=${RUNS:-small_b128 small_b1024 base_b128 base_b128_cudnn}
for name in $runs; do
  echo "== $name" >&2
  # shellcheck disable=SC2086
  "$python" -m electra_jax.benchmark ${args[$name]} "${bf16[@]}" \
      --steps="$steps" > "$results/$name.log" 2>&1
  status=$?
  tail -n 1 "$results/$name.log" | grep '^{' \
      | "$python" -c "import json,sys; r=json.load(sys.stdin); r['run']='$name'; print(json.dumps(r))" \
      >> "$results/results.jsonl" || {
    echo "$name failed (exit $status); the end of its log:" >&2
    tail -n 15 "$results/$name.log" >&2
  }
done
"$python" - "$results/results.jsonl" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
print(f"{'run':18s} {'device':14s} {'batch':>9s} {'tokens/s':>11s} "
      f"{'MFU':>6s} {'step ms':>8s} {'compile s':>9s} {'mem GiB':>8s}")
for r in rows:
  mem = r.get("peak_device_memory_mib", float("nan")) / 1024
  print(f"{r['run']:18s} {r['device'][:14]:14s} "
        f"{r['batch_size']:>5d}x{r['seq_len']:<3d} "
        f"{r['tokens_per_second']:>11,.0f} {r['mfu']:>6.1%} "
        f"{1000 * r['step_seconds_median']:>8.1f} "
        f"{r['compile_seconds']:>9.1f} {mem:>8.1f}")
PY
