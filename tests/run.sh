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
# Two workers, a test file each at a time (pytest-xdist): most tests wait on a server, a browser or one
# core, so two run side by side on 2 cores in little more than the time of one. TEST_WORKERS=0 runs
# them in this process. Files start slowest first (tests/conftest.py SLOW_FILES), not by their number of tests.
python3 -m pytest -n "${TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder "$@"
# Most laptops and cloud VMs have AVX2 but no AVX-512, and oneDNN then runs other kernels (one of them
# is buggy: resnet_core/layout.py). On a CPU with AVX-512, ONEDNN_MAX_CPU_ISA=AVX2 selects those kernels,
# so the model, training and twins tests run again on them; a CPU without AVX-512 ran them above.
if [ "$#" -eq 0 ] && grep -q -m1 avx512f /proc/cpuinfo 2>/dev/null; then
    ONEDNN_MAX_CPU_ISA=AVX2 python3 -m pytest -q -n "${TEST_WORKERS:-2}" --dist loadfile \
        tests/test_model.py tests/test_train.py tests/test_twins.py
fi
