"""Slack intake under load: `csbot serve --http` in a subprocess (waitress, the durable inbox, the real
engine on the demo KB) driven by signed app_mention events on 127.0.0.1, answering into the local
mock Slack Web API (tests/slack). Nothing leaves the machine; figures are printed, nothing asserted.

Phases (each event a new question from a new user in channel CLOAD):
1. steady: --rate events/s (default 20) for --duration seconds (default 180), sent open-loop;
2. burst: --burst events (default 200) sent at once on as many connections;
3. overload: --overload-rate events/s (default 40) for --overload-duration seconds (default 45).
Per phase: ack (HTTP 200) p50/p99, event -> chat.postMessage p50/p99 of the answered events, how
many got the busy note instead (the shedding policy, docs/slack.md), connection errors, lost
(acknowledged, but neither answered nor busy-noted once the inbox drained), doubled (answered more
than once), and the server's RSS at start and at the end.

Usage: python benchmarks/bench_slack_load.py [--duration 180] [--overload-duration 45] [--home HOME] [--json]
Without --home the demo KB is ingested into a temporary home first (encoder fine-tuning off; not timed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from core.runtime import quiet_libraries  # noqa: E402

quiet_libraries()  # before the libraries load: no progress bars of theirs among the figures
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
for _var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
    os.environ.pop(_var, None)
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"

from benchmarks.demo_home import bench_home  # noqa: E402
from tests.slack.serve_process import ServeProcess  # noqa: E402
from tests.slack.slack_mock import MockSlack  # noqa: E402

QUESTIONS = [line.strip() for line in (REPO / "demo" / "questions.txt").read_text().splitlines() if line.strip()] + [
    "How do I reset my password?", "my card was charged twice", "how long does shipping take",
    "can I get a refund?", "how do I cancel my subscription",
]
CHANNEL = "CLOAD"


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Load:
    def __init__(self, server: ServeProcess, mock: MockSlack):
        self.server, self.mock = server, mock
        self.sent: dict[str, dict] = {}  # user -> {ts, sent, acked, status, error}
        self.lock = threading.Lock()
        self.count = 0

    def send(self, phase: str, i: int, server: ServeProcess | None = None) -> None:
        server = server or self.server
        user = f"U{phase[0].upper()}{i:06d}"
        text = QUESTIONS[i % len(QUESTIONS)]
        message = self.mock.add_message(CHANNEL, f"<@UBOT> {text}", user=user)
        event = {"type": "app_mention", "user": user, "text": message["text"], "ts": message["ts"],
                 "channel": CHANNEL, "event_ts": message["ts"]}
        record = {"phase": phase, "ts": message["ts"], "sent": time.monotonic(), "status": None, "user": user,
                  "text": message["text"], "event_id": f"EvLOAD{user}"}
        with self.lock:
            self.sent[user] = record
        try:
            record["status"] = server.sender.event(event, event_id=record["event_id"])[0]
        except OSError as exc:
            record["error"] = type(exc).__name__
        record["acked"] = time.monotonic()

    def open_loop(self, phase: str, rate: float, seconds: float) -> None:
        n = int(rate * seconds)
        start = time.monotonic()
        with ThreadPoolExecutor(64) as pool:
            for i in range(n):
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                pool.submit(self.send, phase, i)

    def burst(self, phase: str, n: int) -> None:
        barrier = threading.Barrier(n)

        def one(i):
            barrier.wait()
            self.send(phase, i)

        with ThreadPoolExecutor(n) as pool:
            list(pool.map(one, range(n)))

    def figures(self, phase: str) -> dict:
        records = {u: r for u, r in self.sent.items() if r["phase"] == phase}
        by_thread: dict[str, list[float]] = {}
        for call in self.mock.calls_to("chat.postMessage"):
            if call.args.get("channel") == CHANNEL:
                by_thread.setdefault(call.args.get("thread_ts"), []).append(call.time)
        busy = {c.args.get("user") for c in self.mock.calls_to("chat.postEphemeral")}
        acked = [r for r in records.values() if r["status"] == 200]
        answered = [by_thread[r["ts"]][0] - r["sent"] for r in acked if r["ts"] in by_thread]
        acks = [r["acked"] - r["sent"] for r in acked]
        lost = [u for u, r in records.items() if r["status"] == 200 and r["ts"] not in by_thread and u not in busy]
        return {
            "events": len(records), "acked": len(acked),
            "connection_errors": sum(1 for r in records.values() if r.get("error")),
            "other_status": sum(1 for r in records.values() if r["status"] not in (200, None)),
            "ack_ms": {"p50": _ms(percentile(acks, 50)), "p99": _ms(percentile(acks, 99)), "max": _ms(max(acks, default=None))},
            "answered": len(answered), "busy_noted": sum(1 for u in records if u in busy),
            "answer_ms": {"p50": _ms(percentile(answered, 50)), "p99": _ms(percentile(answered, 99)),
                          "max": _ms(max(answered, default=None))},
            "lost": len(lost), "doubled": sum(1 for r in records.values() if len(by_thread.get(r["ts"], [])) > 1),
        }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=20)
    parser.add_argument("--duration", type=float, default=180, help="seconds of the steady phase")
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--overload-rate", type=float, default=40)
    parser.add_argument("--overload-duration", type=float, default=45)
    parser.add_argument("--workers", type=int, default=None, help="slack_workers (default: the setting's default)")
    parser.add_argument("--home", help="a CSBOT_HOME with a champion model (default: build the demo KB)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="csbot-bench-load-") as tmp:
        home = bench_home(args.home, tmp, finetune_epochs=0)
        mock = MockSlack()
        extra = {"slack_workers": args.workers} if args.workers else {}
        server = ServeProcess(home, mock.api_url, Path(tmp) / "serve.log", **extra)
        try:
            health = server.wait_healthy()
            load = Load(server, mock)
            load.send("warmup", 0)
            server.wait_drained()
            rss = {"start": round(rss_mb(server.proc.pid), 1)}
            phases = {}
            for phase, run in (("steady", lambda: load.open_loop("steady", args.rate, args.duration)),
                               ("burst", lambda: load.burst("burst", args.burst)),
                               ("overload", lambda: load.open_loop("overload", args.overload_rate,
                                                                   args.overload_duration))):
                print(f"{phase}...", file=sys.stderr)
                run()
                server.wait_drained(timeout=600)
                phases[phase] = load.figures(phase)
                rss[f"after_{phase}"] = round(rss_mb(server.proc.pid), 1)
            final = server.health()
        finally:
            server.close()
            mock.stop()
    figures = {"model_version": health["model_version"], "cpus": os.cpu_count(), "workers": health["workers"],
               "phases": phases, "rss_mb": rss, "events_total": len(load.sent),
               "healthz_at_end": {k: final[k] for k in ("inbox", "shed", "late")},
               "settings": {"rate": args.rate, "duration": args.duration, "burst": args.burst,
                            "overload_rate": args.overload_rate, "overload_duration": args.overload_duration}}
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"csbot serve --http, model {figures['model_version']}, {figures['cpus']} CPUs, "
          f"{figures['workers']} workers, {figures['events_total']} events")
    for name, f in phases.items():
        print(f"  {name:9s} {f['events']:5d} sent, {f['acked']} acked, {f['connection_errors']} connection errors;"
              f" ack p50 {f['ack_ms']['p50']} ms p99 {f['ack_ms']['p99']} ms;"
              f" answered {f['answered']} (p50 {f['answer_ms']['p50']} ms, p99 {f['answer_ms']['p99']} ms),"
              f" busy note {f['busy_noted']}, lost {f['lost']}, doubled {f['doubled']}")
    print(f"  RSS MB: {rss}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
