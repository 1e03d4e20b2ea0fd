"""The subcommands' shared layer: error lines, tables, value formatting."""

from __future__ import annotations

import pytest

from ltoguard.commands.common import (
    EXIT_CONFIG,
    EXIT_FAILED,
    error,
    fmt_age,
    fmt_estimate,
    table,
)

MiB = 1 << 20


def test_error_is_one_prefixed_line_and_gives_the_exit_code(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert error("LTOGUARD_SLOTS='x' is not valid") == EXIT_CONFIG == 2
    assert error("nothing to report", EXIT_FAILED) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "ltoguard: error: LTOGUARD_SLOTS='x' is not valid\nltoguard: error: nothing to report\n"
    )


def test_text_tables_show_record_text_as_one_safe_line() -> None:
    lines = table(["CRATE"], [["evil\n\x1b[31mltoguard: error: fake"]])
    assert len(lines) == 2 and "\x1b" not in lines[1] and "\n" not in lines[1]


def test_table_columns_align_and_trailing_space_is_dropped() -> None:
    assert table(["A", "BB"], [["xxx", "y"], ["", ""]]) == ["  A    BB", "  xxx  y", "  "]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "?"),
        (4.0, "4.0s"),
        (9.94, "9.9s"),
        (10.0, "10s"),
        (59.4, "59s"),
        (60.0, "1m00s"),
        (3599.0, "59m59s"),
        (3600.0, "1h00m"),
        (7260.0, "2h01m"),
    ],
)
def test_fmt_age(seconds: float | None, text: str) -> None:
    assert fmt_age(seconds) == text


@pytest.mark.parametrize(
    ("n", "basis", "text"),
    [
        (None, "history", "?"),
        (700 * MiB, "history", "~700 MiB (history)"),
        (700 * MiB, None, "~700 MiB"),
    ],
)
def test_fmt_estimate(n: int | None, basis: str | None, text: str) -> None:
    assert fmt_estimate(n, basis) == text
