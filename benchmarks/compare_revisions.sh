#!/usr/bin/env bash
# Paired benchmark of the train step at two git revisions: checks each out
# into a temporary worktree, runs `python -m electra_jax.benchmark` in them
# alternately ROUNDS times (so that both see the same machine), and prints
# the median tokens/s of each and their ratio (B / A).
#
#   bash benchmarks/compare_revisions.sh A B [--rounds 3]
#       [--config configs/small.py] [--batch_size 32] [--seq_len 128]
#       [--steps 10]
#
# A revision may be WORKTREE for the current working tree, uncommitted
# changes included. Pin it to cores for a quieter measurement, e.g.
# `taskset -c 1 bash benchmarks/compare_revisions.sh HEAD WORKTREE`.
set -euo pipefail
usage() { sed -n '2,13p' "$0"; }
if [[ $# -lt 2 || "$1" == -* ]]; then usage; exit 2; fi
rev_a="$1" rev_b="$2"; shift 2
rounds=3 config=configs/small.py batch=32 seq=128 steps=10
# shellcheck source=benchmarks/bench_flags.sh
. "$(dirname "$0")/bench_flags.sh"
parse_bench_flags "$@"
root=$(git rev-parse --show-toplevel)
python=${PYTHON:-python}
tmp=$(mktemp -d)
cleanup() {
  for d in "$tmp"/a "$tmp"/b; do
    [[ -d "$d" ]] && git -C "$root" worktree remove --force "$d" 2>/dev/null
  done
  rm -rf "$tmp"
}
trap cleanup EXIT

checkout() {  # checkout REV DIR -> prints the directory to run in.
  if [[ "$1" == WORKTREE ]]; then echo "$root"; return; fi
  git -C "$root" worktree add --detach --quiet "$2" "$1" >&2
  echo "$2"
}
dir_a=$(checkout "$rev_a" "$tmp/a")
dir_b=$(checkout "$rev_b" "$tmp/b")

run() {  # run DIR -> tokens/s
  (cd "$1" && "$python" -m electra_jax.benchmark --config="$config" \
     --batch_size="$batch" --seq_len="$seq" --steps="$steps" 2>/dev/null \
     | tail -n 1 \
     | "$python" -c 'import json,sys; print(json.load(sys.stdin)["tokens_per_second"])')
}
a=() b=()
for ((r = 1; r <= rounds; r++)); do
  a+=("$(run "$dir_a")"); b+=("$(run "$dir_b")")
  echo "round $r: $rev_a ${a[-1]} tokens/s, $rev_b ${b[-1]} tokens/s"
done
"$python" - "$rev_a" "$rev_b" "${a[*]}" "${b[*]}" <<'PY'
import statistics, sys
name_a, name_b = sys.argv[1:3]
a = [float(x) for x in sys.argv[3].split()]
b = [float(x) for x in sys.argv[4].split()]
ma, mb = statistics.median(a), statistics.median(b)
print(f"{name_a} {ma:,.0f} tokens/s (range {min(a):,.0f}-{max(a):,.0f}), "
      f"{name_b} {mb:,.0f} tokens/s (range {min(b):,.0f}-{max(b):,.0f}), "
      f"medians of {len(a)}: {name_b}/{name_a} = {mb / ma:.3f}")
PY
