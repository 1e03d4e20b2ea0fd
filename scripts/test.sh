#!/usr/bin/env bash
# Installs everything the tests need into ./.venv, then lints, type-checks and runs
# the whole test suite; then the quick subset (-m "not slow") on every Python from
# 3.9 to 3.13 that is here, each from a plain `pip install '.[test]'` into its own
# .venv-3.X. The README's test command and `.ci/run` are exactly this.
# Set-up steps are quiet unless they fail (then their whole output is shown).
# Arguments go to pytest on the default Python only, and leave the other Pythons out,
# e.g. `bash scripts/test.sh -m "not slow"` for the quick subset.
# LTOGUARD_TEST_PYTHONS: the versions to check ("3.9 3.13"), or "default" for none;
# ignored under CI=true, where all of them are checked.
set -euo pipefail
cd "$(dirname "$0")/.."

log=$(mktemp "${TMPDIR:-/tmp}/ltoguard-test-setup.XXXXXX")
trap 'rm -f "$log"' EXIT
quietly() { # run a set-up step; show its output only if it fails
    if ! "$@" >"$log" 2>&1; then
        cat "$log" >&2
        echo "scripts/test.sh: error: this step failed: $*" >&2
        return 1
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
pip_install() { # $1: a venv; then pip's arguments
    "$1"/bin/python -m pip install --disable-pip-version-check --no-input "${@:2}"
}
# pip >= 24 writes console scripts that do not `import re` (~15 ms per rustc call).
quietly pip_install .venv -U pip
# compat: a plain .pth entry; the default editable finder adds ~20 ms to every
# Python start (it imports re, enum, urllib), which the subprocess tests feel.
quietly pip_install .venv -e '.[test]' --config-settings editable_mode=compat

.venv/bin/ruff check --quiet ltoguard tests scripts
.venv/bin/ruff format --quiet --check ltoguard tests scripts
.venv/bin/mypy

pythons="3.9 3.10 3.11 3.12 3.13"
if [ "$#" -gt 0 ]; then
    pythons=""
elif [ -n "${LTOGUARD_TEST_PYTHONS:-}" ]; then
    if [ "${CI:-}" = true ]; then
        echo "scripts/test.sh: note: CI=true, so LTOGUARD_TEST_PYTHONS is ignored" >&2
    elif [ "$LTOGUARD_TEST_PYTHONS" = default ]; then
        pythons=""
    else
        pythons=$LTOGUARD_TEST_PYTHONS
    fi
fi
if [ -z "$pythons" ]; then
    exec .venv/bin/python -m pytest "$@"
fi

find_python() { # an interpreter of exactly version $1 (pyenv's newest, else PATH's), or nothing
    local candidates=() latest py
    if command -v pyenv >/dev/null 2>&1 && latest=$(pyenv latest "$1" 2>/dev/null); then
        candidates+=("$(pyenv root)/versions/$latest/bin/python$1")
    fi
    candidates+=("python$1")
    for py in "${candidates[@]}"; do
        if "$py" -c "import sys; sys.exit('%d.%d' % sys.version_info[:2] != '$1')" >/dev/null 2>&1; then
            echo "$py"
            return
        fi
    done
}

quick_subset() { # $1: a version; $2: its interpreter
    local venv=".venv-$1"
    local python="$PWD/$venv/bin/python"
    # --clear: a dependency dropped from pyproject.toml must not linger installed.
    quietly "$2" -m venv --clear "$venv" || return 1
    # A fresh copy of the sources: setuptools builds in the tree, and a module deleted
    # since would live on in an old build/.
    mkdir "$venv/src" "$venv/checkout" || return 1
    cp -R pyproject.toml README.md LICENSE ltoguard "$venv/src/" || return 1
    quietly pip_install "$venv" -U pip || return 1
    quietly pip_install "$venv" "./$venv/src[test]" || return 1
    # The tests and scripts without the package, so they and every Python they start
    # from there (sys.executable) import the installed one; .venv: checkout_venv.py's.
    cp -R pyproject.toml tests scripts "$venv/checkout/" || return 1
    ln -s .. "$venv/checkout/.venv" || return 1
    (
        cd "$venv/checkout"
        quietly "$python" -c "import ltoguard, sys; f = ltoguard.__file__
sys.exit(None if 'site-packages' in f else f'ltoguard was imported from {f}, not installed')" || exit 1
        # pytest's own exit status: 5 (no tests ran) fails like any other.
        "$python" -m pytest -q -p no:cacheprovider -m "not slow"
    )
}

status=0
.venv/bin/python -m pytest || status=$?
summary=()
for version in $pythons; do
    py=$(find_python "$version")
    if [ -z "$py" ]; then
        if [ "${CI:-}" = true ]; then
            # CI proves every Python that pyproject.toml admits: a missing one fails it.
            echo "scripts/test.sh: error: Python $version not found (CI runs every version)" >&2
            summary+=("$version MISSING")
            status=1
            continue
        fi
        echo "scripts/test.sh: Python $version not found; its quick subset is skipped" >&2
        summary+=("$version skipped")
        continue
    fi
    echo "scripts/test.sh: the quick subset on Python $version ($py), installed with pip install ."
    start=$SECONDS
    if quick_subset "$version" "$py"; then
        summary+=("$version passed ($((SECONDS - start)) s)")
    else
        summary+=("$version FAILED ($((SECONDS - start)) s)")
        status=1
    fi
done
line=$(printf '%s, ' "${summary[@]}")
echo "scripts/test.sh: quick subset: ${line%, }"
exit "$status"
