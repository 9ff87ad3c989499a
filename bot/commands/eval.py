"""`csbot eval FILE [--json]`: score the served model on labelled rows (see training/evaluate.py)."""

from __future__ import annotations

import json

from core.output import out


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help="score the served model on labelled questions "
                              "(accuracy, macro-F1, per class, out-of-scope recall, the quoted section, a reliability table)")
    p.add_argument("file", help="CSV or JSONL rows {text, intent?, sentiment?, doc_id?, section?}; intent "
                   "out_of_scope = should decline; section = the section that answers it (id, or heading with doc_id)")
    p.add_argument("--version", help="score this model version instead of the champion")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    from bot.runtime import open_engine
    from training.evaluate import evaluate, read_eval_rows, report_text

    rows = read_eval_rows(args.file)
    engine = open_engine(version=args.version)
    report = evaluate(engine, rows)
    out(json.dumps(report) if args.json else report_text(report))
    return 0
