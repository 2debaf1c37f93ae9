#!/usr/bin/env bash
# The three benchmarks on a CUDA GPU, writing the same tables as on CPU, in a few minutes:
#
#     bash benchmarks/gpu_check.sh [OUT]    # default OUT: runs/gpu-check-<UTC time>
#
# augment_throughput: the plugin's two BYOL views on the GPU against lightly's per-image
# transform on the CPU (where a DataLoader worker runs it); step_time: the plain and the
# wrapped BYOL step on the GPU; tta_speed: augment-and-re-encode against encode-and-steer, and
# the peak memory of steer_many (the CUDA allocator's peak statistic). Each script's
# --device cuda synchronises before reading a clock. Needs the bench extra:
# pip install "equimod-plugin[bench]".
set -euo pipefail
cd "$(dirname "$0")/.."
python - <<'PY'
import sys

import torch

if not torch.cuda.is_available():
    sys.exit("gpu_check.sh needs a CUDA GPU: torch.cuda.is_available() is False on this machine")
print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}")
PY
out="${1:-runs/gpu-check-$(date -u +%Y%m%d-%H%M%S)}"
mkdir -p "$out"
export PYTHONPATH=.
start=$(date +%s)
for bench in augment_throughput step_time tta_speed; do
    echo "+ python benchmarks/$bench.py --device cuda --out $out"
    python "benchmarks/$bench.py" --device cuda --out "$out"
done
echo "gpu_check.sh: the three reports are in $out ($(( $(date +%s) - start )) s)"
