#!/usr/bin/env bash
# The whole test suite: installs what the tests need, then runs every test.
# Used as-is by README.md and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x /usr/bin/chromium ]; then
    (apt-get update -q && apt-get install -y -q chromium) >/tmp/chromium-install.log 2>&1 \
        || { echo "could not install Debian's chromium (see /tmp/chromium-install.log)"; exit 1; }
fi
python3 -m pip install -q -r requirements-dev.txt -r requirements-ray.txt  # Ray: tests/test_ray.py
python3 -m ruff check .
python3 -m pytest "$@"
# Most laptops and cloud VMs have AVX2 but no AVX-512, and oneDNN then runs other kernels (one of them
# is buggy: resnet_core/layout.py). ONEDNN_MAX_CPU_ISA=AVX2 selects those kernels on any x86 CPU, so the
# model, training, twins and jobs tests run again on them whatever CPU this is.
if [ "$#" -eq 0 ] && [ "$(uname -m)" = "x86_64" ]; then
    ONEDNN_MAX_CPU_ISA=AVX2 python3 -m pytest -q \
        tests/test_model.py tests/test_train.py tests/test_twins.py tests/test_jobs.py
fi
