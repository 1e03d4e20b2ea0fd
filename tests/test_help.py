"""`ltoguard --help` and `ltoguard help settings`: an installed
user has no README, so every setting and its default is there."""

from __future__ import annotations

import pytest

from ltoguard import cli
from ltoguard.configvalues import ENV_VARS, KEYS


def test_help_lists_every_setting_with_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    rows = {
        line.split()[0]: line.split()[1]
        for line in out.splitlines()
        if line.startswith("    LTOGUARD_")
    }
    assert list(rows) == [ENV_VARS[k] for k in KEYS]
    assert rows["LTOGUARD_MEMORY"] == "auto" and rows["LTOGUARD_MODE"] == "lto"
    assert rows["LTOGUARD_LEND"] == "true"
    assert "see the README" not in out
    assert 'rustc-workspace-wrapper = "ltoguard"' not in out  # no bare name to copy
    assert "ltoguard doctor" in out and "ltoguard init" in out


def test_help_settings_has_the_full_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["help", "settings"]) == 0
    out = capsys.readouterr().out
    for key in KEYS:
        assert f"{key}  (environment {ENV_VARS[key]}; default " in out
    assert "accepted: auto or a whole number from 1 to 1024" in out
    assert "[workspace.metadata.ltoguard.crates.NAME]" in out


def test_help_on_something_unknown(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["help", "bogus"]) == 2
    assert capsys.readouterr().err.startswith("ltoguard: error: no help on 'bogus'")


def test_help_settings_says_unknown_keys_warn(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["help", "settings"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "a key this ltoguard does not know is a warning naming the file and the key" in out
