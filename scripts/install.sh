#!/usr/bin/env bash
# Install ltoguard from this checkout at a stable path.
#
#   scripts/install.sh            # venv in ${LTOGUARD_HOME:-~/.local/share/ltoguard}/venv
#
# Needs python3 (with venv/ensurepip) and access to PyPI. Safe to re-run: the
# venv is reused, the checkout is reinstalled, the symlink is replaced.
# Settings: LTOGUARD_HOME (venv parent), LTOGUARD_BIN_DIR (default
# ~/.local/bin), PYTHON (interpreter for the venv, default python3).
set -euo pipefail

checkout=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
home=${LTOGUARD_HOME:-$HOME/.local/share/ltoguard}
bindir=${LTOGUARD_BIN_DIR:-$HOME/.local/bin}
python=${PYTHON:-python3}
venv=$home/venv

if [ ! -f "$checkout/pyproject.toml" ]; then
    echo "install.sh: error: no pyproject.toml in $checkout" >&2
    exit 1
fi
if ! command -v "$python" >/dev/null 2>&1; then
    echo "install.sh: error: $python not found; set PYTHON=/path/to/python3" >&2
    exit 1
fi

if [ ! -x "$venv/bin/python" ]; then
    mkdir -p "$home"
    if ! "$python" -m venv "$venv"; then
        echo "install.sh: error: '$python -m venv' failed (Debian/Ubuntu: apt-get install python3-venv)" >&2
        rm -rf "$venv"
        exit 1
    fi
fi

pip=("$venv/bin/python" -m pip --disable-pip-version-check --no-input --quiet)
# pip >= 24 writes console scripts that do not `import re`: older templates
# add ~15 ms to every rustc call cargo makes through the wrapper.
"${pip[@]}" install --upgrade "pip>=24"
# Build from a staged copy: an in-tree build leaves build/lib behind, and
# setuptools would ship modules since deleted from the checkout on the next
# install. A local directory is always rebuilt and reinstalled, so re-running
# picks up changes even when the version number did not move.
stage=$(mktemp -d "${TMPDIR:-/tmp}/ltoguard-install.XXXXXX")
trap 'rm -rf "$stage"' EXIT
cp "$checkout/pyproject.toml" "$stage/"
for f in README.md LICENSE; do
    if [ -f "$checkout/$f" ]; then cp "$checkout/$f" "$stage/"; fi
done
# The package with its sub-packages (ltoguard/commands), without bytecode caches.
cp -R "$checkout/ltoguard" "$stage/ltoguard"
find "$stage/ltoguard" -name __pycache__ -type d -prune -exec rm -rf {} +
"${pip[@]}" install --upgrade "$stage"

script=$venv/bin/ltoguard
if [ ! -x "$script" ]; then
    echo "install.sh: error: pip did not create $script" >&2
    exit 1
fi
# The wrapper cargo runs for every crate: the same code as the console script,
# started with `python -IS` (no site scan): see ltoguard/launcher.py.
# -I: neither this folder (the checkout's own ltoguard/) nor PYTHONPATH on the path.
"$venv/bin/python" -I -m ltoguard.launcher "$venv/bin/ltoguard-fast"
mkdir -p "$bindir"
# The wrapper's path is hashed into cargo's -C metadata: keep it the same
# across reinstalls (a symlink at a fixed place), or every crate rebuilds.
ln -sfn "$venv/bin/ltoguard-fast" "$bindir/ltoguard"
ln -sfn "$venv/bin/ltoguard-link" "$bindir/ltoguard-link"

echo "installed ltoguard $("$venv/bin/python" -I -c 'import ltoguard; print(ltoguard.__version__)') into $venv"
echo "wrapper: $bindir/ltoguard -> $venv/bin/ltoguard-fast (console script: $script)"
case ":$PATH:" in
    *":$bindir:"*) ;;
    *) echo "note: $bindir is not on PATH (cargo does not need it to be)" ;;
esac
echo
echo "next, in each workspace to guard:"
echo
echo "    $bindir/ltoguard init     # registers this path in .cargo/config.toml"
echo "    $bindir/ltoguard doctor   # checks the set-up"
echo
echo "or, for every workspace, in your shell profile:"
echo
echo "    export RUSTC_WORKSPACE_WRAPPER=\"$bindir/ltoguard\""
