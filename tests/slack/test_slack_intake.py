"""Durable intake through the real server: `csbot serve --http PORT` in a subprocess (waitress, the
real bolt App, the real engine on the demo KB, a real SQLite store in CSBOT_HOME), the mock Slack Web
API and signed requests on 127.0.0.1. kill -9 and SIGTERM mid-burst, restart, count: no acknowledged
vote or event lost, none answered twice; two processes on one CSBOT_HOME answer each event once."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

from bot.slack import ids
from core.settings import Settings
from store import Store
from tests.slack.serve_process import ServeProcess
from tests.slack.slack_mock import TEAM
from tests.slack.slack_sender import button_payload

pytestmark = pytest.mark.slow


def answered_question(home, engine) -> str:
    """An answer in the store (channel C1, in a thread) to vote on; returns its id."""
    store = Store.from_settings(Settings.load(env={}, home=home))
    try:
        answer = engine.answer("How do I reset my password?")
        store.record_answer(answer, user="UASKER", workspace=TEAM, channel="C1", thread="1700000000.000100",
                            origin="slack")
        return answer.answer_id
    finally:
        store.close()


def open_store(home) -> Store:
    return Store.from_settings(Settings.load(env={}, home=home))


def burst(send, n: int, *, stop_at: int, on_stop, concurrency: int = 8):
    """Send n requests (send(i) -> status) with `concurrency` in flight; call on_stop() once `stop_at`
    got their 200. Returns the indexes acknowledged with a 200."""
    acked, lock, fired = [], threading.Lock(), threading.Event()

    def one(i):
        try:
            status = send(i)
        except OSError:
            return
        if status == 200:
            with lock:
                acked.append(i)
                if len(acked) >= stop_at and not fired.is_set():
                    fired.set()
                    on_stop()

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(n)))
    return sorted(acked)


def click(process, mock, answer_id, i):
    payload = button_payload(SimpleNamespace(mock=mock), ids.VOTE_UP, answer_id, "1700000000.000200",
                             user=f"UV{i:04d}", trigger=f"{i}.1.burst")
    return process.sender.interaction(payload)[0]


def pending_in(home) -> int:
    store = open_store(home)
    try:
        depth = store.inbox.depth()
        return depth["pending"] + depth["running"]
    finally:
        store.close()


@pytest.mark.parametrize("stop", ["kill -9", "SIGTERM"])
def test_no_acknowledged_vote_is_lost_when_the_process_is_stopped_mid_burst(serve, home, engine, slack_mock, stop):
    answer_id = answered_question(home, engine)
    slack_mock.delay("response:vote", 0.05)  # a slow Slack: the votes queue up behind the acks
    first = serve(slack_workers=2)
    exit_code = []

    def stop_it():
        if stop == "kill -9":
            first.kill()
        else:
            exit_code.append(first.terminate())

    stopper = threading.Thread(target=stop_it)
    acked = burst(lambda i: click(first, slack_mock, answer_id, i), 400, stop_at=150, on_stop=stopper.start)
    stopper.join(timeout=90)
    left = pending_in(home)
    assert len(acked) >= 150 and left > 0  # the stop came with acknowledged votes still queued
    if stop == "SIGTERM":
        assert exit_code == [0]
        assert "left in the inbox for the next start" in first.output()
    second = serve(slack_workers=2)
    second.wait_drained()
    store = open_store(home)
    try:
        voters = Counter(row["user_hash"] for row in store.feedback_since())
        assert {store.hash_user(f"UV{i:04d}") for i in acked} <= set(voters)  # 0 acknowledged votes lost
        assert set(voters.values()) == {1}  # 0 counted twice
        assert store.get_answer(answer_id)["votes"]["up"] == len(voters)
    finally:
        store.close()


def mention(process, mock, i, *, event_id=None):
    message = mock.add_message("C1", f"<@UBOT> How do I reset my password? ({i})", user=f"UM{i:04d}")
    event = {"type": "app_mention", "user": message["user"], "text": message["text"], "ts": message["ts"],
             "channel": "C1", "event_ts": message["ts"]}
    return message["ts"], process.sender.event(event, event_id=event_id or f"EvBURST{i:05d}")[0]


def answers_per_question(mock) -> Counter:
    return Counter(c.args.get("thread_ts") for c in mock.calls_to("chat.postMessage") if c.args.get("channel") == "C1")


def test_no_acknowledged_mention_is_lost_or_answered_twice_after_kill_9(serve, home, slack_mock):
    # A slow chat.postMessage: the kill lands while answers are posted but their ts not yet recorded.
    slack_mock.delay("chat.postMessage", 0.1)
    first = serve(slack_workers=2, slack_busy_after_seconds=600)
    questions = {}

    def send(i):
        ts, status = mention(first, slack_mock, i)
        questions[i] = ts
        return status

    acked = burst(send, 160, stop_at=60, on_stop=first.kill, concurrency=6)
    first.proc.wait(timeout=60)
    assert pending_in(home) > 0
    second = serve(slack_workers=2, slack_busy_after_seconds=600)
    second.wait_drained()
    answers = answers_per_question(slack_mock)
    assert all(answers[questions[i]] == 1 for i in acked)  # every acknowledged mention answered, once
    assert max(answers.values()) == 1  # nothing answered twice, acknowledged or not
    # Slack redelivers what it got no 200 for: each such event is answered once too.
    for i in sorted(set(questions) - set(acked)):
        event = {"type": "app_mention", "user": f"UM{i:04d}", "text": f"<@UBOT> How do I reset my password? ({i})",
                 "ts": questions[i], "channel": "C1"}
        assert second.sender.event(event, event_id=f"EvBURST{i:05d}", retry_num=1)[0] == 200
    second.wait_drained()
    answers = answers_per_question(slack_mock)
    assert all(answers[ts] == 1 for ts in questions.values())


def test_two_processes_on_one_home_answer_every_event_exactly_once(serve, slack_mock):
    a, b = serve(slack_workers=2), serve(slack_workers=2)
    questions = []

    def deliver(i):  # Slack's first delivery goes to one process, its retry to the other
        message = slack_mock.add_message("C1", f"<@UBOT> where is my parcel? ({i})", user=f"UT{i:03d}")
        event = {"type": "app_mention", "user": message["user"], "text": message["text"], "ts": message["ts"],
                 "channel": "C1"}
        questions.append(message["ts"])
        first, second = (a, b) if i % 2 else (b, a)
        with ThreadPoolExecutor(2) as pool:
            statuses = list(pool.map(lambda p: p.sender.event(event, event_id=f"EvTWO{i:04d}")[0], (first, second)))
        assert statuses == [200, 200]

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(deliver, range(60)))
    a.wait_drained()
    b.wait_drained()
    answers = answers_per_question(slack_mock)
    assert sorted(answers) == sorted(questions) and set(answers.values()) == {1}
    assert "resuming" not in a.output()  # neither took the other's running items: both were alive


def test_sigterm_stops_accepting_and_exits_0_with_nothing_running(serve, slack_mock):
    process = serve()
    ts, status = mention(process, slack_mock, 1)
    assert status == 200
    slack_mock.wait_for("chat.postMessage", timeout=60)
    started = time.monotonic()
    assert process.terminate() == 0
    assert time.monotonic() - started < 10  # nothing to wait for: no grace period spent
    with pytest.raises(OSError):
        process.sender.get("/healthz")


def test_socket_mode_sigterm_mid_burst_loses_no_acknowledged_event(home, slack_mock, tmp_path):
    from tests.slack.socket_mock import SocketModeMock

    socket_mock = SocketModeMock()
    slack_mock.socket_url = socket_mock.url
    slack_mock.delay("chat.postMessage", 0.1)
    processes = []
    try:
        first = ServeProcess(home, slack_mock.api_url, tmp_path / "socket-0.log", socket_mode=True, slack_workers=2,
                             slack_busy_after_seconds=600)
        processes.append(first)
        socket_mock.wait_connected()
        sent = {}
        for i in range(120):
            message = slack_mock.add_message("C1", f"<@UBOT> How do I reset my password? ({i})", user=f"US{i:03d}")
            event = {"type": "app_mention", "user": message["user"], "text": message["text"], "ts": message["ts"],
                     "channel": "C1"}
            envelope = socket_mock.send_event(event, event_id=f"EvSOCK{i:04d}")
            if envelope is None:
                break
            sent[envelope] = message["ts"]
            if i == 80:
                first.proc.send_signal(signal.SIGTERM)
            time.sleep(0.01)
        assert first.proc.wait(timeout=60) == 0
        # The whole log: output() keeps its last 6,000 characters, which the socket adapter's tracebacks
        # of sends after the close can fill on a loaded machine.
        assert "disconnecting; finishing the work in progress" in first.log_path.read_text(errors="replace")
        acked = [sent[e] for e in sent if e in socket_mock.acks]
        assert len(acked) >= 40 and pending_in(home) > 0  # stopped with acknowledged events still queued
        second = ServeProcess(home, slack_mock.api_url, tmp_path / "socket-1.log", socket_mode=True,
                              slack_workers=2, slack_busy_after_seconds=600)
        processes.append(second)
        socket_mock.wait_connected()
        deadline = time.monotonic() + 120
        while pending_in(home):
            assert time.monotonic() < deadline, second.output()
            time.sleep(0.2)
        answers = answers_per_question(slack_mock)
        assert all(answers[ts] == 1 for ts in acked) and max(answers.values()) == 1
    finally:
        for process in processes:
            process.close()
        socket_mock.close()
