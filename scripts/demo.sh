#!/usr/bin/env bash
# The problem and the fix, in about two minutes: install ltoguard, generate a
# workspace whose binaries need fat LTO, then build it twice under the same hard
# memory cap (a fresh memory cgroup, as a small CI runner has): plainly, where
# two LTO compiles at once do not fit and the kernel kills one (cargo reports
# `signal: 9, SIGKILL`), and through ltoguard, which runs them as memory allows.
# Where no cap can be made (no root or cgroup delegation, no systemd-run --user),
# it says so and shows ltoguard serialising the LTO compiles under an
# LTOGUARD_MEMORY budget instead.
#
# Settings (environment):
#   LTOGUARD_DEMO_DIR      work directory (default ${TMPDIR:-/tmp}/ltoguard-demo)
#   LTOGUARD_DEMO_CAP      the memory cap (default 600M: one LTO compile of the
#                          default workspace fits beside the rest, two do not)
#   LTOGUARD_DEMO_SIZE     small | medium | large (default small)
#   LTOGUARD_DEMO_BINS / LTOGUARD_DEMO_LIBS   (default 3 / 4)
#   LTOGUARD_DEMO_WRAPPER  wrapper to build through; when set, install.sh is
#                          not run (e.g. a stand-in wrapper)
#   LTOGUARD_DEMO_JOBS     cargo -j (default 2)
#   LTOGUARD_DEMO_PLAIN_LIMIT  seconds the plain build under the cap may take
#                          (default 90): where the kernel reclaims rather than
#                          kills, it crawls at the cap for many minutes, and the
#                          demo stops it (SIGINT) and says so
#   LTOGUARD_DEMO_SWAP     swap allowed beside the cap (also: --swap SIZE); needs
#                          swap on the host and a cgroup that can account for it
set -euo pipefail

swap=${LTOGUARD_DEMO_SWAP:-}
while [ $# -gt 0 ]; do
    case $1 in
    --swap) swap=${2:?--swap needs a size, e.g. --swap 1G}; shift 2 ;;
    --swap=*) swap=${1#--swap=}; shift ;;
    *) echo "demo: error: unknown argument $1 (usage: demo.sh [--swap SIZE])" >&2; exit 2 ;;
    esac
done

checkout=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
demo=${LTOGUARD_DEMO_DIR:-${TMPDIR:-/tmp}/ltoguard-demo}
cap=${LTOGUARD_DEMO_CAP:-600M}
size=${LTOGUARD_DEMO_SIZE:-small}
bins=${LTOGUARD_DEMO_BINS:-3}
libs=${LTOGUARD_DEMO_LIBS:-4}
jobs=${LTOGUARD_DEMO_JOBS:-2}
plain_limit=${LTOGUARD_DEMO_PLAIN_LIMIT:-90}

if ! cargo --version >/dev/null 2>&1; then
    echo "demo: error: cargo does not run here ($(cargo --version 2>&1 | head -1)); install Rust first" >&2
    exit 1
fi
if [ -z "${LTOGUARD_DEMO_WRAPPER+set}" ]; then
    "$checkout/scripts/install.sh" | sed -n '1,2p'
    wrapper=${LTOGUARD_BIN_DIR:-$HOME/.local/bin}/ltoguard
else
    wrapper=$LTOGUARD_DEMO_WRAPPER
fi

echo
echo "== generating $bins bins over $libs libs (size $size, lto fat, debug info) in $demo/ws"
rm -rf "$demo"
mkdir -p "$demo"
python3 "$checkout/scripts/gen_workspace.py" "$demo/ws" \
    --bins "$bins" --libs "$libs" --size "$size" --lto fat --debug >/dev/null
cd "$demo/ws"
# Only the demo's own settings decide what runs.
unset RUSTC_WRAPPER RUSTC_WORKSPACE_WRAPPER CARGO_BUILD_RUSTC_WRAPPER CARGO_TARGET_DIR
for v in $(env | sed -n 's/^\(LTOGUARD_[A-Z_]*\)=.*/\1/p'); do
    case $v in LTOGUARD_DEMO_*) ;; *) unset "$v" ;; esac
done
# Its own state and history: the build starts cold, and the demo's workspace is not
# learned into the user's ~/.cache/ltoguard.
export CARGO_NET_OFFLINE=true LTOGUARD_DIR=$demo/state XDG_CACHE_HOME=$demo/cache

build() { # build NAME [VAR=VALUE ...]: a clean release build; prints its wall time
    local name=$1
    shift
    local start end
    start=$(date +%s.%N)
    set +e +o pipefail
    env CARGO_TARGET_DIR="$demo/target-$name" "$@" cargo build --release -j"$jobs" \
        2>&1 | tee "$demo/$name.log"
    echo "${PIPESTATUS[0]}" >"$demo/$name.rc"
    set -e -o pipefail
    end=$(date +%s.%N)
    python3 -c "print(f'{$end - $start:.1f}')" >"$demo/$name.wall"
}
status_of() { # what the log of a build says: ok, or the kills
    local log=$demo/$1.log
    if grep -q "^ *Finished" "$log"; then
        echo "finished"
    elif [ "$(cat "$demo/$1.rc")" = 124 ]; then # timeout(1): the time bound ran out
        echo "STOPPED at the time bound: still compiling under the cap, neither finished nor OOM-killed"
    elif grep -q "SIGKILL" "$log"; then
        echo "FAILED: $(grep -c 'SIGKILL' "$log") compile(s) killed (signal: 9, SIGKILL), $(sed -n 's/^memcap: \([0-9]*\) OOM kills.*/\1/p' "$log") OOM kill(s) in the cgroup"
    else
        echo "FAILED (see $log)"
    fi
}

if [ -n "$swap" ]; then
    if python3 "$checkout/scripts/memcap.py" --check-swap >/dev/null 2>"$demo/memcap-swap.err"; then
        # RAM and swap: plain cargo swaps (or thrashes) instead of being killed.
        cap="$cap+$swap"
    else
        why=$(cat "$demo/memcap-swap.err")
        echo "demo: ${why#memcap: }; showing the demo without swap"
    fi
fi
if how=$(python3 "$checkout/scripts/memcap.py" --check 2>"$demo/memcap.err"); then
    memcap=(python3 "$checkout/scripts/memcap.py" "$cap" --)
    echo
    echo "== 1/2: plain cargo build --release -j$jobs under a $cap memory cap ($how; stopped after $plain_limit s)"
    # timeout(1) signals its whole process group: memcap.py, cargo, the compiles.
    build plain timeout -s INT -k 30 "$plain_limit" "${memcap[@]}"
    echo
    echo "== 2/2: the same build through ltoguard (RUSTC_WORKSPACE_WRAPPER=$wrapper), same cap"
    build ltoguard RUSTC_WORKSPACE_WRAPPER="$wrapper" "${memcap[@]}"
    echo
    echo "== under a $cap cap:"
    echo "   plain cargo: $(status_of plain) after $(cat "$demo/plain.wall") s"
    echo "   ltoguard:    $(status_of ltoguard) in $(cat "$demo/ltoguard.wall") s"
else
    echo
    echo "== no memory cap can be made here: $(cat "$demo/memcap.err")"
    echo "   (a cap needs root with a writable memory cgroup, or systemd-run --user)."
    echo "   Showing ltoguard serialising the LTO compiles under LTOGUARD_MEMORY=$cap instead."
    build ltoguard RUSTC_WORKSPACE_WRAPPER="$wrapper" LTOGUARD_MEMORY="$cap"
    echo
    echo "== ltoguard with a $cap budget: $(status_of ltoguard) in $(cat "$demo/ltoguard.wall") s"
fi

if ! grep -q "^ *Finished" "$demo/ltoguard.log"; then
    echo "demo: error: the build through ltoguard failed; see $demo/ltoguard.log" >&2
    exit 1
fi
echo
echo "== running the binaries"
for ((i = 0; i < bins; i++)); do
    "$demo/target-ltoguard/release/$(printf 'app%02d' "$i")"
done

if "$wrapper" --version >/dev/null 2>&1; then
    echo
    echo "== what ltoguard learned (ltoguard learned)"
    "$wrapper" learned
    report=$demo/target-ltoguard/ltoguard-report.html
    "$wrapper" report --out "$report" >/dev/null && echo && echo "== report: $report"
fi
