"""LTOGUARD_MEMORY is parsed once, when the settings are read; every memory reading
of a guarded job takes the parsed value."""

from __future__ import annotations

from pathlib import Path

import pytest

from ltoguard import config
from ltoguard.configvalues import MemorySetting, parse_memory_setting
from ltoguard.memory import HostMemory, available_memory
from ltoguard.sizes import GiB

HOST = HostMemory(available=20 * GiB, total=24 * GiB)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, None),
        ("", None),
        ("auto", None),
        (" AUTO ", None),
        ("12G", MemorySetting("12G", 12 * GiB)),
        ("-3G", MemorySetting("-3G", -3 * GiB)),
        ("1073741824", MemorySetting("1073741824", GiB)),
    ],
)
def test_parse(text: str | None, expected: MemorySetting | None) -> None:
    assert parse_memory_setting(text) == expected


@pytest.mark.parametrize("text", ["lots", "12X", "0"])
def test_a_bad_setting_names_the_variable(text: str) -> None:
    with pytest.raises(
        ValueError, match=rf"^LTOGUARD_MEMORY='{text}': invalid size .*accepted: 12G"
    ):
        parse_memory_setting(text)


@pytest.mark.parametrize("text", [None, "auto", "-3G", "8G", "30G"])
def test_parsed_or_text_reads_the_same(tmp_path: Path, text: str | None) -> None:
    parsed = parse_memory_setting(text)
    for usage in (0, 3 * GiB):
        by_text = available_memory(text, guarded_usage=usage, root=str(tmp_path), host=HOST)
        by_value = available_memory(parsed, guarded_usage=usage, root=str(tmp_path), host=HOST)
        assert by_text == by_value


def test_settings_carry_the_parsed_value(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    s = config.load(dict(env, LTOGUARD_MEMORY=" -3G "), str(tmp_path))
    assert (s.memory, s.memory_parsed) == ("-3G", MemorySetting("-3G", -3 * GiB))
    assert config.load(env, str(tmp_path)).memory_parsed is None
    # A bad value never gets this far: the settings refuse it with their own message.
    with pytest.raises(config.SettingsError, match="LTOGUARD_MEMORY='lots' is not valid"):
        config.load(dict(env, LTOGUARD_MEMORY="lots"), str(tmp_path))
