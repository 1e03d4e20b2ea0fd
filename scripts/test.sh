#!/usr/bin/env bash
# Installs everything the tests need into ./.venv, then lints, type-checks and runs
# the whole test suite. The README's test command and `.ci/run` are exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

# GNU make drives the jobserver tests; a bare machine may lack it.
if ! command -v make >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && apt-get install -y -qq make >/dev/null
    else
        echo "scripts/test.sh: GNU make is missing; the jobserver tests will be skipped" >&2
    fi
fi

if ! python3 -m venv .venv; then
    echo "scripts/test.sh: error: 'python3 -m venv' failed; on Debian/Ubuntu: apt-get install python3-venv" >&2
    exit 1
fi
# pip >= 24 writes console scripts that do not `import re` (~15 ms per rustc call).
.venv/bin/python -m pip install -q --disable-pip-version-check -U pip
# compat: a plain .pth entry; the default editable finder adds ~20 ms to every
# Python start (it imports re, enum, urllib), which the subprocess tests feel.
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' --config-settings editable_mode=compat

.venv/bin/ruff check ltoguard tests scripts
.venv/bin/ruff format --check ltoguard tests scripts
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
