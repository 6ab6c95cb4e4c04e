#!/usr/bin/env bash
# The whole test suite: installs what the tests need, then runs every test.
# Used as-is by README.md and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x /usr/bin/chromium ]; then
    (apt-get update -q && apt-get install -y -q chromium) >/tmp/chromium-install.log 2>&1 \
        || { echo "could not install Debian's chromium (see /tmp/chromium-install.log)"; exit 1; }
fi
python3 -m pip install -q -r requirements-dev.txt
python3 -m ruff check .
python3 -m pytest "$@"
