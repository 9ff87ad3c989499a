"""One retrain: under the retrain lock, with its log, the steps of training/steps.py in order over a
fresh RunState (training/run_state.py). The command line is bot/commands/retrain.py (`csbot retrain`,
and `python training/retrain.py`, which cron runs).
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
import traceback
from pathlib import Path

from core.errors import CsbotError
from core.settings import RetrainSettings, Settings
from training.report import conclude
from training.run_state import ERROR, EXIT_ERROR, Outcome, RunState

log = logging.getLogger("csbot.retrain")


def retrain(settings: Settings, config: RetrainSettings | None = None, *, since=None, force: bool = False,
            dry_run: bool = False, quiet: bool = False) -> Outcome:
    """One retrain under the lock; never raises (errors become Outcome(status="error")). `config`
    defaults to `settings.retrain`."""
    from training.lock import LockBusy, RetrainLock
    from training.run_state import EXIT_NOTHING, NOTHING

    config = config or settings.retrain
    home = Path(settings.home)
    home.mkdir(parents=True, exist_ok=True)
    handler = _setup_logging(home, quiet=quiet)
    lock = RetrainLock(home, database_url=settings.database_url)
    try:
        try:
            lock.acquire()
        except LockBusy as exc:
            log.info("%s", exc)
            return Outcome(NOTHING, EXIT_NOTHING, f"nothing to do: {exc}")
        try:
            return run(RunState.begin(settings, config, since=since, force=force, dry_run=dry_run))
        finally:
            lock.release()
    finally:
        if handler is not None:
            log.removeHandler(handler)
            handler.close()


def run(state: RunState) -> Outcome:
    """The steps in order until one ends the run; an error never takes the champion down."""
    from serving.versions import VersionStore
    from store import Store
    from training.steps import STEPS

    state.versions = VersionStore.from_settings(state.settings)
    try:
        _prepare(state)
        state.store = Store.from_settings(state.settings)
        for step in STEPS:
            outcome = step(state)
            if outcome is not None:
                return outcome
        raise RuntimeError("the retrain's last step gave no outcome")
    except Exception as exc:  # noqa: BLE001 - an error never takes the champion down
        log.error("retrain failed: %s\n%s", exc, traceback.format_exc())
        state.report["error"] = f"{type(exc).__name__}: {exc}"
        return conclude(state, ERROR, EXIT_ERROR, f"error: {type(exc).__name__}: {exc} (the champion keeps serving)")
    finally:
        if state.store is not None:
            state.store.close()
        if state.work is not None:
            shutil.rmtree(state.work, ignore_errors=True)


def _prepare(state: RunState) -> None:
    """What killed runs left (drafts, unscored candidates, work folders) removed, unless a dry run."""
    versions = state.versions
    work_root = Path(state.settings.home) / "work"
    if not state.dry_run:
        removed = _clean_partial_if_idle(state.settings, versions) + _remove_orphan_candidates(versions)
        if removed:
            log.info("removed %d folder(s) left by an interrupted run", removed)
        shutil.rmtree(work_root, ignore_errors=True)
    state.work = state.work_folder()


_stderr_handler: logging.Handler | None = None


def _setup_logging(home: Path, *, quiet: bool) -> logging.Handler | None:
    log.setLevel(logging.INFO)
    log.propagate = False
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    global _stderr_handler
    if _stderr_handler is None or _stderr_handler not in log.handlers:
        _stderr_handler = logging.StreamHandler(sys.stderr)  # one per process, however many runs
        log.addHandler(_stderr_handler)
    _stderr_handler.setFormatter(fmt)
    _stderr_handler.setLevel(logging.WARNING if quiet else logging.INFO)
    try:
        (home / "logs").mkdir(exist_ok=True)
        handler = logging.FileHandler(home / "logs" / f"retrain-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.log",
                                      encoding="utf-8")
    except OSError:
        return None
    handler.setFormatter(fmt)
    log.addHandler(handler)
    for name in ("transformers", "sentence_transformers"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return handler


def _clean_partial_if_idle(settings, versions) -> int:
    """Remove the drafts killed builds left, unless another writer (an ingest, forget) is building one now."""
    from training.lock import LockBusy, WriterLock

    try:
        with WriterLock(settings.home, "retrain", database_url=settings.database_url):
            return versions.clean_partial()
    except LockBusy:
        return 0


def _remove_orphan_candidates(versions) -> int:
    """Candidates a killed run committed but never scored (no gate verdict, never served)."""
    served = {r.get("champion") for r in versions.history()} | {versions.champion_name()}
    removed = 0
    for name in versions.names():
        try:
            meta = versions.describe(name).meta  # the metadata only: nothing fetched from a model store
        except CsbotError:
            continue
        if meta.get("reason") == "retrain" and "gate" not in (meta.get("metrics") or {}) and name not in served:
            removed += versions.discard(name)
    return removed
