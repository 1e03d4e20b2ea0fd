#!/usr/bin/env bash
# Installs everything the tests need into ./.venv, then lints, type-checks and runs
# the whole test suite. The README's test command and `.ci/run` are exactly this.
# Set-up steps are quiet unless they fail (then their whole output is shown).
# Arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"` for the quick subset.
set -euo pipefail
cd "$(dirname "$0")/.."

log=$(mktemp "${TMPDIR:-/tmp}/ltoguard-test-setup.XXXXXX")
trap 'rm -f "$log"' EXIT
quietly() { # run a set-up step; show its output only if it fails
    if ! "$@" >"$log" 2>&1; then
        cat "$log" >&2
        echo "scripts/test.sh: error: this step failed: $*" >&2
        exit 1
    fi
}

# GNU make drives the jobserver tests, sccache the wrapper-composition test; a bare
# machine may lack them (Debian's packages). sccache is optional: its test skips.
if ! command -v make >/dev/null 2>&1 || ! command -v sccache >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        quietly apt-get update -qq
        command -v make >/dev/null 2>&1 || quietly apt-get install -y -qq make
        if ! command -v sccache >/dev/null 2>&1 && ! apt-get install -y -qq sccache >"$log" 2>&1; then
            echo "scripts/test.sh: note: sccache could not be installed; its test will be skipped" >&2
        fi
    else
        echo "scripts/test.sh: make or sccache missing; the tests that need them will be skipped" >&2
    fi
fi

if ! python3 -m venv .venv >"$log" 2>&1; then
    cat "$log" >&2
    echo "scripts/test.sh: error: 'python3 -m venv' failed; on Debian/Ubuntu: apt-get install python3-venv" >&2
    exit 1
fi
pip=(.venv/bin/python -m pip install --disable-pip-version-check --no-input)
# pip >= 24 writes console scripts that do not `import re` (~15 ms per rustc call).
quietly "${pip[@]}" -U pip
# compat: a plain .pth entry; the default editable finder adds ~20 ms to every
# Python start (it imports re, enum, urllib), which the subprocess tests feel.
quietly "${pip[@]}" -e '.[test]' --config-settings editable_mode=compat

.venv/bin/ruff check --quiet ltoguard tests scripts
.venv/bin/ruff format --quiet --check ltoguard tests scripts
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
