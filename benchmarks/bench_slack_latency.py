"""Slack answering latency: from a signed app_mention event POSTed to the bot's HTTP endpoint to
the bot's chat.postMessage arriving at the local mock Slack Web API (figures printed; nothing
asserted). Everything runs on 127.0.0.1: the real slack-bolt App served by csbot's WSGI server,
the real engine (demo KB), the real store (a temporary SQLite file), tests/slack's mock Slack.

Events are sent one after another (each waits for its answer), so the figures are per-event
latency without queueing: ack (HTTP response) and answer (chat.postMessage) p50/p99/max.

Usage: python benchmarks/bench_slack_latency.py [--events 200] [--home CSBOT_HOME]
Without --home the demo KB is ingested into a temporary home first (~30 s, not timed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
for _var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
    os.environ.pop(_var, None)

from bot.slack.app import build_app  # noqa: E402
from bot.slack.server import CsbotRequestHandler, RunningServer  # noqa: E402
from core.settings import Settings  # noqa: E402
from store import Store  # noqa: E402
from tests.slack.slack_mock import BOT_TOKEN, SIGNING_SECRET, MockSlack  # noqa: E402
from tests.slack.slack_sender import SlackSender  # noqa: E402

QUESTIONS = [line.strip() for line in (REPO / "demo" / "questions.txt").read_text().splitlines() if line.strip()] + [
    "How do I reset my password?", "my card was charged twice", "how long does shipping take",
    "can I get a refund?", "how do I cancel my subscription", "the deploy broke staging again",
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--home", help="a CSBOT_HOME with a champion model (default: build the demo KB)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    from bot.runtime import open_engine

    with tempfile.TemporaryDirectory(prefix="csbot-bench-slack-") as tmp:
        home = Path(args.home) if args.home else Path(tmp) / "home"
        if not args.home:
            from training.ingest import ingest

            print("ingesting the demo KB (not timed)...", file=sys.stderr)
            ingest([REPO / "demo" / "kb"], Settings.load(env={}, home=home))
        mock = MockSlack()
        settings = Settings.load(env={}, home=home, slack_api_url=mock.api_url, slack_bot_token=BOT_TOKEN,
                                 slack_signing_secret=SIGNING_SECRET)
        engine = open_engine(settings)
        store = Store(Path(tmp) / "bench.sqlite3", salt="bench", daily_vote_cap=None)  # never the real store
        app = build_app(settings, engine, store)
        server = RunningServer(CsbotRequestHandler(app, signing_secret=SIGNING_SECRET))
        sender = SlackSender(server.url)
        ack_ms, answer_ms = [], []
        try:
            for i in range(args.warmup + args.events):
                text = QUESTIONS[i % len(QUESTIONS)]
                message = mock.add_message("CBENCH", f"<@UBOT> {text}", user=f"U{i % 17}")
                event = {"type": "app_mention", "user": message["user"], "text": message["text"],
                         "ts": message["ts"], "channel": "CBENCH", "event_ts": message["ts"]}
                started = time.monotonic()
                status, _ = sender.event(event)
                acked = time.monotonic()
                [*_, call] = mock.wait_for("chat.postMessage", i + 1, timeout=60)
                assert status == 200 and call.args["thread_ts"] == message["ts"]
                if i >= args.warmup:
                    ack_ms.append((acked - started) * 1000)
                    answer_ms.append((call.time - started) * 1000)
        finally:
            server.stop()
            mock.stop()
            store.close()

    figures = {
        "events": len(answer_ms), "model_version": engine.model_version, "cpus": os.cpu_count(),
        "ack_ms": {"p50": percentile(ack_ms, 50), "p99": percentile(ack_ms, 99), "max": max(ack_ms)},
        "answer_ms": {"p50": percentile(answer_ms, 50), "p99": percentile(answer_ms, 99), "max": max(answer_ms),
                      "mean": statistics.fmean(answer_ms)},
    }
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"{figures['events']} app_mention events, sequential, model {figures['model_version']},"
              f" {figures['cpus']} CPUs")
        for name, label in (("ack_ms", "HTTP ack"), ("answer_ms", "event -> chat.postMessage")):
            f = figures[name]
            print(f"  {label:28s} p50 {f['p50']:7.1f} ms   p99 {f['p99']:7.1f} ms   max {f['max']:7.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
