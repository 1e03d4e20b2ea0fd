"""Settings checked once per cargo build, by the first rustc call that can see them.

For a call whose environment sets an ``LTOGUARD_*`` variable or whose settings
files mention ltoguard, cli.py asks configfiles.first_call_of_build (one ``O_EXCL``
open of a mark named for cargo's pid and start time); only the first such call of
a cargo process comes here, loads the settings and says what is wrong with them,
on cargo's own stderr (messages.note). A bad setting is said there, where the
build starts, rather than once the libraries are done and once per LTO job; the
call itself goes on unchanged (a dependency's compile does not use the setting).

That first call may be cargo's ``rustc -vV`` probe: cargo stores the probe's
output and exit status in ``.rustc_info.json`` and replays them on later builds
until rustc or a wrapper changes, so nothing here may touch the probe's own
output or status."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping


def _past_cargo() -> bool:
    # A line cargo stored would be replayed on later builds, no longer true.
    from ltoguard.messages import channel

    return not channel().replayed


def said_early() -> bool:
    """Did the first call of this build say the settings' problems (so a guarded job
    need not say them again)? Only under cargo, where a line can go past cargo's
    message cache, and where that call could leave its mark."""
    import os

    from ltoguard.configfiles import MARK, cargo_build, mark_dir

    build = cargo_build()
    if not build or not _past_cargo():
        return False
    return os.path.exists(os.path.join(mark_dir(os.environ), MARK + build))


def say_problems(env: Mapping[str, str]) -> None:
    """For the first call of a cargo build: what is wrong with the settings."""
    if not _past_cargo():
        return  # a guarded job says it, as it always did
    from ltoguard.config import SettingsError, load
    from ltoguard.messages import note

    try:
        settings = load(env, warn=False)
    except SettingsError as exc:
        note(f"error: {exc}; this build's guarded (LTO) jobs will fail on it")
        return
    except Exception:  # a setting we cannot read must not fail a dependency's compile
        return
    for warning in settings.warnings:
        note(f"warning: {warning}")
