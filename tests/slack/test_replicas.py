"""Several replicas on several hosts, as a team outgrowing one machine runs them: three `csbot serve --http`
processes with homes of their own (nothing shared on disk), one PostgreSQL database and one S3 bucket (moto's
real S3 API). Slack's deliveries and retries go to any replica; one replica is SIGKILLed mid-stream; a retrain
host (a fourth home) publishes a new champion. Nothing acknowledged is lost, nothing is answered twice, the
dead replica's claimed work is taken over, and the survivors serve the new champion."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import REPO, copy_home
from tests.slack.serve_process import ServeProcess

pytestmark = pytest.mark.slow


def csbot(home, *args, **env) -> subprocess.CompletedProcess:
    environ = {**os.environ, "CSBOT_HOME": str(home), "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1",
               **{f"CSBOT_{k.upper()}": str(v) for k, v in env.items()}}
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], env=environ, cwd=str(home.parent),
                          capture_output=True, text=True, timeout=600)


@pytest.fixture
def database():
    from tests.pg import new_database

    url, drop = new_database()
    yield url
    drop()


def answers_per_question(mock) -> Counter:
    return Counter(c.args.get("thread_ts") for c in mock.calls_to("chat.postMessage") if c.args.get("channel") == "C1")


def test_three_replicas_on_one_database_and_bucket(demo_home, helpcentre_home, tmp_path, slack_mock, model_store, database):
    shared = {"database_url": database, "model_store": model_store}
    builder = copy_home(demo_home, tmp_path / "builder")
    for args in (("db", "upgrade"), ("models", "push")):
        run = csbot(builder, *args, **shared)
        assert run.returncode == 0, run.stderr
    first_champion = (builder / "models" / "CHAMPION").read_text().strip()

    slack_mock.delay("chat.postMessage", 0.1)  # the kill lands while answers are being posted
    replicas = []
    for i in range(3):
        home = tmp_path / f"replica{i}"
        home.mkdir()  # empty: everything comes from the database and the bucket
        replicas.append(ServeProcess(home, slack_mock.api_url, tmp_path / f"replica{i}.log", slack_workers=2,
                                     slack_busy_after_seconds=600, **shared))
    try:
        for replica in replicas:
            health = replica.wait_healthy()
            assert health["model_version"] == first_champion
        victim, survivors = replicas[0], replicas[1:]
        questions, acked, lock, killed = {}, [], threading.Lock(), threading.Event()

        def deliver(i):
            message = slack_mock.add_message("C1", f"<@UBOT> where is my parcel? ({i})", user=f"UR{i:04d}")
            event = {"type": "app_mention", "user": message["user"], "text": message["text"], "ts": message["ts"],
                     "channel": "C1"}
            questions[i] = message["ts"]
            # Slack's delivery to one replica and its retry to the next (a load balancer's choice): both
            # arrive, and the event must be answered once.
            for attempt, replica in enumerate((replicas[i % 3], replicas[(i + 1) % 3])):
                if replica is victim and killed.is_set():
                    continue
                try:
                    status = replica.sender.event(event, event_id=f"EvREP{i:04d}", retry_num=attempt or None)[0]
                except OSError:
                    continue
                if status == 200:
                    with lock:
                        acked.append(i)
                        if len(set(acked)) >= 40 and not killed.is_set():
                            killed.set()
                            victim.kill()  # SIGKILL: its claimed items stay "running" under its lease

        with ThreadPoolExecutor(6) as pool:
            list(pool.map(deliver, range(120)))
        assert killed.is_set() and len(set(acked)) >= 100
        for survivor in survivors:
            survivor.wait_drained(timeout=180)
        answers = answers_per_question(slack_mock)
        assert all(answers[questions[i]] == 1 for i in set(acked)), "an acknowledged mention was lost"
        assert max(answers.values()) == 1, "a mention was answered twice"
        # The dead replica's running items were taken over once its heartbeat lapsed.
        assert any("took over" in s.output() for s in survivors), [s.output()[-2000:] for s in survivors]

        # The retrain host: a fourth home publishes and promotes a version; the survivors serve it.
        trainer = copy_home(helpcentre_home, tmp_path / "trainer")
        new = (trainer / "models" / "CHAMPION").read_text().strip()
        run = csbot(trainer, "models", "push", **shared)
        assert run.returncode == 0, run.stderr
        run = csbot(trainer, "models", "promote", new, **shared)
        assert run.returncode == 0, run.stderr
        deadline = time.monotonic() + 120
        while {s.health()["model_version"] for s in survivors} != {new}:
            assert time.monotonic() < deadline, [s.health()["model_version"] for s in survivors]
            time.sleep(0.5)
    finally:
        for replica in replicas:
            replica.close()
