#!/usr/bin/env bash
# GPU readiness check: parity, throughput, fine-tuning and several processes in one prepared run.
# The work is in gpu_check.py beside this file (--help lists everything):
#   tests/gpu/check.sh                  on a CUDA machine: every stage (a 450 s budget for optional parts)
#   tests/gpu/check.sh --quick          the same without torch.compile
#   tests/gpu/check.sh --cpu-smoke      anywhere: the same stages on tiny models on the CPU (about a minute of CPU)
#   tests/gpu/check.sh --wheels DIR ... first installs DIR/*.whl into a scratch folder (no network),
#                                       for packages a bare GPU image lacks (tests/gpu/wheels.txt)
# PYTHON names the interpreter (default python3). Exit status: 0 all checks passed, 1 a check failed,
# 2 no GPU (without --cpu-smoke), 3 packages missing.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python3}"
wheels=""
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) wheels="${2:?--wheels needs a folder}"; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
site=""
if [ -n "$wheels" ]; then
  site="$(mktemp -d)"
  trap 'rm -rf "$site"' EXIT
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$wheels"/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
"$python" "$here/gpu_check.py" ${args[@]+"${args[@]}"}
