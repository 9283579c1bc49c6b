#!/bin/bash
# Runs electra_jax on a Cloud TPU VM or pod slice (modelled on big_vision's
# run_tpu.sh): create or reuse the VM (directly, or through a queued
# resource for Spot / best-effort capacity), ship this checkout to every
# worker, install the pinned requirements plus jax[tpu], then start the same
#   python -m electra_jax.main --config=CONFIG --workdir=WORKDIR [overrides]
# on all workers through launch/tpu_worker.sh, which keeps each worker's log
# and copies it to WORKDIR/logs/worker_<i>.log when the run ends.
# electra_jax.runtime finds the other workers the way
# `jax.distributed.initialize()` does (the TPU metadata server), so nothing
# else is set. Hyperparameters live in configs/; pass one-off changes after
# `--` as --config.a.b=v.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: launch/tpu_vm.sh [OPTIONS] COMMAND [-- CONFIG_OVERRIDES...]

Commands:
  create   create the TPU VM / pod slice unless it already exists; with
           --queued, request it as a queued resource and wait until ACTIVE
  setup    copy this checkout (git-tracked and untracked, non-ignored files)
           to ~/electra_jax on every worker; make a Python 3.11 venv there and
           pip install requirements.txt plus the matching jax[tpu]
  run      start python -m electra_jax.main in the background on every
           worker (--worker=all); output goes to ~/electra_jax/logs/train.log
           and, when the run ends, to WORKDIR/logs/worker_<i>.log
  logs     follow the log of one worker (--worker, default 0)
  collect  copy every worker's log to WORKDIR/logs/worker_<i>.log now
  stop     send SIGTERM to the run on every worker (it saves a checkpoint)
  delete   delete the TPU VM (with --queued: the queued resource and its VM)
  all      create, setup, run, logs

Before creating or using a TPU, commands given a gs:// --workdir check from
this machine that the workdir can be written, read back and deleted, and
stop in seconds, naming the path, if not; `run` repeats the check on every
worker, whose service account is what the training uses.

Options (defaults in brackets, most also read from the environment):
  --name NAME        TPU VM name [$TPU_NAME or electra-jax]
  --zone ZONE        zone [$ZONE or us-central2-b]
  --type TYPE        accelerator type, e.g. v4-8, v4-32, v5litepod-16, v6e-8
                     [$ACCELERATOR_TYPE or v4-8]
  --version VERSION  TPU software version [by type: tpu-ubuntu2204-base for
                     v2-v4, v2-alpha-tpuv5-lite, v2-alpha-tpuv5,
                     v2-alpha-tpuv6e]
  --project PROJECT  GCP project [$PROJECT or gcloud's default]
  --spot             Spot capacity (preemptible: the run gets SIGTERM,
                     saves, and `run` again resumes it)
  --queued           create through a queued resource named NAME (waits in
                     the queue instead of failing when capacity is short)
  --best-effort      queued, best-effort capacity (gcloud alpha; implies
                     --queued)
  --compile_cache DIR  persistent JAX compilation cache, shared by runs and
                     restarts [gs://BUCKET/jax_cache for a gs:// --workdir,
                     else none]; "none" turns it off
  --config PATH      config file, relative to the repository [configs/base.py]
  --workdir DIR      run directory, normally gs://BUCKET/PATH (needed by run)
  --worker N         worker whose log `logs` follows [0]
  --dry-run          print every command (prefixed with "+ ") and run none
  -h, --help         show this help

Everything after `--` is passed to electra_jax.main unchanged, e.g.
  launch/tpu_vm.sh --type=v4-32 --workdir=gs://my-bucket/electra/base all -- \
      --config.input.data_dir=gs://my-bucket/data/owt
EOF
}

DRY_RUN=0
QR_POLL_SECONDS="${QR_POLL_SECONDS:-30}"  # Queued-resource state polling.
REMOTE_DIR=electra_jax  # Relative to the home directory on each worker.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

die() { echo "tpu_vm.sh: $*" >&2; exit 2; }

# shellcheck source=launch/quote_args.sh
source "$(dirname "${BASH_SOURCE[0]}")/quote_args.sh"

# Prints the command, then runs it unless --dry-run.
run() {
  printf '+ %s\n' "$(quote_args "$@")"
  if (( ! DRY_RUN )); then "$@"; fi
}

default_version() {
  case "$1" in
    v5litepod-*|v5e-*) echo v2-alpha-tpuv5-lite ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v6e-*) echo v2-alpha-tpuv6e ;;
    *) echo tpu-ubuntu2204-base ;;
  esac
}

NAME="${TPU_NAME:-electra-jax}"
ZONE="${ZONE:-us-central2-b}"
TYPE="${ACCELERATOR_TYPE:-v4-8}"
VERSION=""
PROJECT="${PROJECT:-}"
SPOT=0
QUEUED=0
BEST_EFFORT=0
COMPILE_CACHE=""
CONFIG="configs/base.py"
WORKDIR=""
WORKER=0
COMMAND=""
OVERRIDES=()
TARBALL="${TMPDIR:-/tmp}/electra_jax-$$.tar.gz"  # Local copy for setup.

need() { (( $# >= 2 )) || die "$1 needs a value (see --help)"; }
while (( $# )); do
  case "$1" in
    --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}"; continue ;;
  esac
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --dry-run|--dry_run) DRY_RUN=1; shift ;;
    --spot) SPOT=1; shift ;;
    --queued) QUEUED=1; shift ;;
    --best-effort|--best_effort) BEST_EFFORT=1; QUEUED=1; shift ;;
    --compile_cache|--compile-cache) need "$@"; COMPILE_CACHE="$2"; shift 2 ;;
    --name) need "$@"; NAME="$2"; shift 2 ;;
    --zone) need "$@"; ZONE="$2"; shift 2 ;;
    --type) need "$@"; TYPE="$2"; shift 2 ;;
    --version) need "$@"; VERSION="$2"; shift 2 ;;
    --project) need "$@"; PROJECT="$2"; shift 2 ;;
    --config) need "$@"; CONFIG="$2"; shift 2 ;;
    --workdir) need "$@"; WORKDIR="$2"; shift 2 ;;
    --worker) need "$@"; WORKER="$2"; shift 2 ;;
    --) shift; OVERRIDES=("$@"); break ;;
    create|setup|run|logs|collect|stop|delete|all)
      [[ -z "$COMMAND" ]] || die "only one command, got $COMMAND and $1"
      COMMAND="$1"; shift ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
[[ -n "$COMMAND" ]] || { usage >&2; exit 2; }
VERSION="${VERSION:-$(default_version "$TYPE")}"
(( ! (SPOT && BEST_EFFORT) )) || die "choose one of --spot and --best-effort"
WORKDIR="${WORKDIR%/}"
if [[ -z "$COMPILE_CACHE" && "$WORKDIR" == gs://* ]]; then
  bucket="${WORKDIR#gs://}"
  COMPILE_CACHE="gs://${bucket%%/*}/jax_cache"
fi
[[ "$COMPILE_CACHE" != none ]] || COMPILE_CACHE=""

GCLOUD_FLAGS=("--zone=$ZONE")
[[ -z "$PROJECT" ]] || GCLOUD_FLAGS+=("--project=$PROJECT")
TPU=(gcloud compute tpus tpu-vm)
QR=(gcloud compute tpus queued-resources)
# Best-effort capacity is only in the alpha track of gcloud.
(( ! BEST_EFFORT )) || QR=(gcloud alpha compute tpus queued-resources)

# Writes, reads back and deletes a marker under the gs:// workdir with this
# machine's credentials: a missing bucket or a permission error ends the
# script in seconds, naming the path, before any TPU is created or used.
preflight() {
  [[ "$WORKDIR" == gs://* ]] || return 0
  local marker="$WORKDIR/.tpu_vm_preflight_$$" err
  printf '+ echo ok | %s\n' \
    "$(quote_args gcloud storage cp --quiet - "$marker")"
  printf '+ %s\n' "$(quote_args gcloud storage cat "$marker")" \
    "$(quote_args gcloud storage rm --quiet "$marker")"
  (( ! DRY_RUN )) || return 0
  if ! err="$(echo ok | gcloud storage cp --quiet - "$marker" 2>&1)" \
      || ! err="$(gcloud storage cat "$marker" 2>&1)" \
      || ! err="$(gcloud storage rm --quiet "$marker" 2>&1)"; then
    die "cannot write, read and delete under $WORKDIR: ${err##*$'\n'}"
  fi
}

# Runs a shell command line on the given workers ("all" or an index).
on_workers() {
  run "${TPU[@]}" ssh "$NAME" "${GCLOUD_FLAGS[@]}" "--worker=$1" --command "$2"
}

do_create() {
  if (( QUEUED )); then
    create_queued
    return
  fi
  if (( DRY_RUN )); then
    echo "# (create is skipped when" \
      "'gcloud compute tpus tpu-vm describe $NAME' finds the VM)"
  elif "${TPU[@]}" describe "$NAME" "${GCLOUD_FLAGS[@]}" \
      --format='value(state)' >/dev/null 2>&1; then
    echo "tpu_vm.sh: reusing the existing TPU VM $NAME"
    return 0
  fi
  local flags=("--accelerator-type=$TYPE" "--version=$VERSION")
  (( ! SPOT )) || flags+=(--spot)
  run "${TPU[@]}" create "$NAME" "${GCLOUD_FLAGS[@]}" "${flags[@]}"
}

qr_state() {
  "${QR[@]}" describe "$NAME" "${GCLOUD_FLAGS[@]}" \
    --format='value(state.state)' 2>/dev/null
}

# A queued resource NAME whose TPU VM is also NAME: requested once, then
# waited on (it may sit in WAITING_FOR_RESOURCES for hours) until ACTIVE.
create_queued() {
  local flags=("--node-id=$NAME" "--accelerator-type=$TYPE"
               "--runtime-version=$VERSION") state=""
  (( ! SPOT )) || flags+=(--spot)
  (( ! BEST_EFFORT )) || flags+=(--best-effort)
  if (( DRY_RUN )); then
    echo "# (create is skipped when '${QR[*]} describe $NAME' finds the" \
      "queued resource; then it waits until its state is ACTIVE)"
    run "${QR[@]}" create "$NAME" "${GCLOUD_FLAGS[@]}" "${flags[@]}"
    return 0
  fi
  state="$(qr_state)" || state=""
  if [[ -z "$state" ]]; then
    run "${QR[@]}" create "$NAME" "${GCLOUD_FLAGS[@]}" "${flags[@]}"
  else
    echo "tpu_vm.sh: reusing the queued resource $NAME ($state)"
  fi
  while :; do
    state="$(qr_state)" || state=""
    case "$state" in
      ACTIVE) echo "tpu_vm.sh: queued resource $NAME is ACTIVE"; return 0 ;;
      FAILED|SUSPENDING|SUSPENDED)
        die "queued resource $NAME is $state; see" \
          "'${QR[*]} describe $NAME', then delete it and create again" ;;
    esac
    echo "tpu_vm.sh: queued resource $NAME is ${state:-not visible yet};" \
      "checking again in ${QR_POLL_SECONDS}s"
    sleep "$QR_POLL_SECONDS"
  done
}

do_setup() {
  # Ship the working tree as git sees it (uncommitted edits and new files
  # included, ignored ones such as .venv/ and runs/ left out).
  local tarball="$TARBALL" files=() f
  git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1 \
    || die "setup ships a git checkout; $ROOT is not one"
  while IFS= read -r -d '' f; do
    # Skip tracked files deleted in the working tree.
    if [[ -e "$ROOT/$f" || -L "$ROOT/$f" ]]; then files+=("$f"); fi
  done < <(git -C "$ROOT" ls-files -z --cached --others --exclude-standard)
  if (( DRY_RUN )); then
    echo "+ tar -czf $(quote_args "$tarball") -C $(quote_args "$ROOT")" \
      "<the ${#files[@]} files of git ls-files --cached --others" \
      "--exclude-standard>"
  else
    echo "+ tar -czf $(quote_args "$tarball") -C $(quote_args "$ROOT")" \
      "<${#files[@]} files>"
    trap 'rm -f "$TARBALL"' EXIT
    tar -czf "$tarball" -C "$ROOT" -- "${files[@]}"
  fi
  run "${TPU[@]}" scp "$tarball" "$NAME:$REMOTE_DIR.tar.gz" \
    "${GCLOUD_FLAGS[@]}" --worker=all
  # requirements.txt pins jax; jax[tpu] of the same version brings libtpu.
  local jax_version
  jax_version="$(sed -n 's/^jax==\([^[:space:]#]*\).*/\1/p' \
    "$ROOT/requirements.txt")"
  [[ -n "$jax_version" ]] || die "no jax==VERSION pin in requirements.txt"
  local d="$REMOTE_DIR"
  on_workers all "set -e; mkdir -p $d; \
find $d -mindepth 1 -maxdepth 1 ! -name .venv ! -name logs -exec rm -rf {} +; \
tar -xzf $d.tar.gz -C $d; rm -f $d.tar.gz; cd $d; \
command -v python3.11 >/dev/null || { sudo apt-get update -qq; \
sudo apt-get install -y -qq python3.11 python3.11-venv; }; \
[ -d .venv ] || python3.11 -m venv .venv; \
.venv/bin/pip install -q -U pip; \
.venv/bin/pip install -q -r requirements.txt $(quote_args "jax[tpu]==$jax_version")"
}

do_run() {
  [[ -n "$WORKDIR" ]] || die "run needs --workdir" \
    "(e.g. gs://BUCKET/electra/run1)"
  [[ "$WORKDIR" == gs://* ]] || echo "tpu_vm.sh: warning: --workdir" \
    "$WORKDIR is not gs://; on a pod slice each worker writes its own disk" >&2
  local worker_cmd envs=()
  if [[ -n "$COMPILE_CACHE" ]]; then
    envs+=("JAX_COMPILATION_CACHE_DIR=$COMPILE_CACHE")
  fi
  worker_cmd="$(quote_args env ${envs[@]+"${envs[@]}"} \
    bash launch/tpu_worker.sh run "$WORKDIR/logs" -- \
    python -m electra_jax.main "--config=$CONFIG" \
    "--workdir=$WORKDIR" ${OVERRIDES[@]+"${OVERRIDES[@]}"})"
  # The worker check uses the VM's service account, which the run uses.
  # setsid + nohup + redirects: the run outlives the ssh session;
  # tpu_worker.sh writes logs/train.log and logs/train.pid.
  on_workers all "cd $REMOTE_DIR && mkdir -p logs && \
if [ -f logs/train.pid ] && kill -0 \"\$(cat logs/train.pid)\" 2>/dev/null; \
then echo \"already running on \$(hostname); use stop first\" >&2; exit 1; fi \
&& bash launch/tpu_worker.sh check $(quote_args "$WORKDIR") \
&& . .venv/bin/activate && \
{ setsid nohup $worker_cmd > logs/worker.log 2>&1 < /dev/null & }"
}

do_logs() {
  on_workers "$WORKER" "tail -n 200 -F $REMOTE_DIR/logs/train.log"
}

do_collect() {
  [[ -n "$WORKDIR" ]] || die "collect needs --workdir"
  on_workers all "cd $REMOTE_DIR && bash launch/tpu_worker.sh collect \
$(quote_args "$WORKDIR/logs")"
}

do_stop() {
  on_workers all "pid=\"\$(cat $REMOTE_DIR/logs/train.pid 2>/dev/null)\" \
&& kill -TERM \"\$pid\" 2>/dev/null || true"
}

do_delete() {
  if (( QUEUED )); then  # --force: the TPU VM goes with it.
    run "${QR[@]}" delete "$NAME" "${GCLOUD_FLAGS[@]}" --force --quiet
  else
    run "${TPU[@]}" delete "$NAME" "${GCLOUD_FLAGS[@]}" --quiet
  fi
}

case "$COMMAND" in
  create) preflight; do_create ;;
  setup) preflight; do_setup ;;
  run) preflight; do_run ;;
  logs) do_logs ;;
  collect) do_collect ;;
  stop) do_stop ;;
  delete) do_delete ;;
  all) [[ -n "$WORKDIR" ]] || die "all needs --workdir"
       preflight; do_create; do_setup; do_run; do_logs ;;
esac
