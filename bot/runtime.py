"""Opening the engine for a command, with quiet logging and the thread limits set once."""

from __future__ import annotations

import logging
import os

from bot.config import Settings


def quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for name in ("sentence_transformers", "transformers", "httpx", "faiss"):
        logging.getLogger(name).setLevel(logging.WARNING)


def open_engine(settings: Settings | None = None):
    """The engine serving the champion of `settings.home` (raises a clear error when there is none)."""
    quiet_libraries()
    from bot.engine import Engine

    return Engine(settings or Settings.load())
