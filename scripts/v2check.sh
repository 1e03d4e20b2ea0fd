#!/usr/bin/env bash
# The real-cgroup tests on a cgroup v2 host, in one go (about 5 to 10 minutes):
# run as root from a fresh clone, `sudo bash scripts/v2check.sh`, and paste the
# summary it ends with. It checks the host first and stops, running nothing, where
# the memory controller is not on cgroup v2 (a v1 or hybrid host: run the suite there).
#
# Steps: host facts; the venv (scripts/test.sh --co: install, lint, mypy, collection);
# the v2 unit tests on fake trees; every real-cgroup test (-m cgroup: the OOM rerun,
# the page-cache check against the kernel, memory.high below memory.max, OOM kills
# from memory.events, the private cgroup namespace) but the cargo one; the demo's cap
# (scripts/memcap.py); then one cargo end to end build under a v2 cap.
# V2CHECK_ANY_HOST=1 runs the steps on a v1 host too, to try the script itself (the
# v2-only tests then skip, which counts as a failure). V2CHECK_NO_CARGO=1 leaves the
# cargo step out; without cargo on PATH, rustup's
# minimal toolchain is installed for it (V2CHECK_NO_RUSTUP=1: skip the step instead).
set -euo pipefail
cd "$(dirname "$0")/.."

log_dir=$(mktemp -d "${TMPDIR:-/tmp}/v2check.XXXXXX")
results=()
failed=0
say() { printf '== %s\n' "$*"; }
record() { # record NAME STATUS DETAIL
    results+=("$(printf '%-34s %-7s %s' "$1" "$2" "$3")")
    if [ "$2" = FAIL ]; then failed=1; fi
}

# --- the host ---------------------------------------------------------------------
say "host"
echo "kernel: $(uname -srm)"
echo "python: $(python3 --version 2>&1 || echo none)"
echo "own cgroup: $(tr '\n' ' ' </proc/self/cgroup)"
echo "cgroup mounts:"
awk '{ split($0, a, " - "); split(a[2], r, " "); split(a[1], l, " ");
       if (r[1] == "cgroup2" || r[1] == "cgroup") printf "  %s %s (root %s) %s\n", r[1], l[5], l[4], r[3] }' \
    /proc/self/mountinfo
v2_mount=$(awk '{ split($0, a, " - "); split(a[2], r, " "); split(a[1], l, " ");
                  if (r[1] == "cgroup2" && l[4] == "/") { print l[5]; exit } }' /proc/self/mountinfo)
why=""
if [ -z "$v2_mount" ]; then
    why="no cgroup2 hierarchy mounted"
elif ! grep -qw memory "$v2_mount/cgroup.controllers" 2>/dev/null; then
    why="the memory controller is not on cgroup v2 (cgroup.controllers at $v2_mount: '$(cat "$v2_mount/cgroup.controllers" 2>/dev/null)'); it is on cgroup v1"
elif [ "$(id -u)" != 0 ]; then
    echo "v2check: not root: the tests create cgroups (run it with sudo); nothing was run" >&2
    exit 2
fi
if [ -n "$v2_mount" ]; then
    echo "v2 root $v2_mount: controllers '$(cat "$v2_mount/cgroup.controllers" 2>/dev/null)'," \
        "subtree_control '$(cat "$v2_mount/cgroup.subtree_control" 2>/dev/null)'"
fi
if [ -f /proc/pressure/memory ]; then echo "PSI memory: $(head -1 /proc/pressure/memory)"; fi
echo "swap: $(awk '/SwapTotal/ { print $2 " kB" }' /proc/meminfo)"
if [ -n "$why" ] && [ "${V2CHECK_ANY_HOST:-}" = 1 ] && [ "$(id -u)" = 0 ]; then
    echo "v2check: not a v2 host: $why; going on (V2CHECK_ANY_HOST=1)" >&2
    v2_mount=${v2_mount:-none}
elif [ -n "$why" ]; then
    echo "v2check: not a v2 host: $why" >&2
    echo "v2check: nothing was run" >&2
    rm -rf "$log_dir"
    exit 2
fi

# --- set-up -----------------------------------------------------------------------
say "set-up: bash scripts/test.sh --co -q (venv, lint, mypy, collection)"
if ! bash scripts/test.sh --co -q >"$log_dir/setup.log" 2>&1; then
    tail -40 "$log_dir/setup.log"
    echo "v2check: set-up failed (log above); nothing else was run" >&2
    exit 1
fi
py=.venv/bin/python
# One group made and removed, as the tests will: where, and on which version.
echo "test cgroup: $($py -c 'from scripts.cgroups import MemoryCgroup
why = MemoryCgroup.unavailable()
if why:
    print("none:", why)
else:
    with MemoryCgroup(64 << 20) as cg:
        print("cgroup v%d %s" % (cg.version, cg.path))')"

# pytest_step NAME ARGS...: runs pytest, records its last line (passed/failed/skipped).
pytest_step() {
    local name=$1 start=$SECONDS status=ok line
    shift
    say "$name: pytest $*"
    if ! "$py" -m pytest -rs -v "$@" 2>&1 | tee "$log_dir/$name.log"; then status=FAIL; fi
    line=$(grep -E '^=+ .*(passed|failed|skipped|error|no tests ran).* =+$' "$log_dir/$name.log" |
        tail -1 | tr -d '=' | sed 's/^ *//; s/ *$//')
    if grep -q '^SKIPPED' "$log_dir/$name.log"; then
        line="$line; skipped: $(grep '^SKIPPED' "$log_dir/$name.log" | sed 's/^SKIPPED \[[0-9]*\] //' | tr '\n' ' ')"
        # Every real test must run on a v2 host: a skip here is a failure of the check.
        if [ "$name" != unit ]; then status=FAIL; fi
    fi
    record "$name" "$status" "${line:-no pytest summary} ($((SECONDS - start)) s)"
}

# --- the tests --------------------------------------------------------------------
pytest_step unit -m "not cgroup" tests/test_memory.py -k "v2 or namespace or oom_kills or oom_counters"
pytest_step real-cgroup -m cgroup tests/test_memory.py tests/test_oom.py

say "demo cap: scripts/memcap.py"
start=$SECONDS
check=$(python3 scripts/memcap.py --check 2>&1) || true
echo "$check"
out=$(python3 scripts/memcap.py 100M -- python3 -c 'b = bytearray(300 << 20)' 2>&1) && rc=0 || rc=$?
echo "$out (exit $rc)"
if [[ $check == "cgroup v2 "* ]] && [ "$rc" = 137 ] && [[ $out == *"memcap: 1 OOM kills under a 100 MiB cap"* ]]; then
    record memcap ok "$check; a 300 MiB allocation under 100M: killed, 1 OOM kill counted ($((SECONDS - start)) s)"
else
    record memcap FAIL "$check; exit $rc: $out"
fi

if [ "${V2CHECK_NO_CARGO:-}" = 1 ]; then
    record e2e-cargo skipped "V2CHECK_NO_CARGO=1"
else
    if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
    if ! command -v cargo >/dev/null 2>&1 && [ "${V2CHECK_NO_RUSTUP:-}" != 1 ]; then
        say "installing rustup's minimal stable toolchain (cargo is not on PATH)"
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
            sh -s -- -y --profile minimal >"$log_dir/rustup.log" 2>&1 || tail -20 "$log_dir/rustup.log"
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
    if command -v cargo >/dev/null 2>&1; then
        echo "cargo: $(cargo --version), rustc: $(rustc --version)"
        pytest_step e2e-cargo -m cgroup tests/test_e2e_cgroup.py
    else
        record e2e-cargo FAIL "no cargo on PATH (and rustup not installed)"
    fi
fi

# --- summary ----------------------------------------------------------------------
say "v2check summary (paste this)"
echo "host: $(uname -sr), $(nproc) cores, $(python3 --version 2>&1), cgroup2 at $v2_mount"
echo "controllers: $(cat "$v2_mount/cgroup.controllers" 2>/dev/null || echo none)"
for r in "${results[@]}"; do echo "$r"; done
echo "logs: $log_dir"
if [ "$failed" = 1 ]; then
    echo "v2check: FAILED"
    exit 1
fi
echo "v2check: all passed"
