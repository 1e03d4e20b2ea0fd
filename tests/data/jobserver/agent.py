"""A stand-in for ltoguard's waiting wrapper, run by tests/test_jobserver.py.

It finds the jobserver in its environment like ltoguard does and lends, reclaims or
counts tokens; tokens are counted with FIONREAD, which does not take them.
Usage: agent.py COMMAND ARGS... (see main()).
"""

from __future__ import annotations

import array
import fcntl
import json
import os
import signal
import sys
import termios
import time

from ltoguard.jobserver import Jobserver, Lease


def tokens(js: Jobserver) -> int:
    buf = array.array("i", [0])
    fcntl.ioctl(js.read_fd, termios.FIONREAD, buf)
    return buf[0]


def need() -> Jobserver:
    js = Jobserver.from_environ(os.environ)
    if js is None:
        sys.stderr.write("agent: no jobserver\n")
        raise SystemExit(3)
    return js


def main(argv: list[str]) -> int:
    cmd, args = argv[0], argv[1:]
    if cmd == "probe":
        # Prints "none", or "ok" after a round trip through the pipe.
        js = Jobserver.from_environ(os.environ)
        if js is None:
            print("none")
            return 0
        lease = Lease(js)
        assert lease.lend()
        assert lease.reclaim(timeout=30)
        print("ok")
        return 0
    if cmd == "rustc-wrapper":
        # RUSTC_WRAPPER for cargo: around the real compile, count, lend, count,
        # reclaim, count; then exec rustc, which inherits the jobserver fds.
        # cargo's probes (rustc -vV, --print) run without a jobserver.
        log, rustc = args[0], args[1:]
        if "--crate-name" in rustc and "-" not in rustc:
            js = need()
            c0 = tokens(js)
            lease = Lease(js)
            lent = lease.lend()
            c1 = tokens(js)
            back = lease.reclaim(timeout=60)
            c2 = tokens(js)
            record = {"form": js.description, "counts": [c0, c1, c2], "lent": lent, "back": back}
            with open(log, "a") as f:
                f.write(json.dumps(record) + "\n")
        os.execv(rustc[0], rustc)
    js = need()
    if cmd == "count":
        with open(args[0], "w") as f:
            f.write(str(tokens(js)))
        return 0
    if cmd == "lend":
        rounds, hold = int(args[0]), float(args[1])
        for _ in range(rounds):
            with Lease(js) as lease:
                if not lease.lend():
                    return 4
                time.sleep(hold)
                if not lease.reclaim(timeout=60):
                    return 5
        return 0
    if cmd == "leak":
        assert Lease(js).lend()
        os._exit(0)  # no reclaim: the pool keeps the lent byte
    if cmd == "wait":
        # Lend, say so on stdout, then wait "for a slot" until a signal arrives.
        # mode: "raise" (SIGTERM raises SystemExit; SIGINT keeps Python's
        # KeyboardInterrupt) or "flag" (handlers set a flag that the wait checks).
        mode, exit_timeout = args[0], float(args[1])
        stop = []

        def on_signal(signum: int, frame: object) -> None:
            if mode == "flag":
                stop.append(signum)
            else:
                raise SystemExit(128 + signum)

        signal.signal(signal.SIGTERM, on_signal)
        # Set either way: a shell that starts the suite in the background (`&`) hands
        # its children SIGINT ignored, and Python then installs no KeyboardInterrupt.
        signal.signal(signal.SIGINT, on_signal if mode == "flag" else signal.default_int_handler)
        with Lease(js, exit_timeout=exit_timeout) as lease:
            if not lease.lend():
                return 4
            print("lent", flush=True)
            while not stop:
                time.sleep(0.02)
        return 0 if not lease.leaked else 6
    if cmd == "measure":
        # Lend, hold, time the reclaim; write the reclaim times (s) as JSON.
        out, rounds, hold = args[0], int(args[1]), float(args[2])
        times = []
        for _ in range(rounds):
            with Lease(js) as lease:
                assert lease.lend()
                time.sleep(hold)
                t0 = time.monotonic()
                assert lease.reclaim(timeout=120)
                times.append(time.monotonic() - t0)
        with open(out, "w") as f:
            json.dump(times, f)
        return 0
    raise SystemExit(f"agent: unknown command {cmd}")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
