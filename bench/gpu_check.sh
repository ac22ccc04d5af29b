#!/usr/bin/env bash
# The first-GPU check (issue 15): installs nothing; about 8 minutes on one GPU.
#   bench/gpu_check.sh [--device cuda|cpu] [--out bench/gpu_check.json] [--skip run_quick stage2 predict ddp]
# --device cpu runs the same pieces in CI size (tests/test_gpu_check.py runs it so, without run_quick).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python}"
export WANDB_MODE=disabled
exec timeout 480 "$python" "$here/gpu_check.py" "$@"
