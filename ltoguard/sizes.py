"""Memory sizes as users write them (``12G``, ``-3G``) and as ltoguard prints them.

No heavy imports: settings validation and the subcommands use it without pulling in
psutil.
"""

from __future__ import annotations

import re

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB

SIZE_EXAMPLES = (
    "accepted: 12G, 1500M, 512MiB, 2.5GB or plain bytes (1073741824), optionally"
    " negative for 'all but' (-3G); units are binary: K/M/G/T = KiB/MiB/GiB/TiB"
)

_UNITS = {"": 1, "b": 1}
for _i, _letter in enumerate("kmgt", start=1):
    for _suffix in ("", "b", "ib"):
        _UNITS[_letter + _suffix] = 1024**_i

_SIZE_RE = re.compile(r"\s*([+-]?)\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*")


def parse_size(text: str) -> int:
    """Parse a size such as ``12G``, ``1500M``, ``512MiB``, ``2.5GB`` or ``1073741824``.

    Every unit is binary (``GB`` means GiB too): the setting is compared with
    cgroup limits and RAM sizes, which are binary, and docker reads ``-m 2g`` the
    same way. A leading ``-`` returns a negative number (``-3G``: "all but 3 GiB").
    Fractions of a byte are dropped. Zero is refused: a zero budget admits nothing.
    """
    m = _SIZE_RE.fullmatch(text)
    if m is None:
        raise ValueError(f"invalid size {text!r}: {SIZE_EXAMPLES}")
    sign, number, unit = m.groups()
    multiplier = _UNITS.get(unit.lower())
    if multiplier is None:
        raise ValueError(f"invalid size {text!r}: unknown unit {unit!r}; {SIZE_EXAMPLES}")
    if "." in number:
        # Exact for "2.5G" (no float rounding); decimal costs every guarded job an
        # import otherwise, and whole numbers need none.
        from decimal import Decimal

        value = int(Decimal(number) * multiplier)
    else:
        value = int(number) * multiplier
    if value == 0:
        raise ValueError(f"invalid size {text!r}: must not be zero; {SIZE_EXAMPLES}")
    return -value if sign == "-" else value


def format_size(n: int) -> str:
    """Human size with binary units: ``1.5 GiB``, ``700 MiB``, ``512 B``."""
    sign = "-" if n < 0 else ""
    n = abs(n)
    for name, unit in (("TiB", TiB), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= unit:
            value = n / unit
            text = f"{value:.0f}" if value >= 100 else f"{value:.1f}".rstrip("0").rstrip(".")
            return f"{sign}{text} {name}"
    return f"{sign}{n} B"
