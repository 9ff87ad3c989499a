"""`csbot report`: the team's weekly view of its help centre, or a watched channel's sentiment over a
period, as a PNG chart and a summary.

    csbot report [--weeks 4] [--until TIME] [--out week.png] [--json]
    csbot report --channel C0123 [--since 7d] [--until TIME] [--out chart.png] [--json]
    csbot report --channel airline --replay tweets.csv --time-column tweet_created \\
                 [--label-column airline_sentiment] [--topic-column negativereason] \\
                 [--where airline=Southwest] --since 7d --out chart.png

Without `--channel`: per seven-day week (the newest ends at --until), the questions asked, the answer
rate (answered without a hand-off), the hand-off rate, the 👍 share of the votes and the articles answered
most, then this week's content gaps (as `csbot gaps`); `--json` prints one object with `weeks` and `gaps`.

With `--channel`: reads the monitored messages the bot stored for the channel (offline: no Slack needed). `--since`
is a date/time or an age counted back from `--until` (default: now; with --replay, the newest
replayed message). The chart shows daily negative / neutral / positive counts, the daily negative
share, the spike alerts the detector raises over the period, and the top topics of the negative
messages. `--replay FILE` first stores a recorded stream (CSV or JSON Lines, replayed in time order
with its own timestamps) in the channel, scored by the engine unless `--label-column` gives the
sentiment; `--topic-column` gives the topic instead of the engine's intent.
"""

from __future__ import annotations

import argparse
import json
import sys

from core.errors import UserError
from core.output import out


def register(subparsers) -> None:
    p = subparsers.add_parser("report", help="the help centre's weekly view, or a channel's sentiment (offline)",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--channel", help="channel id whose monitored messages to report (default: the weekly view)")
    p.add_argument("--weeks", type=int, default=4, help="weeks in the weekly view (default 4)")
    p.add_argument("--since", default="7d", help="start: a date/time, or an age like 7d before --until (default 7d)")
    p.add_argument("--until", help="end: a date/time (default: now, or the newest replayed message)")
    p.add_argument("--out", "-o", help="write the PNG chart here")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--label", help="the channel's name on the chart (default: the channel id)")
    replay = p.add_argument_group("replaying a recorded stream into the channel first")
    replay.add_argument("--replay", metavar="FILE", help="CSV or JSON Lines file of messages with timestamps")
    replay.add_argument("--time-column", default="time", help="timestamp column (default: time)")
    replay.add_argument("--time-format", help="strptime format of the timestamps (default: ISO, unix, common)")
    replay.add_argument("--text-column", default="text", help="message text column (default: text)")
    replay.add_argument("--label-column", help="use this column's sentiment instead of the engine's")
    replay.add_argument("--topic-column", help="use this column as the topic instead of the engine's intent")
    replay.add_argument("--where", action="append", default=[], metavar="COLUMN=VALUE",
                        help="replay only rows where COLUMN equals VALUE (repeatable)")
    p.set_defaults(func=run)


def bounds(since_text: str, until_text: str | None, default_until):
    from bot.monitoring.spikes import as_utc
    from core.clock import is_duration, parse_duration, to_iso

    try:
        until = as_utc(to_iso(until_text)) if until_text else as_utc(default_until)
    except (TypeError, ValueError) as exc:
        raise UserError(f"cannot read --until {until_text!r}") from exc
    if is_duration(str(since_text)):
        since = until - parse_duration(since_text)
    else:
        since = as_utc(to_iso(since_text))
    if since >= until:
        raise UserError(f"--since ({since:%Y-%m-%d %H:%M}) must be before --until ({until:%Y-%m-%d %H:%M})")
    return since, until


def run(args) -> int:
    import datetime as dt

    from bot.monitoring.report import build_report, render_chart
    from bot.monitoring.spikes import SpikeConfig
    from core.settings import Settings
    from store import Store

    where = {}
    for item in args.where:
        if "=" not in item:
            raise UserError(f"--where needs COLUMN=VALUE, not {item!r}")
        key, value = item.split("=", 1)
        where[key.strip()] = value
    if not args.channel:
        if args.replay:
            raise UserError("--replay needs --channel: the channel to replay the messages into")
        return run_weekly(args)
    settings = Settings.load()
    config = SpikeConfig.from_settings(settings)
    default_until = dt.datetime.now(dt.timezone.utc)
    store = Store.from_settings(settings)
    try:
        if args.replay:
            default_until = _replay(args, settings, store, where) or default_until
        since, until = bounds(args.since, args.until, default_until)
        summary = build_report(store, args.channel, since, until, config=config, label=args.label)
    finally:
        store.close()
    if args.out:
        render_chart(summary, args.out)
        summary["chart"] = str(args.out)
    if args.json:
        out(json.dumps(summary, ensure_ascii=False))
    else:
        out(describe(summary))
        if args.out:
            print(f"chart written to {args.out}", file=sys.stderr)
    return 0


def run_weekly(args) -> int:
    import datetime as dt

    from bot.monitoring.weekly import collect_gaps, describe_weekly, render_weekly_chart, weekly_view
    from bot.runtime import open_engine
    from core.settings import Settings
    from store import Store

    if args.weeks < 1:
        raise UserError(f"--weeks must be at least 1, not {args.weeks}")
    settings = Settings.load()
    _, until = bounds("7d", args.until, dt.datetime.now(dt.timezone.utc))
    engine = open_engine(settings)
    titles = dict(engine.catalogue().titles())
    store = Store.from_settings(settings)
    try:
        view = weekly_view(store, until, weeks=args.weeks, titles=titles)
        gaps, gap_summary = collect_gaps(store, engine, until - dt.timedelta(days=7), until)
    finally:
        store.close()
    if args.out:
        render_weekly_chart(view, gaps, args.out)
    if args.json:
        view.update(gaps=[g.to_json() for g in gaps[:10]], gap_summary=gap_summary)
        if args.out:
            view["chart"] = str(args.out)
        out(json.dumps(view, ensure_ascii=False))
        return 0
    lines = [f"the help centre, weeks ending {view['until'][:16].replace('T', ' ')} UTC:", *describe_weekly(view)]
    lines.append(f"  content gaps this week: {len(gaps)}" + (":" if gaps else ""))
    for gap in gaps[:5]:
        lines.append(f"    {gap.size:>3}  {gap.title}" + (f" (nearest: {gap.nearest_title})" if gap.nearest_title else ""))
    out("\n".join(lines))
    if args.out:
        print(f"chart written to {args.out}", file=sys.stderr)
    return 0


def _replay(args, settings, store, where):
    from bot.monitoring.watch import read_stream, replay

    rows = read_stream(args.replay, time_column=args.time_column, text_column=args.text_column,
                       label_column=args.label_column, topic_column=args.topic_column, where=where or None,
                       time_format=args.time_format)
    if not rows:
        raise UserError(f"no rows to replay in {args.replay}" + (f" matching {where}" if where else ""))
    engine = None
    if not args.label_column or not args.topic_column:
        from bot.runtime import open_engine

        engine = open_engine(settings)
    replay(engine, store, rows, args.channel, check=False)
    print(f"replayed {len(rows):,} messages into {args.channel} ({rows[0].time:%Y-%m-%d %H:%M} – "
          f"{rows[-1].time:%Y-%m-%d %H:%M} UTC)", file=sys.stderr)
    return rows[-1].time


def describe(summary: dict) -> str:
    """The summary as a few readable lines."""
    c = summary["counts"]
    lines = [f"{summary['label']}: {summary['since'][:16].replace('T', ' ')} – {summary['until'][:16].replace('T', ' ')} UTC"]
    if not summary["total"]:
        lines.append("  no monitored messages in this period")
        return "\n".join(lines)
    lines.append(f"  {summary['total']:,} messages, {summary['negative_share']:.0%} negative "
                 f"({c['negative']:,} negative / {c['neutral']:,} neutral / {c['positive']:,} positive)")
    for day in summary["daily"]:
        if day["total"]:
            lines.append(f"  {day['date']}  {day['total']:>5,}  {day['negative_share']:>4.0%} negative")
    topics = ", ".join(f"{t['topic']} ({t['count']})" for t in summary["top_negative_topics"])
    lines.append(f"  top negative topics: {topics or 'none'}")
    if summary["alerts"]:
        lines.append("  spike alerts:")
        for a in summary["alerts"]:
            lines.append(f"    {a['now'][:16].replace('T', ' ')} UTC: {a['recent_negative']} of {a['recent_n']} negative "
                         f"({a['recent_share']:.0%}) vs {a['baseline_share']:.0%} baseline")
    else:
        lines.append("  spike alerts: none")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`python -m bot.commands.report ...`: the same as `csbot report ...`."""
    from core.errors import CsbotError
    from core.settings import ConfigError

    parser = argparse.ArgumentParser(prog="csbot")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args) or 0)
    except (CsbotError, ConfigError) as exc:
        print(f"csbot report: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
