# The flags compare.sh and compare_revisions.sh share; source it, set the
# defaults (rounds, config, batch, seq, steps) and define `usage`, then call
# `parse_bench_flags "$@"`.
parse_bench_flags() {
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --rounds) rounds="$2"; shift 2 ;;
      --config) config="$2"; shift 2 ;;
      --batch_size) batch="$2"; shift 2 ;;
      --seq_len) seq="$2"; shift 2 ;;
      --steps) steps="$2"; shift 2 ;;
      -h|--help) usage; exit 0 ;;
      *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
  done
}
