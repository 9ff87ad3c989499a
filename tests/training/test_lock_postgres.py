"""The writer and retrain locks as PostgreSQL advisory locks (database_url set): held across processes
and hosts, reported with their holder, and released by the server when the holder is killed."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from core.settings import Settings
from training.lock import LockBusy, RetrainLock, WriterLock, hold_writer
from tests.pg import new_database

HOLDER = r"""
import sys, time
from training.lock import WriterLock
lock = WriterLock(sys.argv[1], "ingest", database_url=sys.argv[2]).acquire()
print("HELD", flush=True)
time.sleep(600)
"""


@pytest.fixture
def url():
    url, drop = new_database()
    yield url
    drop()


def test_the_writer_lock_is_one_advisory_lock_per_database(tmp_path, url):
    first = WriterLock(tmp_path / "a", "ingest", database_url=url).acquire()
    try:
        # Another home (another host) on the same database: the same lock.
        with pytest.raises(LockBusy) as info:
            WriterLock(tmp_path / "b", "forget", database_url=url).acquire()
        assert "another ingest" in str(info.value) and "advisory lock models.lock" in str(info.value)
        assert info.value.holder["what"] == "ingest"
        with RetrainLock(tmp_path / "b", database_url=url):  # a different lock
            pass
        assert not (tmp_path / "a" / "models.lock").exists()  # no file lock is taken
    finally:
        first.release()
    with WriterLock(tmp_path / "b", "forget", database_url=url):
        pass


def test_hold_writer_waits_then_gives_up_with_one_line(tmp_path, url):
    settings = Settings.load(env={}, home=tmp_path / "home", database_url=url, writer_wait_seconds=0.5)
    told = []
    with WriterLock(tmp_path / "other", "retrain", database_url=url):
        with pytest.raises(LockBusy) as info:
            hold_writer(settings, "models promote", on_wait=told.append)
    assert "still holds" in str(info.value) and "0.5s" in str(info.value)
    assert told and told[0]["what"] == "retrain"
    with hold_writer(settings, "models promote"):
        pass


@pytest.mark.slow
def test_a_killed_holder_frees_the_lock(tmp_path, url):
    import os

    from tests.conftest import REPO

    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "h"), url], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "HELD", proc.stderr.read()
        with pytest.raises(LockBusy) as info:
            WriterLock(tmp_path, "forget", database_url=url).acquire()
        assert info.value.holder["pid"] == proc.pid
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        proc.stdout.close(), proc.stderr.close()
    lock = WriterLock(tmp_path, "forget", database_url=url).acquire(wait=True, timeout=10)
    lock.release()
