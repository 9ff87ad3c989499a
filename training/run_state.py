"""The retrain's outcomes and its run state: everything one run reads, decides and carries from step
to step (training/steps.py), declared up front.

Each step reads the fields earlier steps filled and fills its own; a field a step has not reached yet
holds its declared empty value (None, an empty list or dict).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

# The gate's verdicts; runs with them use up their feedback (the store owns that and the watermark).
from store.runs import PROMOTED, REJECTED

if TYPE_CHECKING:
    from core.settings import RetrainSettings, Settings
    from retrieval.kb import Document
    from serving.versions import ModelVersion, TrainingExample, VersionStore
    from store import Store
    from training.build import BuildResult
    from training.compose_data import ComposerData
    from training.compose_train import ComposerOutcome
    from training.feedback_data import FeedbackData, NewFeedback
    from training.gate import Decision, HeldoutSet

__all__ = ["EXIT_PROMOTED", "EXIT_EMPTY", "EXIT_ERROR", "EXIT_USAGE", "EXIT_NOTHING", "EXIT_REJECTED",
           "EXIT_SUPERSEDED", "EXIT_WAITING", "PROMOTED", "REJECTED", "NOTHING", "ERROR", "DRY_RUN", "SUPERSEDED",
           "WAITING", "Outcome",
           "RunState", "now_iso"]

EXIT_PROMOTED = 0
EXIT_EMPTY = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOTHING = 3
EXIT_REJECTED = 4
EXIT_SUPERSEDED = 5
# Feedback came but nothing could be learned from it yet (too few new items, or too little held-out
# data to judge a candidate): not a quiet night, so schedulers show it (deploy/: not a success status).
EXIT_WAITING = 6

NOTHING, ERROR, DRY_RUN = "nothing-to-do", "error", "dry-run"
SUPERSEDED = "champion-changed"  # not in CONSUMING_STATUSES: the next run reads the same feedback
WAITING = "not-learned"  # not consuming either: the feedback waits until there is enough of it


@dataclass
class Outcome:
    status: str
    exit_code: int
    message: str
    report: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"status": self.status, "exit_code": self.exit_code, "message": self.message, **self.report}


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(slots=True)  # slots: a step cannot set a field that is not declared here
class RunState:
    """One retrain, step by step. `report` is what the run reports (JSON, Markdown, the training-runs
    row, `--json`); the other fields are what the steps hand each other."""

    # What was asked.
    settings: Settings
    config: RetrainSettings
    since: Any = None  # --since; None: the store's watermark
    force: bool = False
    dry_run: bool = False

    # Bookkeeping.
    started_at: str = field(default_factory=now_iso)
    t0: float = field(default_factory=time.perf_counter)
    timings: dict[str, float] = field(default_factory=dict)
    report: dict = field(default_factory=dict)
    work: Path | None = None  # this run's scratch folder under CSBOT_HOME/work
    store: Store | None = None
    versions: VersionStore | None = None

    # data: the champion and what is new since the watermark.
    data_started: float = 0.0  # the "datasets" timing runs from here
    champion: ModelVersion | None = None
    documents: list[Document] = field(default_factory=list)
    new: NewFeedback | None = None
    admins: set[str] = field(default_factory=set)  # hashes of slack_admin_users

    # held-out: the one frozen set every model is judged on and never trained on.
    heldout: HeldoutSet | None = None
    exclude: set[str] = field(default_factory=set)  # normalised held-out texts
    data: FeedbackData | None = None  # the new votes resolved, without held-out texts
    heldout_added: dict[str, int] = field(default_factory=dict)  # rows this run froze, by source
    heldout_from_kb: int = 0  # KB section headings the gate scored because feedback held out too few
    sentiment_heldout: list[tuple[str, str]] = field(default_factory=list)  # (text, label) frozen rows

    # datasets
    train_docs: list[Document] = field(default_factory=list)  # the KB without held-out questions
    replay: list[TrainingExample] = field(default_factory=list)  # the champion's examples
    examples: list[TrainingExample] = field(default_factory=list)  # replay + new, held-out texts left out
    eval_rows: list[dict] = field(default_factory=list)
    counts: dict = field(default_factory=dict)
    composer_data: ComposerData | None = None

    # training
    encoder_dir: Path | None = None
    build_settings: Settings | None = None  # the champion's sentiment, or the updated one

    # builds and the gate
    gate_settings: Settings | None = None
    gated: BuildResult | None = None  # the candidate without held-out questions (temporary)
    reference_settings: Settings | None = None
    reference_name: str | None = None  # the champion rebuilt without held-out texts (temporary)
    runtime_verdict: dict | None = None
    decision: Decision | None = None
    composer: ComposerOutcome | None = None
    version_meta: dict = field(default_factory=dict)

    @classmethod
    def begin(cls, settings: Settings, config: RetrainSettings, *, since: Any = None, force: bool = False,
              dry_run: bool = False) -> "RunState":
        state = cls(settings, config, since=since, force=force, dry_run=dry_run)
        state.report.update({"started_at": state.started_at, "dry_run": dry_run, "config": config.to_dict()})
        return state

    @property
    def rows(self) -> list[dict]:
        """The new votes this run reads."""
        return self.new.votes if self.new is not None else []

    def work_folder(self) -> Path:
        return Path(self.settings.home) / "work" / f"retrain-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{os.getpid()}"

    def timed(self, name: str, started: float) -> None:
        self.timings[name] = round(time.perf_counter() - started, 2)
