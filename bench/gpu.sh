#!/usr/bin/env bash
# One short GPU check (well under 5 minutes): throughput of ResNet-20/56 on CIFAR-shaped
# data (batch 512, bf16, channels-last) and the probe's overhead there.
# Run from the repository root on a machine with a CUDA GPU: bash bench/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 bench/bench_gpu.py --device cuda --batch-size 512 --steps 50
python3 bench/bench_probe.py --device cuda --batch-size 512 --pairs 20
