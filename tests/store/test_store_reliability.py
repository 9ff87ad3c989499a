"""Acknowledged votes survive SIGKILL; readers and writers never see 'database is locked'. Both run on
SQLite and on PostgreSQL (`store_target`: the file or the database URL)."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from store import Store

N_ANSWERS = 20

# Writes votes as fast as it can, printing "ACK <i>" only after record_vote returned (committed).
VOTE_WRITER = r"""
import sys
from store import Store
path, start, count, salt = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
store = Store(path, salt=salt, daily_vote_cap=0)
print("READY", flush=True)
for i in range(start, start + count):
    result = store.record_vote(f"a{i % 20}", "down" if i % 3 == 0 else "up", user=f"U{i}",
                               origin="button", event_id=f"E{i}", intent="billing" if i % 5 == 0 else None)
    assert result.stored, result
    sys.stdout.write(f"ACK {i} {result.feedback_id}\n")
    sys.stdout.flush()
print("DONE", flush=True)
"""

# Reads everything since the last run (and more) in a loop until told to stop; any error exits 1.
READER = r"""
import os, sys, time
from store import Store
path, stop_file, salt = sys.argv[1], sys.argv[2], sys.argv[3]
reads = most = 0
deadline = time.monotonic() + 30
store = Store(path, salt=salt)
print("READY", flush=True)
while not os.path.exists(stop_file) and time.monotonic() < deadline:
    rows = store.feedback_since()
    assert rows == sorted(rows, key=lambda r: (r["time"], r["feedback_id"]))
    most = max(most, len(rows))
    store.feedback_since_last_run()
    store.counts()
    if reads % 10 == 0:
        sum(1 for _ in store.export(kinds=["feedback"]))
        store.close()
        store = Store(path, salt=salt)  # opening while the writer writes must work too
    reads += 1
print(f"READS {reads} {most}", flush=True)
"""


def _prepare(db_path, answer_factory, salt="rel-salt"):
    with Store(db_path, salt=salt) as s:
        for i in range(N_ANSWERS):
            s.record_answer(answer_factory(f"a{i}"))


def _spawn(script, args, env):
    return subprocess.Popen(
        [sys.executable, "-c", script, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _wait_ready(proc):
    line = proc.stdout.readline()
    assert line.strip() == "READY", line + proc.stderr.read()


@pytest.mark.slow
def test_sigkill_mid_burst_loses_no_acknowledged_vote(store_target, backend, answer_factory, subprocess_env):
    db_path = store_target
    _prepare(db_path, answer_factory)
    acked: set[int] = set()
    start = 0
    for kill_after in (37, 260, 610):
        proc = _spawn(VOTE_WRITER, [db_path, start, 5000, "rel-salt"], subprocess_env)
        _wait_ready(proc)
        round_acks: list[int] = []
        while len(round_acks) < kill_after:
            line = proc.stdout.readline()
            assert line.startswith("ACK"), line + proc.stderr.read()
            round_acks.append(int(line.split()[1]))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL  # really killed mid-burst
        # Acknowledgements still in the pipe count too; a final partial line does not.
        complete_lines = proc.stdout.read().split("\n")[:-1]
        round_acks += [int(ln.split()[1]) for ln in complete_lines if ln.startswith("ACK ")]
        assert round_acks == list(range(start, start + len(round_acks)))
        acked.update(round_acks)
        start += 5000
        proc.stdout.close()
        proc.stderr.close()

    if backend == "sqlite":
        conn = sqlite3.connect(db_path)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.close()
    with Store(db_path, salt="rel-salt") as s:
        stored = {(r["user_hash"], r["vote"], r["event_id"]) for r in s.feedback_since()}
        missing = [
            i for i in acked
            if (s.hash_user(f"U{i}"), "down" if i % 3 == 0 else "up", f"E{i}") not in stored
        ]
        assert missing == []
        # Each acknowledged event is also claimed: a Slack retry after the crash is a duplicate.
        some = max(acked)
        replay = s.record_vote(f"a{some % 20}", "up", user=f"U{some}", origin="button", event_id=f"E{some}")
        assert replay.status == "duplicate"
        assert s.counts()["feedback"] >= len(acked)


@pytest.mark.slow
def test_reader_process_and_two_writers_never_see_database_is_locked(store_target, answer_factory, subprocess_env,
                                                                      tmp_path):
    db_path = store_target
    _prepare(db_path, answer_factory)
    stop_file = tmp_path / "stop"
    reader = _spawn(READER, [db_path, stop_file, "rel-salt"], subprocess_env)
    _wait_ready(reader)
    other_writer = _spawn(VOTE_WRITER, [db_path, 100_000, 600, "rel-salt"], subprocess_env)
    errors: list[BaseException] = []

    def write_in_thread():
        try:
            with Store(db_path, salt="rel-salt", daily_vote_cap=0) as s:
                for i in range(900):
                    s.record_vote(f"a{i % N_ANSWERS}", "up", user=f"T{i}", origin="reaction", event_id=f"T{i}")
                    if i % 100 == 0:
                        s.record_monitored_message(channel="C1", ts=f"{1700000000 + i}.0001", user=f"T{i}",
                                                   sentiment="neutral", scores={}, intent=None, confidence=None, text=None)
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=write_in_thread)
    thread.start()
    out, err = other_writer.communicate(timeout=60)
    thread.join(timeout=60)
    time.sleep(0.2)  # let the reader see the final state at least once
    stop_file.touch()
    reader_out, reader_err = reader.communicate(timeout=60)

    assert errors == []
    assert other_writer.returncode == 0, err
    assert out.rstrip().endswith("DONE")
    assert reader.returncode == 0, reader_err
    assert "locked" not in reader_err + err
    reads, most = map(int, reader_out.split()[-2:])
    assert reads >= 5 and most == 1500
    with Store(db_path, salt="rel-salt") as s:
        assert s.counts()["feedback"] == 1500
