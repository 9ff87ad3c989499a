"""Composed answers (issue 15): speed of the embedded composer and faithfulness, select vs compose.

    python benchmarks/bench_compose.py [--questions 30] [--stackfaq 40] [--offtopic 30] [--backends llama-cpp,transformers]
                                       [--json OUT]

(a) Speed, on the demo KB's questions, one thread (torch_threads = 1, as `csbot serve` runs): per
    backend, time to the first token, tokens per second after it (pieces as the backend streams
    them; llama.cpp streams one token per piece) and a whole composition, medians and p90; the floor
    is the select-mode answer of the same question in the same run (the ratio says what composing
    costs on top).
(b) Faithfulness on held-out questions — the demo KB's example questions and StackFAQ queries
    (rephrase group 1) against a StackFAQ help centre built from its threads, plus CLINC150
    out-of-scope questions. For select and compose mode: token-F1 and ROUGE-L of the answer shown
    against the gold article's text; for compose, how often it composed (the guard's pass rate of
    the compositions tried), the fall-back reasons, citation correctness (a composed answer cites the
    gold article's section), invented numbers or URLs in posted answers (re-checked against every
    section the model was given: 0 by construction when the guard is on), and the off-topic decline
    rate of each mode.
(c) Not here yet: the simulated round of thumbs → retrain → (b) again, and the poisoned round. A
    composer retrain costs about 15 minutes of CPU on this VM (docs/retrain.md, "Costs on CPU"); the
    retrain's own figures on the demo KB and tests/training/test_compose_train.py's poisoned round
    stand in for it (docs/benchmarks.md, "Composed answers").

The targets (2 cores, embedded default): first token ≤ 1.5 s, ≥ 20 tokens/s, a whole answer ≤ 6 s;
guard pass rate ≥ 95 % on answerable held-out questions; 0 invented numbers or URLs posted;
off-topic abstention ≥ select mode's decline rate.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from core.runtime import quiet_libraries  # noqa: E402

quiet_libraries()


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def med(values):
    return statistics.median(values) if values else None


def fmt(x, spec=".2f", none="-"):
    return none if x is None else format(x, spec)


# ----- (a) speed ------------------------------------------------------------------------------------
def speed(home: Path, questions: list[str], backend: str, max_new_tokens: int) -> dict:
    from core.settings import Settings
    from serving.compose import STOP, build_messages
    from serving.engine import Engine

    engine = Engine(Settings.load(env={}, home=home, compose_backend=backend, torch_threads=1))
    composer = engine.composer()
    engine.compose(engine.answer(questions[0]))  # warm-up: load, first prompt
    firsts, rates, wholes, selects, tokens = [], [], [], [], []
    for question in questions:
        t0 = time.perf_counter()
        answer = engine.answer(question)
        selects.append(time.perf_counter() - t0)
        if answer.handoff:
            continue
        messages = build_messages(question, engine.passages(answer), [])
        t0, first, n = time.perf_counter(), None, 0
        for _ in composer.model.stream(messages, max_new_tokens=max_new_tokens, stop=STOP):
            n += 1
            if first is None:
                first = time.perf_counter() - t0
        whole = time.perf_counter() - t0
        firsts.append(first or whole)
        wholes.append(whole)
        tokens.append(n)
        if n > 1 and whole > first:
            rates.append((n - 1) / (whole - first))
    return {"backend": backend, "questions": len(wholes), "first_token_p50": med(firsts), "first_token_p90": pct(firsts, 0.9),
            "tokens_per_s_p50": med(rates), "whole_p50": med(wholes), "whole_p90": pct(wholes, 0.9),
            "tokens_p50": med(tokens), "select_p50": med(selects),
            "ratio_whole_to_select": (med(wholes) / med(selects)) if wholes and selects else None}


# ----- (b) faithfulness -----------------------------------------------------------------------------
def faithfulness(home: Path, rows: list[tuple[str, str | None]], name: str) -> dict:
    """rows: (question, gold doc id or None for off-topic)."""
    from training.compose_gate import rouge_l, token_f1

    from core.settings import Settings
    from serving.compose import _unsupported
    from serving.engine import Engine

    engine = Engine(Settings.load(env={}, home=home, torch_threads=1, compose_first_token_budget_seconds=30,
                                  compose_latency_budget_seconds=60))
    docs = engine.catalogue().articles
    out = {"set": name, "answerable": 0, "offtopic": 0, "select_f1": [], "compose_f1": [], "select_rouge": [],
           "compose_rouge": [], "tried": 0, "composed": 0, "abstained": 0, "fallback_reasons": {},
           "cites_gold": 0, "invented_posted": 0, "select_declined_offtopic": 0, "compose_declined_offtopic": 0,
           "seconds": []}
    for question, gold in rows:
        select = engine.answer(question)
        t0 = time.perf_counter()
        composed = engine.compose(select)
        out["seconds"].append(time.perf_counter() - t0)
        if gold is None:
            out["offtopic"] += 1
            out["select_declined_offtopic"] += select.handoff
            out["compose_declined_offtopic"] += composed.handoff
            continue
        out["answerable"] += 1
        reference = docs[gold].answer if gold in docs else ""
        out["select_f1"].append(token_f1(select.text if not select.handoff else "", reference))
        out["select_rouge"].append(rouge_l(select.text if not select.handoff else "", reference))
        shown = composed.text if not composed.handoff else ""
        out["compose_f1"].append(token_f1(shown, reference))
        out["compose_rouge"].append(rouge_l(shown, reference))
        report = composed.composition
        if report is None:
            continue
        out["tried"] += 1
        outcome = report["outcome"]
        if outcome == "composed":
            out["composed"] += 1
            cited = report["guard"]["cited"] if report.get("guard") else []
            passages = {p["n"]: p["doc_id"] for p in report["passages"]}
            out["cites_gold"] += any(passages.get(n) == gold for n in cited)
            sections = engine.passages(select)
            haystack = [p.header() + "\n" + p.text for p in sections] + [question]
            invented = [p for p in _unsupported(composed.text, haystack) if p.startswith(("number", "URL", "e-mail"))]
            out["invented_posted"] += bool(invented)
        elif outcome == "abstained":
            out["abstained"] += 1
        else:
            reason = report["reason"].split(":")[0] if report["reason"].startswith("guard") else report["reason"].split(" after")[0]
            key = report["reason"].split(" is not")[0].split(" ")[1] if report["reason"].startswith("guard: ") else reason
            out["fallback_reasons"][key] = out["fallback_reasons"].get(key, 0) + 1
    summary = {k: v for k, v in out.items() if not isinstance(v, list)}
    for key in ("select_f1", "compose_f1", "select_rouge", "compose_rouge"):
        summary[key] = statistics.fmean(out[key]) if out[key] else None
    summary["compose_seconds_p50"] = med(out["seconds"])
    summary["guard_pass_rate"] = out["composed"] / out["tried"] if out["tried"] else None
    summary["citation_correct"] = out["cites_gold"] / out["composed"] if out["composed"] else None
    summary["select_decline_offtopic"] = out["select_declined_offtopic"] / out["offtopic"] if out["offtopic"] else None
    summary["compose_decline_offtopic"] = out["compose_declined_offtopic"] / out["offtopic"] if out["offtopic"] else None
    return summary


def print_faithfulness(rows: list[dict]) -> None:
    print("\n(b) faithfulness on held-out questions (F1 / ROUGE-L of the answer shown vs the gold article)")
    print(f"{'set':<12} {'n':>4} {'select F1':>9} {'compose F1':>10} {'select RL':>9} {'compose RL':>10} "
          f"{'guard pass':>10} {'cites gold':>10} {'invented':>8} {'off-topic declined sel/comp':>28}  fall-backs")
    for r in rows:
        print(f"{r['set']:<12} {r['answerable']:>4} {fmt(r['select_f1'], '.3f'):>9} {fmt(r['compose_f1'], '.3f'):>10} "
              f"{fmt(r['select_rouge'], '.3f'):>9} {fmt(r['compose_rouge'], '.3f'):>10} "
              f"{fmt(r['guard_pass_rate'], '.0%'):>10} {fmt(r['citation_correct'], '.0%'):>10} {r['invented_posted']:>8} "
              f"{fmt(r['select_decline_offtopic'], '.0%'):>13} / {fmt(r['compose_decline_offtopic'], '.0%'):<12}  "
              f"{json.dumps(r['fallback_reasons'])}")


def build_stackfaq_home(tmp: Path) -> Path:
    from helpcentre_data import load_stackfaq_faqs, write_stackfaq

    from core.settings import Settings
    from training.ingest import ingest

    kb = tmp / "stackfaq-kb"
    write_stackfaq(kb, load_stackfaq_faqs())
    home = tmp / "stackfaq-home"
    print("ingesting StackFAQ (not timed)...", file=sys.stderr)
    ingest([kb], Settings.load(env={}, home=home))
    return home


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--home", help="a demo CSBOT_HOME to use (else one is built)")
    p.add_argument("--questions", type=int, default=30, help="demo KB questions for (a) and (b)")
    p.add_argument("--stackfaq", type=int, default=40, help="StackFAQ queries for (b) (0: skip)")
    p.add_argument("--offtopic", type=int, default=30, help="CLINC150 out-of-scope questions per set for (b)")
    p.add_argument("--backends", default="llama-cpp,transformers")
    p.add_argument("--max-new-tokens", type=int, default=160)
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--skip-faithfulness", action="store_true")
    p.add_argument("--json", help="write the figures to this file")
    args = p.parse_args()

    from demo_home import bench_home
    from helpcentre_data import load_clinc_oos, load_stackfaq_queries

    tmp = Path(tempfile.mkdtemp(prefix="csbot-bench-compose-"))
    results: dict = {}
    try:
        home = bench_home(args.home, tmp)
        from core.settings import Settings
        from serving.engine import Engine

        docs = Engine(Settings.load(env={}, home=home)).catalogue().articles
        demo_rows = [(doc.questions[0], doc.id) for doc in docs.values() if doc.questions][: args.questions]
        if not args.skip_speed:
            print("(a) speed: one thread; medians over the demo questions; select = the select answer of the same "
                  "question in the same run")
            print(f"{'backend':<13} {'n':>3} {'first token p50/p90':>20} {'tokens/s':>9} {'whole p50/p90':>15} "
                  f"{'tokens':>6} {'select p50':>10} {'whole / select':>14}")
            results["speed"] = []
            for backend in [b for b in args.backends.split(",") if b]:
                r = speed(home, [q for q, _ in demo_rows], backend, args.max_new_tokens)
                results["speed"].append(r)
                print(f"{backend:<13} {r['questions']:>3} {fmt(r['first_token_p50']):>9}s/{fmt(r['first_token_p90'])}s "
                      f"{fmt(r['tokens_per_s_p50'], '.1f'):>9} {fmt(r['whole_p50']):>7}s/{fmt(r['whole_p90'])}s "
                      f"{fmt(r['tokens_p50'], '.0f'):>6} {fmt(r['select_p50'] * 1000 if r['select_p50'] else None, '.1f'):>8}ms "
                      f"{fmt(r['ratio_whole_to_select'], '.0f'):>13}×", flush=True)
        if not args.skip_faithfulness:
            offtopic = load_clinc_oos(n=args.offtopic)
            sets = [("demo", home, demo_rows + [(q, None) for q in offtopic])]
            if args.stackfaq:
                queries = load_stackfaq_queries(group=1)[:: max(1, len(load_stackfaq_queries(group=1)) // args.stackfaq)]
                sets.append(("stackfaq", build_stackfaq_home(tmp), queries[: args.stackfaq] + [(q, None) for q in offtopic]))
            results["faithfulness"] = [faithfulness(h, rows, name) for name, h, rows in sets]
            print_faithfulness(results["faithfulness"])
    finally:
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
