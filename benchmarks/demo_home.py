"""The CSBOT_HOME a Slack benchmark runs against: the one given with --home, else a fresh one built
from the demo KB (not timed), in the benchmark's temporary folder."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def bench_home(given: str | None, tmp: str | Path, **settings) -> Path:
    """`given` as a Path, or a new home under `tmp` with a champion ingested from demo/kb
    (`settings`: overrides such as finetune_epochs=0)."""
    if given:
        return Path(given)
    from core.settings import Settings
    from training.ingest import ingest

    home = Path(tmp) / "home"
    print("ingesting the demo KB (not timed)...", file=sys.stderr)
    ingest([REPO / "demo" / "kb"], Settings.load(env={}, home=home, **settings))
    return home
