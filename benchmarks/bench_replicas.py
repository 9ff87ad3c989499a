"""Several replicas: three `csbot serve --http` processes with homes of their own on one PostgreSQL
database and one S3 bucket (moto's real S3 API on loopback), beside one process on the SQLite default,
in one run. Signed app_mention events on 127.0.0.1 answered into the local mock Slack Web API
(tests/slack); nothing leaves the machine; figures are printed, nothing asserted.

Phases:
1. cold start: each replica from an empty CSBOT_HOME (the champion fetched from the bucket) to /healthz;
2. steady, SQLite: --rate events/s (default 50) for --duration seconds (default 60) to one process on
   the SQLite default (the floor: today's one-machine set-up);
3. steady, replicas: the same load spread over the three replicas (a load balancer's round robin);
4. SIGKILL: --rate events/s for --kill-duration seconds with a slow Slack (chat.postMessage takes 1 s,
   so every worker of every replica holds a claimed item); one replica is SIGKILLed half-way (later
   events go to the survivors, as a load balancer's health check would do). Take-over: from the kill
   until a survivor hands the dead replica's running items back to the queue (its heartbeat lapses
   after 15 s); lost and doubled count every acknowledged event of the phase;
5. new champion: a fourth home (the retrain host) publishes and promotes a version; seconds until every
   survivor's /healthz serves it;
6. database outage: --rate events/s for --outage-duration + 20 s over the survivors; 10 s in, the
   database refuses connections (and ends the open ones) for --outage-duration seconds (default 20).
   What the intake could not store it answers 503, and the sender then does what Slack does: it
   delivers those events again (retry 1, 2, 3, a few seconds apart) until they are acknowledged.
Per steady phase: ack (HTTP 200) p50/p99, event -> chat.postMessage p50/p99, lost, doubled.

Usage: python benchmarks/bench_replicas.py [--rate 50] [--duration 60] [--kill-duration 30] [--json]
Needs a PostgreSQL server (CSBOT_TEST_DATABASE_URL, default postgresql://postgres@127.0.0.1:5432/postgres:
a database is created for the run and dropped) and moto[server] (the test extra).
About 6-8 min on a 2-core machine, most of it building two model versions (not timed).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_model_store import start_moto  # noqa: E402  (moto_server on a free loopback port)
from bench_slack_load import CHANNEL, Load  # noqa: E402  (sets the process up: offline, no proxies)

from benchmarks.demo_home import bench_home  # noqa: E402
from tests.slack.serve_process import ServeProcess  # noqa: E402
from tests.slack.slack_mock import MockSlack  # noqa: E402

STEADY_KEYS = ("events", "acked", "connection_errors", "ack_ms", "answered", "answer_ms", "lost", "doubled")


class ReplicaLoad(Load):
    """Load spread over several servers, round robin over the live ones."""

    def __init__(self, servers: list[ServeProcess], mock: MockSlack):
        super().__init__(servers[0], mock)
        self.servers, self.dead = servers, set()

    def send(self, phase: str, i: int, server: ServeProcess | None = None) -> None:
        live = [s for s in self.servers if s not in self.dead]
        server = server or live[i % len(live)]
        super().send(phase, i, server)
        self.sent[f"U{phase[0].upper()}{i:06d}"]["server"] = self.servers.index(server)


def create_database() -> tuple[str, callable]:
    import psycopg

    server = os.environ.get("CSBOT_TEST_DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
    name = f"csbot_bench_{secrets.token_hex(5)}"
    with psycopg.connect(server, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = server.rsplit("/", 1)[0] + "/" + name

    def drop():
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return url, drop


def csbot(home: Path, *args: str) -> None:
    env = {**os.environ, "CSBOT_HOME": str(home), "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-m", "bot.cli", *args], env=env, cwd=str(home.parent),
                         capture_output=True, text=True, timeout=900)
    if run.returncode:
        raise SystemExit(f"csbot {' '.join(args)} failed: {run.stderr.strip()}")


def steady(load: Load, servers: list[ServeProcess], phase: str, rate: float, seconds: float) -> dict:
    print(f"{phase}: {rate:g} events/s for {seconds:g} s over {len(servers)} process(es)...", file=sys.stderr)
    load.open_loop(phase, rate, seconds)
    for server in servers:
        server.wait_drained(timeout=600)
    return {k: v for k, v in load.figures(phase).items() if k in STEADY_KEYS}


def kill_phase(load: ReplicaLoad, mock: MockSlack, rate: float, seconds: float) -> dict:
    victim, survivors = load.servers[0], load.servers[1:]
    killed_at: list[float] = []

    def kill_half_way():
        time.sleep(seconds / 2)
        victim.kill()
        load.dead.add(victim)
        killed_at.append(time.monotonic())
        while time.monotonic() - killed_at[0] < 120:  # until a survivor says it took the victim's items over
            lines = [line for s in survivors for line in s.output().splitlines() if "took over" in line]
            if lines:
                took_over.append((time.monotonic(), lines[0]))
                return
            time.sleep(0.2)

    took_over: list[tuple[float, str]] = []
    print(f"SIGKILL: {rate:g} events/s for {seconds:g} s, one replica killed half-way...", file=sys.stderr)
    mock.delay("chat.postMessage", 1.0)  # a slow Slack: every worker of the victim holds a claimed item when it dies
    killer = threading.Thread(target=kill_half_way)
    killer.start()
    load.open_loop("kill", rate, seconds)
    killer.join()
    for server in survivors:
        server.wait_drained(timeout=600)
    figures = load.figures("kill")
    posted: dict[str, float] = {}
    for call in mock.calls_to("chat.postMessage"):
        posted.setdefault(call.args.get("thread_ts"), call.time)
    mock.delay("chat.postMessage", 0.0)
    taken = re.search(r"took over (\d+) running item", took_over[0][1]) if took_over else None
    return {**{k: v for k, v in figures.items() if k in STEADY_KEYS},
            "running_on_the_killed_replica": int(taken.group(1)) if taken else 0,
            "takeover_s": round(took_over[0][0] - killed_at[0], 1) if took_over else None}


def set_connections(database: str, allow: bool) -> None:
    """Open or close `database` to new connections and end the open ones: an outage as replicas see it."""
    import psycopg

    server = os.environ.get("CSBOT_TEST_DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
    name = database.rsplit("/", 1)[1]
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"true" if allow else "false"}')
        if not allow:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))


def outage_phase(load: ReplicaLoad, survivors: list[ServeProcess], database: str, rate: float, outage: float) -> dict:
    print(f"database outage: {rate:g} events/s for {outage + 20:g} s, the database gone for {outage:g} s...",
          file=sys.stderr)

    def cut():
        time.sleep(10)
        set_connections(database, False)
        time.sleep(outage)
        set_connections(database, True)

    cutter = threading.Thread(target=cut)
    cutter.start()
    load.open_loop("outage", rate, outage + 20)
    cutter.join()
    refused = [r for r in load.sent.values() if r["phase"] == "outage" and r["status"] != 200]
    first_refusals = len(refused)
    for retry in (1, 2, 3):  # Slack's retries: what was not acknowledged comes again
        if not refused:
            break
        time.sleep(5)
        for record in refused:
            replica = survivors[retry % len(survivors)]
            event = {"type": "app_mention", "user": record["user"], "text": record["text"], "ts": record["ts"],
                     "channel": CHANNEL, "event_ts": record["ts"]}
            try:
                record["status"] = replica.sender.event(event, event_id=record["event_id"], retry_num=retry)[0]
            except OSError:
                record["status"] = None
        refused = [r for r in refused if r["status"] != 200]
    for server in survivors:
        server.wait_drained(timeout=600)
    figures = load.figures("outage")
    return {**{k: v for k, v in figures.items() if k in ("events", "acked", "answered", "lost", "doubled")},
            "refused_during_outage": first_refusals, "never_acknowledged": len(refused)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50)
    parser.add_argument("--duration", type=float, default=60, help="seconds of each steady phase")
    parser.add_argument("--kill-duration", type=float, default=30)
    parser.add_argument("--outage-duration", type=float, default=20, help="seconds the database is gone")
    parser.add_argument("--home", help="a CSBOT_HOME with a champion model (default: build the demo KB)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the processes' logs")
    args = parser.parse_args()

    tmp_dir = tempfile.TemporaryDirectory(prefix="csbot-bench-replicas-")
    tmp = Path(tmp_dir.name)
    moto, endpoint = start_moto(tmp)
    database, drop = create_database()
    os.environ.update({"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"})
    import boto3

    boto3.client("s3").create_bucket(Bucket="csbot-bench")
    shared = {"CSBOT_DATABASE_URL": database, "CSBOT_MODEL_STORE": "s3://csbot-bench/models"}
    mock = MockSlack()
    processes: list[ServeProcess] = []
    try:
        builder = bench_home(args.home, tmp, finetune_epochs=0)
        print("building the retrain host's version (not timed)...", file=sys.stderr)
        trainer = bench_home(None, tmp / "trainer", finetune_epochs=0)
        floor = ServeProcess(builder, mock.api_url, tmp / "sqlite.log")  # before the shared settings
        processes.append(floor)
        os.environ.update(shared)
        csbot(builder, "db", "upgrade")
        csbot(builder, "models", "push")
        floor.wait_healthy()
        replicas, cold = [], []
        for i in range(3):
            home = tmp / f"replica{i}"
            home.mkdir()
            start = time.monotonic()
            replica = ServeProcess(home, mock.api_url, tmp / f"replica{i}.log")
            processes.append(replica)
            replica.wait_healthy(timeout=300)
            cold.append(round(time.monotonic() - start, 1))
            replicas.append(replica)
        sqlite_load = Load(floor, mock)
        sqlite_load.send("warmup", 0)
        figures = {"cpus": os.cpu_count(), "rate": args.rate, "cold_start_s": cold,
                   "sqlite_one_process": steady(sqlite_load, [floor], "sqlite", args.rate, args.duration)}
        floor.close()
        load = ReplicaLoad(replicas, mock)
        figures["postgres_three_replicas"] = steady(load, replicas, "replicas", args.rate, args.duration)
        figures["sigkill"] = kill_phase(load, mock, args.rate, args.kill_duration)
        csbot(trainer, "models", "push")
        new = (trainer / "models" / "CHAMPION").read_text().strip()
        csbot(trainer, "models", "promote", new)
        promoted = time.monotonic()
        survivors = replicas[1:]
        while {s.health()["model_version"] for s in survivors} != {new}:
            if time.monotonic() - promoted > 300:
                break
            time.sleep(0.2)
        figures["new_champion_served_s"] = round(time.monotonic() - promoted, 1)
        figures["database_outage"] = outage_phase(load, survivors, database, args.rate, args.outage_duration)
    finally:
        for process in processes:
            process.close()
        mock.stop()
        moto.terminate()
        drop()
        if args.keep:
            kept = Path(tempfile.mkdtemp(prefix="csbot-bench-replicas-kept-"))
            for log in tmp.glob("*.log"):
                log.rename(kept / log.name)
            print(f"logs kept in {kept}", file=sys.stderr)
        tmp_dir.cleanup()
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"{figures['cpus']} CPUs, {args.rate:g} events/s; cold start from the bucket: {cold} s")
    for name in ("sqlite_one_process", "postgres_three_replicas", "sigkill"):
        f = figures[name]
        print(f"  {name:24s} {f['events']} sent, {f['acked']} acked; ack p50 {f['ack_ms']['p50']} ms p99 "
              f"{f['ack_ms']['p99']} ms; answered p50 {f['answer_ms']['p50']} ms p99 {f['answer_ms']['p99']} ms; "
              f"lost {f['lost']}, doubled {f['doubled']}" + (f"; {f['running_on_the_killed_replica']} items it was running taken over "
                   f"{f['takeover_s']} s after the kill" if name == "sigkill" else ""))
    print(f"  new champion served by every survivor {figures['new_champion_served_s']} s after its promotion")
    o = figures["database_outage"]
    print(f"  database gone {args.outage_duration:g} s mid-stream: {o['events']} sent, {o['refused_during_outage']} "
          f"answered 503 and delivered again, {o['never_acknowledged']} never acknowledged; lost {o['lost']}, "
          f"doubled {o['doubled']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
