"""What the served model knows: its articles and intents (read from the champion version, with no
model loaded), and who the CLI user is."""

from __future__ import annotations

import difflib
import getpass
import os

from core.errors import UserError


def served_documents(settings) -> tuple[str, list]:
    """(champion name, its Documents); a clear error when there is no model yet."""
    from serving.versions import VersionStore

    champion = VersionStore.from_settings(settings).champion()
    return champion.name, champion.documents()


def suggest(value: str, known: list[str], what: str, *, command: str) -> str:
    """`unknown intent 'x'; did you mean: a, b? (N known: see `csbot intents`)`"""
    close = difflib.get_close_matches(value, known, n=3, cutoff=0.5)
    close += [k for k in known if value.lower() in k.lower() and k not in close][: 3 - len(close)]
    hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(sorted(known)[:8])}" + (
        ", ..." if len(known) > 8 else "")
    return f"unknown {what} {value!r}; {hint} ({len(known)} known; `{command}` lists them)"


def cli_user(explicit: str | None) -> str:
    """The CLI's user identity: `--user` when given, else the operating-system user. The store keeps
    only its salted hash, as for Slack ids, so `csbot forget --user NAME` finds the rows."""
    if explicit is not None:
        if not explicit.strip():
            raise UserError("--user is blank")
        return explicit.strip()
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name (e.g. a container without passwd entry)
        return f"uid-{os.getuid()}"


def blank_check(text: str | None, what: str = "the question") -> str:
    if text is None or not text.strip():
        raise UserError(f"{what} is blank")
    return text.strip()
