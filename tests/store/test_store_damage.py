"""Damaged, full and unwritable databases through the real CLI (`python -m bot.cli` in a subprocess with
CSBOT_HOME set): one line on stderr naming the file and what to do, exit 2, no traceback. The full
disk is a real one: a small tmpfs mounted for the test (root only; skipped with the reason elsewhere)."""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from core.settings import Settings
from store import CorruptDatabaseError, Store
from tests.conftest import REPO

PAGE = 4096


def csbot(home: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "CSBOT_HOME": str(home), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], env=env, cwd=home.parent, input=input,
                          capture_output=True, text=True, timeout=300)


def one_error_line(proc: subprocess.CompletedProcess, command: str) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith(f"csbot {command}: error: "), proc.stderr
    return lines[0]


def damage(db: Path, pages: range, seed: int = 7) -> None:
    """Garbage over whole pages (1-based page numbers), header intact."""
    rng = random.Random(seed)
    with open(db, "r+b") as fh:
        for page in pages:
            fh.seek((page - 1) * PAGE)
            fh.write(bytes(rng.randrange(256) for _ in range(PAGE)))


def test_damage_deeper_than_the_open_reads_is_one_line_when_a_command_reaches_it(db_path, answer_factory):
    store = Store(db_path, salt="test-salt")
    answers = [answer_factory(text=f"answer {i}: " + "long text " * 150) for i in range(60)]
    for answer in answers:
        store.record_answer(answer)
    store.close()
    with sqlite3.connect(db_path) as conn:
        leaves = [r[0] for r in conn.execute("SELECT pageno FROM dbstat WHERE name = 'answers' AND pagetype = 'leaf'"
                                             " ORDER BY pageno")]
    assert len(leaves) > 2
    damage(db_path, [leaves[-1]])  # the newest answers' page: not on the way to the first entry
    store = Store(db_path, salt="test-salt")  # the open reads each b-tree's first entry only
    try:
        assert store.get_answer(answers[0].answer_id)["answer_id"] == answers[0].answer_id
        failures = []
        for reach in (lambda: list(store.export()), lambda: store.get_answer(answers[-1].answer_id),
                      lambda: store.record_answer(answer_factory())):
            with pytest.raises(CorruptDatabaseError) as caught:
                reach()
            failures.append(str(caught.value))
    finally:
        store.close()
    assert all(str(db_path) in f and "integrity_check" in f and "\n" not in f for f in failures), failures


@pytest.mark.slow
def test_a_database_with_damaged_pages_is_one_line_for_every_command(home, tmp_path):
    asked = csbot(home, "ask", "How do I reset my password?", "--json")
    assert asked.returncode == 0, asked.stderr
    answer_id = json.loads(asked.stdout)["answer_id"]
    db = home / "csbot.sqlite3"
    assert not (home / "csbot.sqlite3-wal").exists() and db.stat().st_size > 7 * PAGE
    damage(db, range(3, 7))
    commands = {
        "ask": ["ask", "where is my order"],
        "export": ["export"],
        "feedback": ["feedback", answer_id, "up"],
        "report": ["report", "--channel", "C1", "--json"],
    }
    for command, argv in commands.items():
        line = one_error_line(csbot(home, *argv), command)
        assert str(db) in line and "integrity_check" in line and "damaged" in line, line


# ----- a full disk ----------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MiB tmpfs mounted at tmp_path/disk (unmounted afterwards)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs for a real full disk needs root")
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(folder: Path, leave: int = 0) -> Path:
    """Write a filler file until only `leave` bytes are free on folder's file system."""
    filler = folder / "filler"
    st = os.statvfs(folder)
    size = max(0, st.f_bfree * st.f_frsize - leave)
    with open(filler, "wb") as fh:
        try:
            fh.write(b"\0" * size)
            fh.flush()
        except OSError:
            pass
    return filler


def store_with_answer(home: Path, answer_factory) -> str:
    store = Store.from_settings(Settings.load(env={}, home=home))
    try:
        answer = answer_factory()
        store.record_answer(answer, origin="cli")
        return answer.answer_id
    finally:
        store.close()


@pytest.mark.slow
def test_a_full_disk_says_disk_full(small_disk, answer_factory):
    home = small_disk / "home"
    answer_id = store_with_answer(home, answer_factory)
    fill(small_disk)
    db = home / "csbot.sqlite3"
    for command, argv in {"feedback": ["feedback", answer_id, "up", "--user", "U1"], "export": ["export"]}.items():
        line = one_error_line(csbot(home, *argv), command)
        assert line.startswith(f"csbot {command}: error: disk full: ") and str(db) in line, line
        assert "cannot be opened" not in line and "damaged" not in line, line


@pytest.mark.slow
def test_a_bulk_import_cut_short_by_a_full_disk_reports_what_it_stored(small_disk, answer_factory, tmp_path):
    home = small_disk / "home"
    answer_id = store_with_answer(home, answer_factory)
    votes = tmp_path / "votes.jsonl"
    votes.write_text("".join(json.dumps({"answer_id": answer_id, "vote": "up", "user": f"U{i}"}) + "\n"
                             for i in range(500)))
    filler = fill(small_disk, leave=640 * 1024)  # room for some votes' WAL frames, not for 500
    proc = csbot(home, "feedback", "--file", str(votes), "--json")
    line = one_error_line(proc, "feedback")
    report = json.loads(proc.stdout)
    assert 0 < report["stored"] < 500, report
    assert f"after storing {report['stored']} vote(s)" in line and "disk full" in line, line
    assert report["error"] == line.removeprefix("csbot feedback: error: ")
    assert report["line"] == report["stored"] + 1
    filler.unlink()
    store = Store.from_settings(Settings.load(env={}, home=home))
    try:
        assert store.counts()["votes_up"] == report["stored"]  # what it said it stored is what is stored
    finally:
        store.close()
    # Importing the same file again, with room, stores the rest and skips what was stored.
    again = csbot(home, "feedback", "--file", str(votes), "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["duplicates"] == report["stored"]
    assert json.loads(again.stdout)["stored"] == 500 - report["stored"]
