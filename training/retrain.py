"""The file cron and the systemd unit run, from the repository root with only CSBOT_HOME set:

    python training/retrain.py [--device auto|cpu|cuda] [--method full|lora] [--dry-run] [--since WHEN]
                               [--force] [--json] [--quiet]

It is `csbot retrain` (the same code and options): the command line, its exit codes (0 promoted or
an empty feedback table, 3 nothing new, 4 rejected, 5 the champion changed, 6 nothing learned yet,
1 error, 2 bad usage)
and what it writes are documented in bot/commands/retrain.py and docs/retrain.md. The run itself is
training/pipeline.py (steps: training/steps.py, state: training/run_state.py, report: training/report.py).

Imported as a module, this re-exports the run's entry point and outcome names for older importers.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: `python training/retrain.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from training.pipeline import retrain  # noqa: E402
from training.run_state import (DRY_RUN, ERROR, EXIT_EMPTY, EXIT_ERROR, EXIT_NOTHING, EXIT_PROMOTED,  # noqa: E402
                                EXIT_REJECTED, EXIT_SUPERSEDED, EXIT_USAGE, EXIT_WAITING, NOTHING, PROMOTED, REJECTED,
                                SUPERSEDED, WAITING, Outcome)

__all__ = ["retrain", "Outcome", "EXIT_PROMOTED", "EXIT_EMPTY", "EXIT_ERROR", "EXIT_USAGE", "EXIT_NOTHING",
           "EXIT_REJECTED", "EXIT_SUPERSEDED", "EXIT_WAITING", "PROMOTED", "REJECTED", "NOTHING", "ERROR", "DRY_RUN",
           "SUPERSEDED", "WAITING"]

if __name__ == "__main__":
    # The one import of the app from training/ (exempted in tests/test_architecture.py): the command
    # line lives in bot/, and this file is only where cron finds it.
    from bot.commands.retrain import script_main

    sys.exit(script_main())
