# shellcheck shell=bash
# Sourced by the launch scripts that run where this checkout is
# (local_multiprocess.sh, tpu_vm.sh). gpu_slurm.sbatch keeps its own copy:
# Slurm runs a spooled copy of it, away from this directory.

# Prints its arguments as one shell-quoted line (as Python's shlex.join).
quote_args() {
  local IFS=' ' arg out=()
  for arg in "$@"; do
    if [[ "$arg" =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
      out+=("$arg")
    else
      out+=("'${arg//\'/\'\"\'\"\'}'")
    fi
  done
  printf '%s\n' "${out[*]}"
}
