"""Opening the engine for a command, with quiet logging and the thread limits set once."""

from __future__ import annotations

from core.runtime import limit_threads, quiet_libraries
from core.settings import Settings

__all__ = ["open_engine"]


def open_engine(settings: Settings | None = None, *, version: str | None = None):
    """The engine serving the champion of `settings.home`, or exactly `version` (raises a clear error
    when there is none)."""
    quiet_libraries()
    settings = settings or Settings.load()
    limit_threads(settings)
    from serving.engine import Engine

    return Engine(settings, version=version)
