"""`csbot gaps`: what customers asked that no article answered, grouped, largest first.

    csbot gaps [--since 7d] [--until TIME] [--json] [--out gaps.png] [--min-size N] [--limit 10] [--distance D]

Reads the answers the bot stored for the period (questions are stored redacted) with their votes and
corrections; a question counts when it was handed off, voted 👎, or corrected to another article.
Each gap shows its size, the change against the period before, example questions, the nearest
article and whether that article exists but misses this (`article_misses`) or none does
(`no_article`), key phrases and a suggested title. `--json` prints one JSON object per gap, largest
first (keys: size, answer_ids, examples, nearest_doc_id, nearest_title, nearest_score, kind, title,
keywords, reasons, previous, change; keys are only ever added). docs/knowledge-base.md, "Content gaps".
"""

from __future__ import annotations

import json
import sys

from core.output import out


def register(subparsers) -> None:
    from training.gaps import GapParams

    p = subparsers.add_parser("gaps", help="what customers asked that no article answered (offline)",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--since", default="7d", help="start: a date/time, or an age like 7d before --until (default 7d)")
    p.add_argument("--until", help="end: a date/time (default: now)")
    p.add_argument("--json", action="store_true", help="one JSON object per gap (JSON Lines), largest first")
    p.add_argument("--out", "-o", help="write a PNG chart of the gaps here")
    p.add_argument("--min-size", type=int, default=None, help=f"questions a gap needs (default {GapParams.min_size})")
    p.add_argument("--limit", type=int, default=10, help="gaps shown (default 10)")
    p.add_argument("--distance", type=float, default=None,
                   help=("how far apart (cosine distance, 0-2) the questions of one gap may be on average "
                         f"(default {GapParams.distance})"))
    p.set_defaults(func=run)


def check(args) -> None:
    """One line (exit 2) for a value argparse accepts but gaps cannot use."""
    from core.errors import UserError

    for flag, value in (("--min-size", args.min_size), ("--limit", args.limit)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be at least 1, not {value}")
    if args.distance is not None and not 0.0 < args.distance < 2.0:
        raise UserError(f"--distance must be between 0 and 2 (a cosine distance), not {args.distance}")


def run(args) -> int:
    import dataclasses
    import datetime as dt

    from bot.commands.report import bounds
    from bot.monitoring.weekly import collect_gaps
    from bot.runtime import open_engine
    from core.settings import Settings
    from store import Store
    from training.gaps import GapParams

    check(args)
    settings = Settings.load()
    since, until = bounds(args.since, args.until, dt.datetime.now(dt.timezone.utc))
    chosen = {k: v for k, v in (("min_size", args.min_size), ("distance", args.distance)) if v is not None}
    params = dataclasses.replace(GapParams(), **chosen)
    store = Store.from_settings(settings)
    try:
        gaps, summary = collect_gaps(store, open_engine(settings), since, until, params)
    finally:
        store.close()
    shown = gaps[:args.limit]
    if args.out:
        render_chart(shown, summary, args.out)
    if args.json:
        for gap in shown:
            out(json.dumps(gap.to_json(), ensure_ascii=False))
    else:
        out(describe(shown, summary))
    if args.out:
        print(f"chart written to {args.out}", file=sys.stderr)
    return 0


def describe(gaps, summary: dict) -> str:
    head = (f"{summary['since'][:16].replace('T', ' ')} – {summary['until'][:16].replace('T', ' ')} UTC: "
            f"{summary['questions']:,} questions, {summary['unmet']:,} unmet "
            f"({summary['chatter']:,} of them chatter), {summary['in_gaps']:,} in {summary['gaps']} gaps")
    lines = [head]
    if not gaps:
        lines.append("  no gaps: every unmet question stands alone, or none went unmet")
    for n, gap in enumerate(gaps, 1):
        change = f"{gap.change:+d} vs the period before" if gap.previous else "new"
        where = (f"{gap.nearest_title or gap.nearest_doc_id} misses this" if gap.kind == "article_misses"
                 else "no article" + (f" (nearest: {gap.nearest_title or gap.nearest_doc_id})" if gap.nearest_doc_id else ""))
        lines.append(f"{n}. {gap.title} — {gap.size} questions, {change}; {where}")
        if gap.keywords:
            lines.append(f"   key phrases: {', '.join(gap.keywords)}")
        for example in gap.examples:
            lines.append(f"   · {example}")
    return "\n".join(lines)


def render_chart(gaps, summary: dict, out_path) -> None:
    """Horizontal bars: each gap's questions this period beside the period before."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels = [g.title if len(g.title) <= 48 else g.title[:47] + "…" for g in gaps][::-1]
    figure = Figure(figsize=(9, 1.2 + 0.45 * max(len(gaps), 1)))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot(1, 1, 1)
    ys = range(len(gaps))
    ax.barh([y + 0.2 for y in ys], [g.size for g in gaps][::-1], height=0.4, color="#d9534f", label="this period")
    ax.barh([y - 0.2 for y in ys], [g.previous for g in gaps][::-1], height=0.4, color="#bbbbbb", label="period before")
    ax.set_yticks(list(ys), labels, fontsize=8)
    ax.set_xlabel("unmet questions")
    ax.set_title(f"Content gaps {summary['since'][:10]} – {summary['until'][:10]}", fontsize=10)
    if gaps:
        ax.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(out_path, dpi=110)
