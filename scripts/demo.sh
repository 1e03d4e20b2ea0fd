#!/usr/bin/env bash
# Install ltoguard, generate a workspace whose binaries need fat LTO, build it
# through the wrapper, run the binaries.
#
# Settings (environment):
#   LTOGUARD_DEMO_DIR      workspace (default ${TMPDIR:-/tmp}/ltoguard-demo)
#   LTOGUARD_DEMO_SIZE     small | medium | large (default small: each
#                          binary's rustc peaks at ~230 MB, build ~1 min;
#                          medium: ~750 MB and ~8 min)
#   LTOGUARD_DEMO_BINS / LTOGUARD_DEMO_LIBS   (default 4 / 6)
#   LTOGUARD_DEMO_WRAPPER  wrapper to build through; when set, install.sh is
#                          not run (e.g. a stand-in wrapper, or "" for none)
#   LTOGUARD_DEMO_JOBS     cargo -j (default 2)
set -euo pipefail

checkout=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
demo=${LTOGUARD_DEMO_DIR:-${TMPDIR:-/tmp}/ltoguard-demo}
size=${LTOGUARD_DEMO_SIZE:-small}
bins=${LTOGUARD_DEMO_BINS:-4}
libs=${LTOGUARD_DEMO_LIBS:-6}
jobs=${LTOGUARD_DEMO_JOBS:-2}

if [ -z "${LTOGUARD_DEMO_WRAPPER+set}" ]; then
    "$checkout/scripts/install.sh"
    wrapper=${LTOGUARD_BIN_DIR:-$HOME/.local/bin}/ltoguard
else
    wrapper=$LTOGUARD_DEMO_WRAPPER
fi

echo
echo "== generating $bins bins over $libs libs (size $size, lto fat) in $demo"
python3 "$checkout/scripts/gen_workspace.py" "$demo" \
    --bins "$bins" --libs "$libs" --size "$size" --lto fat

cd "$demo"
export CARGO_TARGET_DIR=$demo/target
# Only the demo's own setting decides which wrapper runs.
unset RUSTC_WRAPPER CARGO_BUILD_RUSTC_WRAPPER
echo "== RUSTC_WORKSPACE_WRAPPER=$wrapper cargo build --release -j$jobs"
start=$(date +%s)
RUSTC_WORKSPACE_WRAPPER=$wrapper cargo build --release -j"$jobs"
echo "== build took $(($(date +%s) - start)) s"

echo "== running the binaries"
for ((i = 0; i < bins; i++)); do
    "$CARGO_TARGET_DIR/release/$(printf 'app%02d' "$i")"
done

if [ -x "$wrapper" ] && "$wrapper" --version >/dev/null 2>&1; then
    echo
    echo "== what ltoguard learned (ltoguard learned)"
    "$wrapper" learned
    echo
    "$wrapper" report --out "$demo/ltoguard-report.html" || true
fi
