#!/bin/bash
# Runs electra_jax as N processes on one machine, each with D simulated CPU
# devices: a test of the multi-host code paths (per-process input, global
# batches, cooperative checkpoints) without a cluster. Each process runs
#   python -m electra_jax.main --config=CONFIG --workdir=WORKDIR [overrides]
# with JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID set, which
# electra_jax.main passes to jax.distributed.initialize().
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: launch/local_multiprocess.sh [OPTIONS] --workdir DIR [-- CONFIG_OVERRIDES...]

Run from the repository root. Starts N background processes of
python -m electra_jax.main, each logging to DIR/logs/process_<i>.log (its pid
in DIR/logs/process_<i>.pid), waits for all of them and exits non-zero
(stopping the others) if any fails. SIGTERM to any one process stops them
all at the same step, after a checkpoint: a preemption rehearsal.

Options:
  --num_processes N        processes to start [2]
  --devices_per_process D  simulated CPU devices per process [4]
  --port P                 coordinator port on localhost [12345]
  --config PATH            config file [configs/tiny.py]
  --workdir DIR            run directory (shared by all processes)
  --dry-run                print every command (prefixed with "+ "), run none
  -h, --help               show this help
Environment: PYTHON, the interpreter [python].

Example: 2 processes x 4 devices, the same global batch as 1 x 8:
  launch/local_multiprocess.sh --workdir=runs/mp -- --config.num_train_steps=20
EOF
}

die() { echo "local_multiprocess.sh: $*" >&2; exit 2; }

# shellcheck source=launch/quote_args.sh
source "$(dirname "${BASH_SOURCE[0]}")/quote_args.sh"

NUM_PROCESSES=2
DEVICES=4
PORT=12345
CONFIG="configs/tiny.py"
WORKDIR=""
DRY_RUN=0
PYTHON="${PYTHON:-python}"
OVERRIDES=()

need() { (( $# >= 2 )) || die "$1 needs a value (see --help)"; }
while (( $# )); do
  case "$1" in
    --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}"; continue ;;
  esac
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --dry-run|--dry_run) DRY_RUN=1; shift ;;
    --num_processes) need "$@"; NUM_PROCESSES="$2"; shift 2 ;;
    --devices_per_process) need "$@"; DEVICES="$2"; shift 2 ;;
    --port) need "$@"; PORT="$2"; shift 2 ;;
    --config) need "$@"; CONFIG="$2"; shift 2 ;;
    --workdir) need "$@"; WORKDIR="$2"; shift 2 ;;
    --) shift; OVERRIDES=("$@"); break ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
[[ -n "$WORKDIR" ]] || die "--workdir is required"
for n in "$NUM_PROCESSES" "$DEVICES" "$PORT"; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "expected a positive integer, got '$n'"
done
LOGDIR="$WORKDIR/logs"

pids=()
# Stops the processes started here: SIGTERM (the run saves a checkpoint at
# its next step), then SIGKILL after STOP_GRACE_SECONDS, as peers of a failed
# process may be stuck in a collective. Each runs in its own process group
# (set -m below), so helpers it started go too.
stop_all() {
  local pid tries=$(( ${STOP_GRACE_SECONDS:-20} * 2 ))
  for pid in ${pids[@]+"${pids[@]}"}; do
    kill -TERM -- "-$pid" 2>/dev/null || true
  done
  for (( ; tries > 0; tries-- )); do
    running=0
    for pid in ${pids[@]+"${pids[@]}"}; do
      if kill -0 "$pid" 2>/dev/null; then running=1; fi
    done
    (( running )) || break
    sleep 0.5
  done
  for pid in ${pids[@]+"${pids[@]}"}; do
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
}
trap 'echo "local_multiprocess.sh: interrupted" >&2; stop_all; exit 130' \
  INT TERM

printf '+ %s\n' "$(quote_args mkdir -p "$LOGDIR")"
(( DRY_RUN )) || mkdir -p "$LOGDIR"
for (( i = 0; i < NUM_PROCESSES; i++ )); do
  cmd=(env "JAX_COORDINATOR_ADDRESS=localhost:$PORT"
       "JAX_NUM_PROCESSES=$NUM_PROCESSES" "JAX_PROCESS_ID=$i"
       JAX_PLATFORMS=cpu
       "XLA_FLAGS=--xla_force_host_platform_device_count=$DEVICES"
       "$PYTHON" -m electra_jax.main "--config=$CONFIG" "--workdir=$WORKDIR"
       ${OVERRIDES[@]+"${OVERRIDES[@]}"})
  log="$LOGDIR/process_$i.log"
  printf '+ %s > %s 2>&1 &\n' "$(quote_args "${cmd[@]}")" "$(quote_args "$log")"
  if (( ! DRY_RUN )); then
    set -m  # A process group per process, for stop_all.
    "${cmd[@]}" >"$log" 2>&1 </dev/null &
    set +m
    pids+=("$!")
    echo "$!" > "$LOGDIR/process_$i.pid"
  fi
done
(( ! DRY_RUN )) || exit 0

# Poll rather than `wait -n`, which older bash lacks; stop all on a failure.
remaining=("${!pids[@]}")
while (( ${#remaining[@]} )); do
  still=()
  for i in "${remaining[@]}"; do
    if kill -0 "${pids[$i]}" 2>/dev/null; then
      still+=("$i")
      continue
    fi
    rc=0
    wait "${pids[$i]}" || rc=$?
    if (( rc != 0 )); then
      echo "local_multiprocess.sh: process $i exited with $rc;" \
        "stopping the others. End of $LOGDIR/process_$i.log:" >&2
      tail -n 20 "$LOGDIR/process_$i.log" >&2 || true
      stop_all
      exit "$rc"
    fi
  done
  remaining=(${still[@]+"${still[@]}"})
  (( ${#remaining[@]} == 0 )) || sleep 0.5
done
echo "local_multiprocess.sh: all $NUM_PROCESSES processes finished;" \
  "logs in $LOGDIR"
