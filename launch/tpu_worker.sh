#!/bin/bash
# The part of launch/tpu_vm.sh that runs on each TPU worker, from the
# checkout that `tpu_vm.sh setup` shipped there (~/electra_jax):
#   check DIR              write, read back and delete a marker object under
#                          DIR (gs:// or a path); one line and exit 1 if any
#                          step fails, so a bad bucket or a VM service
#                          account without access fails in seconds.
#   run LOG_DIR -- CMD...  run CMD with its output in logs/train.log and its
#                          pid in logs/train.pid, pass SIGTERM/SIGINT on to
#                          it, then copy the log to LOG_DIR/worker_<i>.log
#                          (i: this worker's number) and exit with CMD's
#                          status.
#   collect LOG_DIR        copy logs/train.log there now (a run still going).
# Paths are relative to the checkout; run it from there.
set -uo pipefail

die() { echo "tpu_worker.sh: $*" >&2; exit 2; }

# This worker's number in the slice, as JAX reads it (the metadata
# server's agent-worker-number), else the host name.
worker_id() {
  local url="http://${GCE_METADATA_IP:-metadata.google.internal}"
  url+="/computeMetadata/v1/instance/attributes/agent-worker-number"
  curl -sf -m 10 -H "Metadata-Flavor: Google" "$url" 2>/dev/null || hostname
}

copy() {  # copy SRC DEST: gs:// through gcloud storage, else cp.
  case "$2" in
    gs://*) gcloud storage cp --quiet "$1" "$2" ;;
    *) mkdir -p "$(dirname "$2")" && cp -f "$1" "$2" ;;
  esac
}

do_check() {
  local dir="${1%/}" marker err
  marker="$dir/.tpu_vm_check_$(hostname)_$$"
  case "$dir" in
    gs://*)
      if ! err="$(echo ok | gcloud storage cp --quiet - "$marker" 2>&1)" \
          || ! err="$(gcloud storage cat "$marker" 2>&1)" \
          || ! err="$(gcloud storage rm --quiet "$marker" 2>&1)"; then
        echo "tpu_worker.sh: $(hostname) cannot write, read and delete" \
          "under $dir: ${err##*$'\n'}" >&2
        exit 1
      fi ;;
    *)
      if ! { mkdir -p "$dir" && echo ok > "$marker" && rm -f "$marker"; } \
          2>/dev/null; then
        echo "tpu_worker.sh: $(hostname) cannot write under $dir" >&2
        exit 1
      fi ;;
  esac
}

do_run() {
  local log_dir="${1%/}" child="" signals=0 seen status rc=0
  shift
  [[ "${1:-}" == -- ]] && shift
  (( $# )) || die "run needs a command after --"
  mkdir -p logs
  # A Spot VM's shutdown signals this script too: the run gets the signal,
  # saves and exits, and its log is still copied. Set before the start so
  # that no signal falls between the two.
  trap 'signals=$(( signals + 1 ))
        [[ -z "$child" ]] || kill -TERM "$child" 2>/dev/null' TERM INT
  "$@" > logs/train.log 2>&1 < /dev/null &
  child=$!
  echo "$child" > logs/train.pid
  (( ! signals )) || kill -TERM "$child" 2>/dev/null
  # A trapped signal makes wait return early (128 + signal) while the run
  # goes on saving: wait again. 127: its status was already collected.
  while :; do
    seen=$signals
    wait "$child"
    status=$?
    (( status == 127 )) || rc=$status
    (( signals > seen )) || break
  done
  rm -f logs/train.pid
  copy logs/train.log "$log_dir/worker_$(worker_id).log" \
    || echo "tpu_worker.sh: could not copy logs/train.log to $log_dir" >&2
  exit "$rc"
}

do_collect() {
  [[ -f logs/train.log ]] || die "no logs/train.log on $(hostname)"
  copy logs/train.log "${1%/}/worker_$(worker_id).log"
}

(( $# >= 2 )) || die "usage: tpu_worker.sh check DIR |" \
  "run LOG_DIR -- CMD... | collect LOG_DIR"
command="$1"
shift
case "$command" in
  check) do_check "$1" ;;
  run) do_run "$@" ;;
  collect) do_collect "$1" ;;
  *) die "unknown command: $command" ;;
esac
