"""Slack answering latency: from a signed event POSTed to the bot's HTTP endpoint to what the bot
sends the local mock Slack Web API (figures printed; nothing asserted). Everything runs on
127.0.0.1: the real slack-bolt App served by csbot's WSGI server, the real engine (demo KB), the
real store (a temporary SQLite file per app), tests/slack's mock Slack.

Events are sent one after another (each waits for its answer), so the figures are per-event
latency without queueing. Four apps on the same engine and mock, taking turns event by event:
* mention: an app_mention in a channel, answered by chat.postMessage (today's post; unchanged);
* DM, streamed (`slack_stream = true`): the first visible sign of work (assistant.threads.setStatus),
  the first streamed text (chat.startStream) and the whole answer (chat.stopStream);
* DM, posted (`slack_stream = false`): the status, then the whole answer by chat.postMessage;
* DM as answered before the agent surface (`slack_stream = false`, `slack_status = false`): one
  chat.postMessage, "today's post", which the DM ratios are against.
The floor, measured in the same run: the HTTP ack plus one bare Web API round trip to the mock
(`auth.test` from a WebClient), the least any visible reply could take; the first sign is
printed as a ratio to it, the whole answers as ratios to today's DM post.

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

from core.runtime import quiet_libraries  # noqa: E402

quiet_libraries()  # before the libraries load: no progress bars of theirs among the figures
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
for _var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
    os.environ.pop(_var, None)

from benchmarks.demo_home import bench_home  # noqa: E402
from bot.slack.app import build_app  # noqa: E402
from bot.slack.server import CsbotRequestHandler  # noqa: E402
from core.settings import Settings  # noqa: E402
from store import Store  # noqa: E402
from tests.slack.running_server import RunningServer  # noqa: E402
from tests.slack.slack_mock import BOT_TOKEN, SIGNING_SECRET, MockSlack  # noqa: E402
from tests.slack.slack_sender import SlackSender  # noqa: E402

QUESTIONS = [line.strip() for line in (REPO / "demo" / "questions.txt").read_text().splitlines() if line.strip()] + [
    "How do I reset my password?", "my card was charged twice", "how long does shipping take",
    "can I get a refund?", "how do I cancel my subscription", "the deploy broke staging again",
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def median(values: list[float]) -> float:
    return statistics.median(values)


def summary(values: list[float]) -> dict:
    return {"p50": percentile(values, 50), "p99": percentile(values, 99), "max": max(values),
            "mean": statistics.fmean(values)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--home", help="a CSBOT_HOME with a champion model (default: build the demo KB)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    from slack_sdk import WebClient

    from bot.runtime import open_engine

    with tempfile.TemporaryDirectory(prefix="csbot-bench-slack-") as tmp:
        home = bench_home(args.home, tmp)
        mock = MockSlack()
        engine = None
        servers, stores = [], []

        def serve(name: str, **overrides):
            nonlocal engine
            settings = Settings.load(env={}, home=home, slack_api_url=mock.api_url, slack_bot_token=BOT_TOKEN,
                                     slack_signing_secret=SIGNING_SECRET, **overrides)
            engine = engine or open_engine(settings)
            store = Store(Path(tmp) / f"bench-{name}.sqlite3", salt="bench", daily_vote_cap=None)  # never the real store
            server = RunningServer(CsbotRequestHandler(build_app(settings, engine, store), signing_secret=SIGNING_SECRET))
            servers.append(server)
            stores.append(store)
            return SlackSender(server.url)

        mention_app, streamed_app = serve("mention"), serve("streamed")
        posted_app = serve("posted", slack_stream=False)
        # The baseline: a DM answered with one post, without streaming or a status.
        today_app = serve("today", slack_stream=False, slack_status=False)
        client = WebClient(token=BOT_TOKEN, base_url=mock.api_url)
        f = {k: [] for k in ("ack", "mention_post", "stream_status", "stream_first_text", "stream_whole",
                             "posted_status", "posted_whole", "today_dm_post", "round_trip")}

        def first_call(method: str, thread_ts: str, key: str = "thread_ts"):
            for call in mock.calls_to(method):
                if call.args.get(key) == thread_ts:
                    return call
            return None

        def wait_call(method: str, thread_ts: str, key: str = "thread_ts"):
            deadline = time.monotonic() + 60
            while (call := first_call(method, thread_ts, key)) is None:
                assert time.monotonic() < deadline, f"no {method} for {thread_ts}"
                time.sleep(0.002)
            return call

        try:
            for i in range(args.warmup + args.events):
                keep = i >= args.warmup
                text = QUESTIONS[i % len(QUESTIONS)]
                user = f"U{i % 17}"
                # today's post: a mention in a channel
                message = mock.add_message("CBENCH", f"<@UBOT> {text}", user=user)
                event = {"type": "app_mention", "user": user, "text": message["text"], "ts": message["ts"],
                         "channel": "CBENCH", "event_ts": message["ts"]}
                started = time.monotonic()
                status, _ = mention_app.event(event)
                acked = time.monotonic()
                call = wait_call("chat.postMessage", message["ts"])
                assert status == 200
                if keep:
                    f["ack"].append((acked - started) * 1000)
                    f["mention_post"].append((call.time - started) * 1000)
                # a DM, streamed and posted
                for name, sender in (("stream", streamed_app), ("posted", posted_app), ("today", today_app)):
                    channel = {"stream": "DSTREAM", "posted": "DPOST", "today": "DTODAY"}[name]
                    message = mock.add_message(channel, text, user=user)
                    event = {"type": "message", "channel_type": "im", "channel": channel, "event_ts": message["ts"],
                             **message}
                    started = time.monotonic()
                    assert sender.event(event)[0] == 200
                    if name == "stream":
                        end = None
                        deadline = time.monotonic() + 60
                        while end is None:
                            start_call = first_call("chat.startStream", message["ts"])
                            post_call = first_call("chat.postMessage", message["ts"])  # a hand-off: posted whole
                            if post_call is not None:
                                end, first_text = post_call, post_call
                            elif start_call is not None:
                                reply = next(m for m in mock.bot_replies(channel) if m.get("thread_ts") == message["ts"])
                                stop = first_call("chat.stopStream", reply["ts"], key="ts")
                                if stop is not None:
                                    end, first_text = stop, start_call
                            if end is None:
                                assert time.monotonic() < deadline, "no streamed answer"
                                time.sleep(0.002)
                        status_call = wait_call("assistant.threads.setStatus", message["ts"])
                        if keep:
                            f["stream_status"].append((status_call.time - started) * 1000)
                            f["stream_first_text"].append((first_text.time - started) * 1000)
                            f["stream_whole"].append((end.time - started) * 1000)
                    elif name == "today":
                        post_call = wait_call("chat.postMessage", message["ts"])
                        if keep:
                            f["today_dm_post"].append((post_call.time - started) * 1000)
                    else:
                        post_call = wait_call("chat.postMessage", message["ts"])
                        status_call = wait_call("assistant.threads.setStatus", message["ts"])
                        if keep:
                            f["posted_status"].append((status_call.time - started) * 1000)
                            f["posted_whole"].append((post_call.time - started) * 1000)
                started = time.monotonic()
                client.auth_test()
                if keep:
                    f["round_trip"].append((time.monotonic() - started) * 1000)
        finally:
            for server in servers:
                server.stop()
            mock.stop()
            for store in stores:
                store.close()

    floor = median(f["ack"]) + median(f["round_trip"])
    today = median(f["today_dm_post"])
    figures = {
        "events": len(f["ack"]), "model_version": engine.model_version, "cpus": os.cpu_count(),
        **{f"{name}_ms": summary(values) for name, values in f.items()},
        "floor_ms": floor,
        "ratios": {
            "first_sign_vs_floor": median(f["stream_status"]) / floor,
            "first_sign_vs_today_post": median(f["stream_status"]) / today,
            "first_text_vs_today_post": median(f["stream_first_text"]) / today,
            "stream_whole_vs_today_post": median(f["stream_whole"]) / today,
            "posted_whole_vs_today_post": median(f["posted_whole"]) / today,
            "mention_post_vs_today_dm_post": median(f["mention_post"]) / today,
        },
    }
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"{figures['events']} events of each kind, sequential, model {figures['model_version']},"
              f" {figures['cpus']} CPUs")
        rows = (("ack_ms", "HTTP ack"), ("round_trip_ms", "bare Web API round trip"),
                ("mention_post_ms", "mention -> chat.postMessage (today)"),
                ("stream_status_ms", "DM -> status (first sign)"), ("stream_first_text_ms", "DM -> first streamed text"),
                ("stream_whole_ms", "DM -> chat.stopStream (whole)"),
                ("posted_status_ms", "DM, stream off -> status"), ("posted_whole_ms", "DM, stream off -> postMessage"),
                ("today_dm_post_ms", "DM as before (no status/stream) -> post"))
        for name, label in rows:
            v = figures[name]
            print(f"  {label:36s} p50 {v['p50']:7.1f} ms   p99 {v['p99']:7.1f} ms   max {v['max']:7.1f} ms")
        print(f"  floor (ack p50 + round trip p50)     {floor:7.1f} ms")
        for name, value in figures["ratios"].items():
            print(f"  {name:36s} {value:5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
