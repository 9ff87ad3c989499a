"""Benchmarks for the conversation store: durable vote writes, reading since the last run, redaction.

    .venv/bin/python benchmarks/bench_store.py                 # both benchmarks
    .venv/bin/python benchmarks/bench_store.py --only votes    # sustained durable vote writes
    .venv/bin/python benchmarks/bench_store.py --only read     # read since last run, 1M-row table
    .venv/bin/python benchmarks/bench_store.py --only votes --only inbox \
        --database-url postgresql://postgres@127.0.0.1:5432/postgres   # SQLite and PostgreSQL side by side

1. Sustained vote writes: Store.record_vote, one writer, each vote its own durable transaction
   (WAL, synchronous=FULL, Slack event id claimed, cap checked). Target >= 2,000 votes/s.
2. Reading everything since the last training run (Store.feedback_since_last_run: votes joined
   with their answers, as dicts) from a table of 1,000,000 votes. Target < 1 s. The table is
   built with one transaction of plain INSERTs (~30-60 s); it is not part of the timing.
3. Inbox claims with three workers: 3 processes take and finish items from one inbox until it is
   empty (Inbox.take + Inbox.finish, each its own durable transaction; PostgreSQL claims with FOR
   UPDATE SKIP LOCKED). Reported as items per second, from the start signal to the last worker done.
4. Redaction of pathological texts (long runs of the characters the PII patterns look for: "x.",
   "a:", digits, "a@", URL-like, IBAN-like, 40,000 characters each) against ordinary customer text of
   the same length, measured in the same run: the ratio shows whether any pattern backtracks
   (target: each pathological text within 10x of the ordinary one).

Each figure is the median of --repeat runs. Everything is written to a temporary directory
(or --dir) and deleted afterwards unless --keep. With --database-url (a PostgreSQL server; the URL
of any database on it, e.g. the maintenance database "postgres"), the vote and inbox benchmarks run a
second time on a database created for the run (csbot_bench_<random>) and dropped afterwards.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.answer import Answer, Source  # noqa: E402
from core.clock import to_iso  # noqa: E402
from store import Store  # noqa: E402

VOTE_TARGET = 2000.0  # votes per second
REDACT_RATIO_TARGET = 10.0  # pathological / ordinary text of the same length
PATHOLOGICAL = {"x.": "x." * 20000, "a:": "a:" * 20000, "digits": "1 " * 20000, "a@": "a@" + "a" * 39998,
                "url": "https://" + "a:" * 19996, "iban-like": "GB82 " * 8000}
ORDINARY = "My parcel is late again, mail me at jane@example.com or call +44 20 7946 0958 please. "
READ_TARGET = 1.0  # seconds


def _answer(i: int) -> Answer:
    return Answer(
        answer_id=f"a{i}",
        question=f"How do I change the card on invoice {i}? my email is user{i}@example.com",
        text="Go to Billing > Payment methods.",
        intent="billing_update_card",
        confidence=0.87,
        sentiment="neutral",
        sentiment_scores={"negative": 0.1, "neutral": 0.8, "positive": 0.1},
        sources=[Source("kb-3", "Update your card", "https://help.example.com/kb-3", 0.8)],
        model_version="intent-v1",
        doc_id="kb-3",
    )


def raw_commit_rate(workdir: Path, n: int = 2000) -> float:
    """The disk's ceiling: bare one-row transactions with the store's pragmas (WAL, FULL)."""
    import sqlite3

    conn = sqlite3.connect(workdir / "raw.sqlite3", isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, x TEXT)")
    start = time.perf_counter()
    for i in range(n):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t (x) VALUES (?)", (str(i),))
        conn.execute("COMMIT")
    rate = n / (time.perf_counter() - start)
    conn.close()
    return rate


@contextmanager
def bench_database(server_url: str):
    """A PostgreSQL database of its own on `server_url`'s server, at the schema; dropped afterwards."""
    import psycopg

    from store.backends import upgrade_database

    name = f"csbot_bench_{secrets.token_hex(4)}"
    base = server_url.rsplit("/", 1)[0]
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = f"{base}/{name}"
        upgrade_database(url)
        yield url
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def raw_postgres_commit_rate(url: str, n: int = 2000) -> float:
    """The server's ceiling: bare one-row transactions (synchronous_commit on), one connection."""
    import psycopg

    with psycopg.connect(url) as conn:
        conn.execute("CREATE TEMP TABLE t (id serial PRIMARY KEY, x text)")
        conn.commit()
        start = time.perf_counter()
        for i in range(n):
            conn.execute("INSERT INTO t (x) VALUES (%s)", (str(i),))
            conn.commit()
        return n / (time.perf_counter() - start)


def bench_votes(workdir: Path, votes: int, repeat: int, database_url: str | None = None) -> dict:
    target = database_url or workdir / "votes.sqlite3"
    store = Store(target, salt="bench", daily_vote_cap=200)
    n_answers = 500
    for i in range(n_answers):
        store.record_answer(_answer(i), user=f"ASK{i}", channel="C1")
    rates, latencies = [], []
    for r in range(repeat):
        start = time.perf_counter()
        for i in range(votes):
            t0 = time.perf_counter()
            result = store.record_vote(
                f"a{i % n_answers}",
                "down" if i % 4 == 0 else "up",
                user=f"U{r}-{i % 5000}",
                origin="button",
                event_id=f"Ev{r}-{i}",
                intent="billing_refund" if i % 10 == 0 else None,
            )
            latencies.append(time.perf_counter() - t0)
            assert result.status in ("stored", "capped"), result
        rates.append(votes / (time.perf_counter() - start))
    store.close()
    latencies.sort()
    raw = raw_postgres_commit_rate(database_url) if database_url else raw_commit_rate(workdir)
    return {
        "raw_commits_per_s": round(raw),
        "votes_per_run": votes,
        "runs": [round(x) for x in rates],
        "median_votes_per_s": round(statistics.median(rates)),
        "p50_latency_ms": round(latencies[len(latencies) // 2] * 1000, 3),
        "p99_latency_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 3),
        "target_votes_per_s": VOTE_TARGET,
    }


TAKER = r"""
import sys, time
sys.path.insert(0, sys.argv[3])
from store import Store
store = Store(sys.argv[1], salt="bench")
store.inbox.register(sys.argv[2])
print("READY", flush=True)
sys.stdin.readline()
n = 0
while True:
    item = store.inbox.take(sys.argv[2])
    if item is None:
        break
    store.inbox.finish(item["id"])
    n += 1
print(f"DONE {n}", flush=True)
"""


def bench_inbox(workdir: Path, items: int, repeat: int, workers: int = 3, database_url: str | None = None) -> dict:
    """`workers` processes take and finish `items` items until the inbox is empty."""
    from store.inbox import InboxItem

    root = str(Path(__file__).resolve().parents[1])
    rates = []
    for r in range(repeat):
        target = database_url or workdir / f"inbox-{r}.sqlite3"
        with Store(target, salt="bench") as store:
            body = json.dumps({"event": {"text": "where is my parcel?" * 5}})
            for i in range(0, items, 10):
                store.inbox.accept([InboxItem(function="f", work="answer", body=body)] * 10, event_id=f"bench-{r}-{i}")
        procs = [subprocess.Popen([sys.executable, "-c", TAKER, str(target), f"w{n}", root], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True) for n in range(workers)]
        for proc in procs:
            assert proc.stdout.readline().strip() == "READY"
        start = time.perf_counter()
        for proc in procs:
            proc.stdin.write("GO\n")
            proc.stdin.flush()
        done = [int(proc.communicate(timeout=600)[0].split()[-1]) for proc in procs]
        rates.append(items / (time.perf_counter() - start))
        assert sum(done) == items, done
    return {"items_per_run": items, "workers": workers, "runs": [round(x) for x in rates],
            "median_items_per_s": round(statistics.median(rates))}


def build_big_table(path: Path, rows: int) -> None:
    """`rows` votes over 90 days (4 votes per answer) in one transaction."""
    store = Store(path, salt="bench", daily_vote_cap=0)
    conn = store._conn
    end = dt.datetime(2025, 6, 1, tzinfo=dt.timezone.utc)
    span = dt.timedelta(days=90)
    per_answer = 4
    n_answers = rows // per_answer
    t0 = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")

    def when(k: int, total: int) -> str:
        return to_iso(end - span + span * (k / total))

    conn.executemany(
        "INSERT INTO answers (answer_id, time, origin, channel, user_hash, question, intent, confidence,"
        " sentiment, sources, model_version, handoff, answer_text, doc_id, sentiment_scores, used_context)"
        " VALUES (?, ?, 'slack', 'C1', ?, ?, ?, 0.8, 'neutral', '[]', 'intent-v1', 0, ?, ?, '{}', 0)",
        (
            (f"a{i}", when(i * per_answer, rows), f"{i % 9973:032x}",
             f"question {i} about [EMAIL] and billing", f"intent_{i % 40}", "answer text", f"kb-{i % 300}")
            for i in range(n_answers)
        ),
    )
    conn.executemany(
        "INSERT INTO feedback (answer_id, user_hash, vote, origin, event_id, time, created, correct_intent)"
        " VALUES (?, ?, ?, 'button', ?, ?, ?, ?)",
        (
            (f"a{k // per_answer}", f"{k % 50021:032x}", "up" if k % 3 else "down", f"Ev{k}",
             when(k, rows), when(k, rows), f"intent_{k % 40}" if k % 7 == 0 else None)
            for k in range(rows)
        ),
    )
    conn.execute("COMMIT")
    build = time.perf_counter() - t0
    print(f"  built {rows:,} votes / {n_answers:,} answers in {build:.1f}s", file=sys.stderr)
    store.close()


def bench_read(workdir: Path, rows: int, repeat: int, new_rows: list[int]) -> dict:
    path = workdir / "big.sqlite3"
    build_big_table(path, rows)
    results = {}
    for n_new in new_rows:
        store = Store(path, salt="bench")
        # The watermark: the time of the (rows - n_new)-th oldest vote.
        (watermark,) = store._conn.execute(
            "SELECT time FROM feedback ORDER BY time LIMIT 1 OFFSET ?", (max(rows - n_new - 1, 0),)
        ).fetchone()
        run_id = store.record_training_run(model_version="bench", data_until=watermark if n_new < rows else "1970-01-01")
        timings = []
        got = 0
        for _ in range(repeat):
            t0 = time.perf_counter()
            got = len(store.feedback_since_last_run())
            timings.append(time.perf_counter() - t0)
        store._conn.execute("DELETE FROM training_runs WHERE id = ?", (run_id,))
        store.close()
        results[f"since_last_run_{n_new}_rows"] = {
            "rows_returned": got,
            "runs_s": [round(t, 3) for t in timings],
            "median_s": round(statistics.median(timings), 3),
        }
    return {"table_rows": rows, **results, "target_s": READ_TARGET}


def bench_redact(repeat: int) -> dict:
    from store.redact import redact

    def median_seconds(text: str) -> float:
        runs = []
        for _ in range(repeat):
            start = time.perf_counter()
            redact(text)
            runs.append(time.perf_counter() - start)
        return statistics.median(runs)

    floor = median_seconds((ORDINARY * (40000 // len(ORDINARY) + 1))[:40000])
    texts = {name: median_seconds(text) for name, text in PATHOLOGICAL.items()}
    return {"ordinary_ms": round(floor * 1000, 2),
            "pathological_ms": {name: round(t * 1000, 2) for name, t in texts.items()},
            "worst_ratio": round(max(texts.values()) / floor, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["votes", "read", "inbox", "redact"], action="append",
                        help="run only these (repeatable; default all)")
    parser.add_argument("--items", type=int, default=3000, help="inbox items per timed run")
    parser.add_argument("--database-url", help="also run the vote and inbox benchmarks on this PostgreSQL server")
    parser.add_argument("--votes", type=int, default=5000, help="votes per timed run")
    parser.add_argument("--rows", type=int, default=1_000_000, help="size of the big feedback table")
    parser.add_argument(
        "--new", type=int, action="append",
        help="newest rows unread since the last run (repeatable; default 10000 = one day, 100000, all)",
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, help="work directory (default: a new temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the databases")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="csbot-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    try:
        only = set(args.only or ["votes", "read", "inbox", "redact"])
        if "votes" in only:
            print("vote writes ...", file=sys.stderr)
            results["votes"] = bench_votes(workdir, args.votes, args.repeat)
            if args.database_url:
                with bench_database(args.database_url) as url:
                    results["votes_postgresql"] = bench_votes(workdir, args.votes, args.repeat, url)
        if "inbox" in only:
            print("inbox claims, three workers ...", file=sys.stderr)
            results["inbox"] = bench_inbox(workdir, args.items, args.repeat)
            if args.database_url:
                with bench_database(args.database_url) as url:
                    results["inbox_postgresql"] = bench_inbox(workdir, args.items, args.repeat, database_url=url)
        if "read" in only:
            print("read since last training run ...", file=sys.stderr)
            new_rows = args.new or [10_000, 100_000, args.rows]
            results["read"] = bench_read(workdir, args.rows, args.repeat, new_rows)
        if "redact" in only:
            print("redaction of pathological texts ...", file=sys.stderr)
            results["redact"] = bench_redact(max(args.repeat, 5))
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for key, name in (("votes", "SQLite"), ("votes_postgresql", "PostgreSQL")):
        if key not in results:
            continue
        v = results[key]
        ok = "meets" if v["median_votes_per_s"] >= VOTE_TARGET else "MISSES"
        print(f"{name} vote writes (durable, 1 writer): median {v['median_votes_per_s']:,}/s over {args.repeat} runs "
              f"of {v['votes_per_run']:,} (runs {v['runs']}); latency p50 {v['p50_latency_ms']} ms, "
              f"p99 {v['p99_latency_ms']} ms; target >= {VOTE_TARGET:,.0f}/s: {ok} "
              f"(bare commit ceiling right now: {v['raw_commits_per_s']:,}/s)")
    for key, name in (("inbox", "SQLite"), ("inbox_postgresql", "PostgreSQL")):
        if key in results:
            i = results[key]
            print(f"{name} inbox claims, {i['workers']} worker processes: median {i['median_items_per_s']:,} items/s "
                  f"(take + finish) over {args.repeat} runs of {i['items_per_run']:,} (runs {i['runs']})")
    if "read" in results:
        r = results["read"]
        for key, value in r.items():
            if key.startswith("since_last_run"):
                ok = "meets" if value["median_s"] < READ_TARGET else "MISSES"
                print(f"read since last run from {r['table_rows']:,} votes: {value['rows_returned']:,} rows in "
                      f"median {value['median_s']} s (runs {value['runs_s']}); target < {READ_TARGET} s: {ok}")
    if "redact" in results:
        r = results["redact"]
        ok = "meets" if r["worst_ratio"] <= REDACT_RATIO_TARGET else "MISSES"
        print(f"redaction, 40,000 characters: ordinary text {r['ordinary_ms']} ms; pathological "
              + ", ".join(f"{k} {v} ms" for k, v in r["pathological_ms"].items())
              + f"; worst ratio {r['worst_ratio']}x, target <= {REDACT_RATIO_TARGET:g}x: {ok}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
