"""Section-level help centres: does the QUOTED SECTION answer the question, before any feedback and after
one simulated round of votes and a retrain, beside the floor measured in the same run.

The sets (benchmarks/data/helpcentres/<name>/, written for csbot: articles with several sections each,
customer questions labelled by the section that answers them, generic and near-domain off-topic
questions that name other products or ask for features the product lacks) are ingested with `csbot
ingest` (default settings). Group 1 of the questions (+ all off-topic ones) is scored:

  right            the answer's article and quoted section are the gold ones (the lead when gold is null)
  wrong_section    the right article, another section
  wrong_article    another article
  clarified_right  a clarifying question whose options include the gold article (clarified_other: not)
  handoff          handed off / declined
  off-topic declined, generic and near-domain apart

The floor: bare frozen all-MiniLM-L6-v2, the question's cosine to each section's text (prefixed with
its heading path, as the index embeds it), the best section when its cosine is >= 0.5, else decline.

A reliability table (the answered in-scope questions binned by confidence, each bin's mean confidence
beside its right-article and right-section shares) shows whether confidence means what it says.

One simulated round: group 0 is asked once through the engine and stored; 25 simulated agents vote
as a customer judges the answer (👍 when the quoted section answers the question; on 70 % of the rest
👎 + a correction — the gold section (`doc#section`, as the Slack modal's section pick stores it) when
the article was right, else the gold article; plain 👎 otherwise), imported with `csbot feedback --file --json`,
then `python training/retrain.py --json`. Group 1 is scored again, and every group-0 answer voted 👍 is
asked again: `moved_after_up` counts those whose quoted section changed.

Usage: python benchmarks/bench_sections.py [--sets saas,delivery] [--no-round] [--json] [--keep]
About 4-6 min per set on a 2-core machine without the round; the retrain adds 3-8 min.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_helpcentre import (CORRECTION_P, USERS, Floor, clarify_options, csbot_cmd, engine_answers,  # noqa: E402
                              ingest_cli, run_cli)

DATA = REPO / "benchmarks" / "data" / "helpcentres"
def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


TARGETS = {"right": ">= 80 %", "wrong_article": "<= 5 % (<= 7 % where siblings abound)", "clarified": "<= 8 %",
           "offtopic_generic_declined": ">= 90 %", "offtopic_near_domain_declined": ">= 90 %",
           "after_right": ">= 93 %", "after_wrong_article": "<= 3 %", "moved_after_up": "0"}


def load_set(name: str) -> tuple[Path, list[dict], list[dict]]:
    root = DATA / name
    questions = [json.loads(line) for line in (root / "questions.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    offtopic = [json.loads(line) for line in (root / "offtopic.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    return root / "articles", questions, offtopic


def heading_of(answer: dict) -> str | None:
    return ((answer.get("section") or {}).get("heading")) or None


def outcome(answer: dict, gold: dict) -> str:
    options = clarify_options(answer)
    if options is not None:
        return "clarified_right" if gold["doc_id"] in options else "clarified_other"
    if answer.get("handoff") or not answer.get("doc_id"):
        return "handoff"
    if answer["doc_id"] != gold["doc_id"]:
        return "wrong_article"
    return "right" if heading_of(answer) == gold["section"] else "wrong_section"


def score(answers: list[dict], questions: list[dict], offtopic: list[dict]) -> dict:
    n = len(questions)
    counts = Counter(outcome(a, q) for a, q in zip(answers[:n], questions))
    result = {k: round(counts[k] / n, 4) for k in ("right", "wrong_section", "wrong_article", "clarified_right",
                                                    "clarified_other", "handoff")}
    result["right_article"] = round((counts["right"] + counts["wrong_section"]) / n, 4)
    for kind in ("generic", "near_domain"):
        rows = [a for a, o in zip(answers[n:], offtopic) if o["kind"] == kind]
        declined = sum(bool(a.get("handoff")) and not clarify_options(a) for a in rows)
        result[f"offtopic_{kind}_declined"] = round(declined / len(rows), 4) if rows else None
    result["n"], result["n_offtopic"] = n, len(offtopic)
    return result


def reliability(answers: list[dict], questions: list[dict]) -> dict:
    """Answered (not handed off, not clarifying) in-scope questions binned by confidence."""
    from training.evaluate import RELIABILITY_EDGES

    pairs = [(a, q) for a, q in zip(answers, questions) if not a.get("handoff") and not clarify_options(a)]
    bins, ece = [], 0.0
    for low, high in zip(RELIABILITY_EDGES, RELIABILITY_EDGES[1:]):
        inside = [(a, q) for a, q in pairs if low <= a["confidence"] < high]
        if not inside:
            continue
        confidence = sum(a["confidence"] for a, _ in inside) / len(inside)
        right = sum(outcome(a, q) == "right" for a, q in inside) / len(inside)
        article = sum(outcome(a, q) in ("right", "wrong_section") for a, q in inside) / len(inside)
        ece += len(inside) / max(1, len(pairs)) * abs(article - confidence)
        bins.append({"low": low, "high": min(high, 1.0), "n": len(inside), "confidence": round(confidence, 4),
                     "right_article": round(article, 4), "right_section": round(right, 4)})
    return {"n": len(pairs), "ece_article": round(ece, 4), "bins": bins}


def section_ids(articles: Path) -> dict[tuple[str, str | None], str]:
    """(article id, gold heading or None for the lead) → the section id the engine and the votes use."""
    from retrieval.kb import load_documents, split_sections

    return {(doc.id, section.heading or None): section.id
            for doc in load_documents([articles]) for section in split_sections(doc)}


def floor_candidates(articles: Path) -> list[tuple[str, str | None, str]]:
    from retrieval.kb import load_documents, split_sections

    out = []
    for doc in load_documents([articles]):
        for section in split_sections(doc):
            out.append((doc.id, section.heading or None, " › ".join(section.path) + ": " + section.text))
    return out


def simulate_round(home: Path, traffic: list[dict], seed: int,
                   sections: dict[tuple[str, str | None], str]) -> tuple[Path, dict, list[tuple[str, str | None]]]:
    """Ask group 0 once (engine + store), vote as agents do; returns the votes file, counts and the 👍'd
    (question, quoted heading) pairs."""
    from core.settings import Settings
    from serving.engine import Engine
    from store import Store

    rng = random.Random(seed)
    settings = Settings.load(env={}, home=home)
    engine = Engine(settings)
    users = [f"agent{i:02d}" for i in range(USERS)]
    votes, counts, upped = [], Counter(), []
    with Store.from_settings(settings) as store:
        answers = engine.answer_batch([q["question"] for q in traffic])
        for q, answer in zip(traffic, answers):
            user = rng.choice(users)
            store.record_answer(answer, user=user, origin="cli")
            data = answer.to_json()
            vote: dict = {"answer_id": answer.answer_id, "user": user}
            if not clarify_options(data) and outcome(data, q) == "right":
                vote["vote"] = "up"
                upped.append((q["question"], heading_of(data)))
            elif rng.random() < CORRECTION_P:
                # The right article, another part: agents pick the part in the modal's section menu.
                right_article = not clarify_options(data) and outcome(data, q) == "wrong_section"
                gold_section = sections.get((q["doc_id"], q["section"]))
                vote.update(vote="down", doc_id=gold_section if right_article and gold_section else q["doc_id"])
            else:
                vote["vote"] = "down"
            counts[vote["vote"] + ("+section" if "#" in vote.get("doc_id", "") else
                                   "+correction" if "doc_id" in vote else "")] += 1
            votes.append(vote)
    path = home.parent / f"{home.name}-votes.jsonl"
    path.write_text("".join(json.dumps(v) + "\n" for v in votes), encoding="utf-8")
    return path, dict(counts), upped


def run_set(root: Path, name: str, args) -> dict:
    articles, questions, offtopic = load_set(name)
    group1 = [q for q in questions if q["group"] == 1]
    group0 = [q for q in questions if q["group"] == 0]
    texts = [q["question"] for q in group1] + [o["question"] for o in offtopic]
    home = root / f"home-{name}"
    t0 = time.perf_counter()
    ingest = ingest_cli(articles, home, timeout=1800, logs=root, name=name)
    row: dict = {"ingest_s": round(time.perf_counter() - t0, 1), "ingest": ingest.get("used")}
    if not ingest.get("used"):
        row["error"] = "ingest failed"
        return row
    answers, seconds, version = engine_answers(home, texts)
    row["before"] = score(answers, group1, offtopic)
    row["reliability_before"] = reliability(answers[:len(group1)], group1)
    row["floor"] = score(Floor(floor_candidates(articles)).predict(texts), group1, offtopic)
    log(f"{name}: before {row['before']}")
    log(f"{name}: floor  {row['floor']}")
    if args.no_round:
        return row
    votes_path, counts, upped = simulate_round(home, group0, seed=7, sections=section_ids(articles))
    imported = run_cli(csbot_cmd("feedback", "--file", str(votes_path), "--json"), home, timeout=600,
                       log_path=root / f"{name}-feedback.log")
    retrain = run_cli([sys.executable, str(REPO / "training" / "retrain.py"), "--json", "--quiet"], home,
                      timeout=args.retrain_timeout, log_path=root / f"{name}-retrain.log")
    report = retrain["json"] or {}
    after, _, served = engine_answers(home, texts + [q for q, _ in upped])
    row.update({"votes": counts, "import_exit": imported["exit_code"], "retrain_exit": retrain["exit_code"],
                "retrain_status": report.get("status"), "retrain_s": retrain["seconds"],
                "retrain_message": (report.get("message") or retrain["stderr_tail"])[:300],
                "after": score(after[:len(texts)], group1, offtopic), "served_after": served,
                "reliability_after": reliability(after[:len(group1)], group1),
                "upvoted": len(upped),
                "moved_after_up": sum(heading_of(a) != h for a, (_, h) in zip(after[len(texts):], upped))})
    log(f"{name}: retrain exit {retrain['exit_code']} ({row['retrain_status']}); after {row['after']}; "
        f"moved after 👍 {row['moved_after_up']} of {len(upped)}")
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", default="saas,delivery")
    parser.add_argument("--no-round", action="store_true", help="score before feedback only (no retrain)")
    parser.add_argument("--retrain-timeout", type=float, default=1800)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="csbot-bench-sections-"))
    results = {"targets": TARGETS, "sets": {}}
    try:
        for name in args.sets.split(","):
            results["sets"][name] = run_set(root, name.strip(), args)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    if args.json:
        print(json.dumps(results))
        return 0
    keys = ("right", "wrong_section", "wrong_article", "clarified_right", "handoff",
            "offtopic_generic_declined", "offtopic_near_domain_declined")
    print(f"{'set':10s} {'run':7s} " + " ".join(f"{k[:14]:>14s}" for k in keys))
    for name, row in results["sets"].items():
        for run in ("floor", "before", "after"):
            if run in row:
                print(f"{name:10s} {run:7s} " + " ".join(f"{(row[run][k] or 0):>14.1%}" for k in keys))
        for run in ("before", "after"):
            table = row.get(f"reliability_{run}")
            if table:
                print(f"{name:10s} {run:7s} reliability (n={table['n']}, ECE vs right article {table['ece_article']:.3f}): "
                      + "; ".join(f"{b['low']:.2f}-{b['high']:.2f} n={b['n']} conf {b['confidence']:.2f} "
                                  f"article {b['right_article']:.0%} section {b['right_section']:.0%}" for b in table["bins"]))
        if "moved_after_up" in row:
            print(f"{name:10s} retrain {row['retrain_status']} (exit {row['retrain_exit']}); "
                  f"👍'd answers whose section moved: {row['moved_after_up']} of {row['upvoted']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
