"""Several processes on one store, on both backends: inbox claims (PostgreSQL: FOR UPDATE SKIP LOCKED),
event-id claims, the vote cap, and a worker killed with SIGKILL whose items are taken over when its lease
lapses without the reply ledger ever holding two posts for one question."""

from __future__ import annotations

import collections
import json
import signal
import subprocess
import sys
import time

import pytest

from store import Store
from store.inbox import PENDING, RUNNING, InboxItem

pytestmark = pytest.mark.slow

TAKER = r"""
import sys, time
from store import Store
target, owner = sys.argv[1], sys.argv[2]
store = Store(target, salt="s")
store.inbox.register(owner)
print("READY", flush=True)
while sys.stdin.readline().strip() != "GO":
    pass
idle_since = None
while True:
    item = store.inbox.take(owner)
    if item is None:
        idle_since = idle_since or time.monotonic()
        if time.monotonic() - idle_since > 1.0:
            break
        continue
    idle_since = None
    print(f"TOOK {item['id']}", flush=True)
    store.inbox.finish(item["id"])
print("DONE", flush=True)
"""

CLAIMER = r"""
import sys
from store import Store
target, n = sys.argv[1], int(sys.argv[2])
store = Store(target, salt="s")
print("READY", flush=True)
while sys.stdin.readline().strip() != "GO":
    pass
won = [i for i in range(n) if store.claim_event(f"Ev{i}")]
print("WON " + " ".join(map(str, won)), flush=True)
"""

VOTER = r"""
import sys
from store import Store
target, tag = sys.argv[1], sys.argv[2]
store = Store(target, salt="s", daily_vote_cap=7)
print("READY", flush=True)
while sys.stdin.readline().strip() != "GO":
    pass
statuses = [store.record_vote(f"a{i}", "up", user="U1", origin="button", event_id=f"{tag}{i}").status for i in range(20)]
print("STATUS " + " ".join(statuses), flush=True)
"""

# Takes one item, notes the post it is about to make in the reply ledger, then waits to be killed.
DYING_WORKER = r"""
import sys, time
from store import Store
target = sys.argv[1]
store = Store(target, salt="s")
store.inbox.register("doomed")
item = store.inbox.take("doomed")
store.inbox.post_begin("answer:C1:100.1", answer_id="a1", channel="C1", thread_ts="100.1", question_ts="100.1")
print(f"HOLDING {item['id']}", flush=True)
time.sleep(600)
"""


def spawn(script: str, *args, env) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", script, *map(str, args)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    return proc


def ready(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        line = proc.stdout.readline()
        assert line.strip() == "READY", line + proc.stderr.read()


def go(procs: list[subprocess.Popen], timeout: float = 120) -> list[str]:
    for proc in procs:
        proc.stdin.write("GO\n")
        proc.stdin.flush()
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, err
        assert "locked" not in err
        outputs.append(out)
    return outputs


def test_three_workers_take_every_item_exactly_once(store, store_target, subprocess_env):
    for i in range(100):
        store.inbox.accept([InboxItem(function="f", work="answer", body=json.dumps({"i": i}))] * 3, event_id=f"E{i}")
    workers = [spawn(TAKER, store_target, f"w{n}", env=subprocess_env) for n in range(3)]
    ready(workers)
    outputs = go(workers)
    taken = collections.Counter(int(line.split()[1]) for out in outputs for line in out.splitlines()
                                if line.startswith("TOOK"))
    assert len(taken) == 300 and set(taken.values()) == {1}  # every item, none twice
    assert store.inbox.depth() == {PENDING: 0, RUNNING: 0, "failed": 0}


def test_processes_claiming_the_same_event_ids_win_each_once(store, store_target, subprocess_env):
    claimers = [spawn(CLAIMER, store_target, 300, env=subprocess_env) for _ in range(3)]
    ready(claimers)
    won = [int(x) for out in go(claimers) for x in out.split()[1:]]
    assert sorted(won) == list(range(300))
    assert store.counts()["processed_events"] == 300


def test_the_daily_vote_cap_holds_across_processes(store, store_target, answer_factory, subprocess_env):
    for i in range(20):
        store.record_answer(answer_factory(f"a{i}"))
    voters = [spawn(VOTER, store_target, tag, env=subprocess_env) for tag in ("x", "y")]
    ready(voters)
    statuses = [s for out in go(voters) for s in out.split()[1:]]
    # 7 new votes (the cap), each cast by one process and changed by the other; everything else capped.
    assert store.counts()["feedback"] == 7
    assert statuses.count("stored") == 14 and statuses.count("capped") == 26


def test_a_killed_workers_item_is_taken_over_after_its_lease_and_posted_once(store, store_target, subprocess_env):
    store.inbox.accept([InboxItem(function="f", work="answer", body="{}")], event_id="E1")
    proc = spawn(DYING_WORKER, store_target, env=subprocess_env)
    line = proc.stdout.readline()
    assert line.startswith("HOLDING"), line + proc.stderr.read()
    held = int(line.split()[1])
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    proc.stdout.close(), proc.stderr.close(), proc.stdin.close()
    assert store.inbox.items(RUNNING)[0]["owner"] == "doomed"

    survivor = Store(store_target, salt="s")
    try:
        survivor.inbox.register("survivor")
        # The dead process's heartbeat is its lease: once older than stale_after, its items go back.
        assert survivor.inbox.reclaim(stale_after=60, now=time.time() + 120) == 1
        again = survivor.inbox.take("survivor")
        assert again["id"] == held and again["attempts"] == 2
        record = survivor.inbox.post_record("answer:C1:100.1")
        assert record["answer_id"] == "a1" and record["ts"] is None  # begun, not done: look it up, don't repost
        survivor.inbox.post_begin("answer:C1:100.1", answer_id="a1", channel="C1", thread_ts="100.1",
                                  question_ts="100.1")
        survivor.inbox.post_done("answer:C1:100.1", "200.2")
        survivor.inbox.finish(again["id"])
        assert survivor._read("SELECT key, ts FROM slack_posts") == [{"key": "answer:C1:100.1", "ts": "200.2"}]
        assert survivor.inbox.depth()[RUNNING] == 0
    finally:
        survivor.close()
