"""Shared fixtures for the conversation-store tests: a real SQLite file in tmp_path each time, and the
same tests again against a real PostgreSQL database.

The store's behaviour is specified once: every test that uses `store` or `make_store` runs on both
backends (the `backend` parameter, "sqlite" and "postgresql"), unless it is marked `sqlite_only` (the
file checks, the WAL). The PostgreSQL database is created for the test session on the server of
CSBOT_TEST_DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/postgres) as csbot_test_<random>,
brought to the schema by `csbot db upgrade`'s code, emptied before each test and dropped at the end.
Without a reachable server those runs are skipped with the reason; with CI set they fail instead.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import itertools
import os
import sys
from pathlib import Path

import pytest

from core.answer import Answer, Source
from core.errors import CsbotError
from store import Store
from tests.pg import BACKENDS, fresh_postgres_store_target

REPO_ROOT = Path(__file__).resolve().parents[2]
_ids = itertools.count(1)


def make_answer(answer_id: str | None = None, question: str = "How do I reset my password?", **overrides) -> Answer:
    fields = dict(
        answer_id=answer_id or f"ans-{next(_ids)}",
        question=question,
        text="Open Settings > Security and choose Reset password.",
        intent="password_reset",
        confidence=0.91,
        sentiment="neutral",
        sentiment_scores={"negative": 0.1, "neutral": 0.7, "positive": 0.2},
        sources=[Source("kb-12", "Resetting your password", "https://help.example.com/kb-12", 0.83)],
        handoff=False,
        model_version="intent-v3",
        doc_id="kb-12",
    )
    fields.update(overrides)
    return Answer(**fields)


@pytest.fixture
def answer_factory():
    return make_answer


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "home" / "csbot.sqlite3"


def pytest_generate_tests(metafunc):
    if "backend" in metafunc.fixturenames:
        sqlite_only = metafunc.definition.get_closest_marker("sqlite_only") is not None
        metafunc.parametrize("backend", ["sqlite"] if sqlite_only else list(BACKENDS))


@pytest.fixture
def store_target(backend: str, db_path: Path, request):
    """Where a test's store lives: the SQLite file, or the session's PostgreSQL database, emptied."""
    if backend == "sqlite":
        return db_path
    return fresh_postgres_store_target(request)


@pytest.fixture
def make_store(store_target):
    """Open the test's store (as many times as a test needs: a reopen is a restart) with Store's
    keyword arguments; every store opened is closed at the end."""
    opened: list[Store] = []

    def make(**kwargs) -> Store:
        kwargs.setdefault("salt", "test-salt")
        s = Store(store_target, **kwargs)
        opened.append(s)
        return s

    yield make
    for s in opened:
        s.close()


@pytest.fixture
def store(make_store):
    return make_store()


@pytest.fixture
def clock(monkeypatch):
    """Freeze the store's clock: clock.set(datetime) / clock.advance(timedelta)."""

    class Clock:
        def __init__(self):
            self.now = dt.datetime(2025, 3, 10, 12, 0, 0, tzinfo=dt.timezone.utc)

        def set(self, when: dt.datetime) -> None:
            self.now = when

        def advance(self, delta: dt.timedelta) -> None:
            self.now += delta

        def __call__(self) -> dt.datetime:
            # Every call moves on a microsecond so times stay strictly increasing.
            self.now += dt.timedelta(microseconds=1)
            return self.now

    c = Clock()
    monkeypatch.setattr("core.clock.utcnow", c)
    return c


@pytest.fixture
def csbot_home(tmp_path: Path, monkeypatch) -> Path:
    """An isolated CSBOT_HOME for CLI tests (no csbot.toml found anywhere)."""
    home = tmp_path / "csbot-home"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CSBOT_HOME", str(home))
    monkeypatch.delenv("CSBOT_CONFIG", raising=False)
    return home


@pytest.fixture
def cli(csbot_home):
    """Run one of the store's CLI commands the way bot.cli.main does; returns the exit code."""
    from bot.commands import export, feedback, privacy

    def run(*argv: str) -> int:
        parser = argparse.ArgumentParser(prog="csbot")
        sub = parser.add_subparsers(dest="command", required=True)
        for module in (feedback, privacy, export):
            module.register(sub)
        args = parser.parse_args(list(argv))
        try:
            return int(args.func(args) or 0)
        except CsbotError as exc:
            print(f"csbot {args.command}: error: {exc}", file=sys.stderr)
            return 2

    return run


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def digest():
    return file_digest


def pytest_configure(config):
    # The lead registers this in pyproject.toml too; registering twice is harmless.
    config.addinivalue_line("markers", "slow: takes more than ~2 s (real subprocesses, SIGKILL, concurrency)")
    config.addinivalue_line("markers", "sqlite_only: the test is about the SQLite file (checks, WAL): not run on PostgreSQL")
