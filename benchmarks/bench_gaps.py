"""Content-gap detection: with k articles removed from a help centre, are the removed topics the top
gaps `csbot gaps` reports, and how many of their questions sit in the right gap?

For each trial, k StackFAQ threads (Karan & Šnajder 2018; 125 tech-support threads with ~10
paraphrased customer questions each) are left out of the KB (a fixed seed per trial picks them); the
rest is ingested with `csbot ingest` (default settings). Every paraphrased question (both rephrase
groups: a week of traffic) is asked once through the engine and stored with its answer, as `csbot
ask` and Slack store them; 25 simulated agents vote (👍 when right; 👎 + the right article on 70 % of
the wrong answers and hand-offs whose article exists; plain 👎 otherwise — nobody can point to an
article that was removed), imported with `csbot feedback --file --json`. Then `csbot gaps --since 7d
--json --limit 20` runs as a team would.

Scores, per trial and as the mean over trials:
- precision@k: the share of the top k gaps whose questions are mostly (> 50 %) one removed thread's,
  each thread counted once;
- recall in the right gap: the share of the removed threads' questions that sit in that thread's gap
  (the gap where they are the majority);
- `no_article` share of those gaps (nobody could point to an article).
The floor, measured on the same stored answers: the unmet questions grouped by the article they were
answered with or handed off nearest (their top source), largest group first — what a team sees by
counting hand-offs per article without clustering.

Usage: python benchmarks/bench_gaps.py [--trials 3] [--k 3] [--json] [--keep]
Takes ~3-5 min per trial on a 2-core machine (the ingest is most of it).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_helpcentre import USERS, CORRECTION_P, csbot_cmd, ingest_cli, outcome, run_cli  # noqa: E402
import helpcentre_data as hd  # noqa: E402

TARGETS = {"precision_at_k": "= 1.0", "recall_in_right_gap": ">= 80 %"}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def replay_week(home: Path, traffic: list[tuple[str, str]], existing: set[str], seed: int) -> tuple[Path, dict, dict]:
    """Ask each question once (engine + store) and write one simulated vote per answer; returns the votes
    file, vote counts and {answer_id: (gold, top source, unmet-by-floor)}."""
    from core.settings import Settings
    from serving.engine import Engine
    from store import Store

    rng = random.Random(seed)
    settings = Settings.load(env={}, home=home)
    engine = Engine(settings)
    users = [f"agent{i:02d}" for i in range(USERS)]
    votes, counts, answers = [], Counter(), {}
    with Store.from_settings(settings) as store:
        for start in range(0, len(traffic), 128):
            batch = traffic[start:start + 128]
            for (text, gold), answer in zip(batch, engine.answer_batch([t for t, _ in batch])):
                user = rng.choice(users)
                store.record_answer(answer, user=user, origin="cli")
                data = answer.to_json()
                kind = outcome(data, gold)
                vote: dict = {"answer_id": answer.answer_id, "user": user}
                if kind == "right":
                    vote["vote"] = "up"
                elif gold in existing and rng.random() < CORRECTION_P:
                    vote.update(vote="down", doc_id=gold)
                else:
                    vote["vote"] = "down"
                counts[vote["vote"] if "doc_id" not in vote else "corrected"] += 1
                votes.append(vote)
                top = data["doc_id"] if data.get("doc_id") and not data.get("handoff") else (
                    (data.get("sources") or [{}])[0].get("doc_id"))
                answers[answer.answer_id] = (gold, top, kind != "right")
    path = home.parent / f"{home.name}-votes.jsonl"
    path.write_text("".join(json.dumps(v) + "\n" for v in votes), encoding="utf-8")
    return path, dict(counts), answers


def score(groups: list[list[str]], answers: dict, removed: list[str], k: int) -> dict:
    """groups: answer ids per gap, largest first."""
    golds = {aid: gold for aid, (gold, _, _) in answers.items()}
    majority = []
    for ids in groups:
        top, n = Counter(golds[i] for i in ids).most_common(1)[0]
        majority.append(top if n > len(ids) / 2 else None)
    hits, seen = 0, set()
    for top in majority[:k]:
        if top in removed and top not in seen:
            hits += 1
            seen.add(top)
    in_right = 0
    total = sum(1 for gold in golds.values() if gold in removed)
    for doc in removed:
        sizes = [sum(golds[i] == doc for i in ids) for ids, top in zip(groups, majority) if top == doc]
        in_right += max(sizes, default=0)
    return {"precision_at_k": hits / k, "recall_in_right_gap": in_right / total if total else None,
            "removed_questions": total}


def floor_groups(answers: dict) -> list[list[str]]:
    by_doc: dict[str, list[str]] = defaultdict(list)
    for aid, (_, top, unmet) in answers.items():
        if unmet and top:
            by_doc[top].append(aid)
    return sorted(by_doc.values(), key=len, reverse=True)


def trial(root: Path, faqs: list[dict], traffic: list[tuple[str, str]], k: int, seed: int, distance: str | None = None) -> dict:
    rng = random.Random(1000 + seed)
    removed = sorted(hd.stackfaq_doc_id(f["faq_id"]) for f in rng.sample(faqs, k))
    kept = [f for f in faqs if hd.stackfaq_doc_id(f["faq_id"]) not in removed]
    kb, home = root / f"kb-{seed}", root / f"home-{seed}"
    hd.write_stackfaq(kb, kept)
    t0 = time.perf_counter()
    ingest = ingest_cli(kb, home, timeout=1800, logs=root, name=f"trial-{seed}")
    if not ingest.get("used"):
        return {"removed": removed, "error": "ingest failed", "ingest": ingest}
    votes_path, counts, answers = replay_week(home, traffic, {hd.stackfaq_doc_id(f["faq_id"]) for f in kept}, seed)
    imported = run_cli(csbot_cmd("feedback", "--file", str(votes_path), "--json"), home, timeout=600,
                       log_path=root / f"trial-{seed}-feedback.log")
    extra = ["--distance", distance] if distance else []
    gaps_run = run_cli(csbot_cmd("gaps", "--since", "7d", "--json", "--limit", "20", *extra), home, timeout=600,
                       log_path=root / f"trial-{seed}-gaps.log")
    lines = Path(gaps_run["log"]).read_text(encoding="utf-8").split("--- stdout\n", 1)[1].split("\n--- stderr", 1)[0]
    gaps = [json.loads(line) for line in lines.splitlines() if line.strip()]
    groups = [g["answer_ids"] for g in gaps]
    result = score(groups, answers, removed, k)
    removed_gaps = [g for g in gaps[:k] if Counter(answers[i][0] for i in g["answer_ids"]).most_common(1)[0][0] in removed]
    result.update({
        "removed": removed, "votes": counts, "import_exit": imported["exit_code"], "gaps_exit": gaps_run["exit_code"],
        "gaps_s": gaps_run["seconds"], "seconds": round(time.perf_counter() - t0, 1),
        "no_article_share": (sum(g["kind"] == "no_article" for g in removed_gaps) / len(removed_gaps)) if removed_gaps else None,
        "top": [{"size": g["size"], "title": g["title"], "kind": g["kind"],
                 "majority": Counter(answers[i][0] for i in g["answer_ids"]).most_common(1)[0]} for g in gaps[:5]],
        "floor": score(floor_groups(answers), answers, removed, k),
    })
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--distance", help="passed to csbot gaps --distance")
    args = parser.parse_args(argv)
    faqs = hd.load_stackfaq_faqs()
    traffic = hd.load_stackfaq_queries()
    root = Path(tempfile.mkdtemp(prefix="csbot-bench-gaps-"))
    trials = []
    try:
        for seed in range(args.trials):
            row = trial(root, faqs, traffic, args.k, seed, args.distance)
            trials.append(row)
            log(f"trial {seed}: removed {row['removed']}: precision@{args.k} {row.get('precision_at_k')}, "
                f"recall in the right gap {row.get('recall_in_right_gap')}; floor {row.get('floor')}")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    ok = [t for t in trials if "error" not in t]

    def mean(key, part=None):
        values = [(t[part] if part else t)[key] for t in ok if (t[part] if part else t).get(key) is not None]
        return round(sum(values) / len(values), 4) if values else None

    summary = {"k": args.k, "trials": trials, "targets": TARGETS,
               "mean": {"precision_at_k": mean("precision_at_k"), "recall_in_right_gap": mean("recall_in_right_gap")},
               "floor_mean": {"precision_at_k": mean("precision_at_k", "floor"),
                              "recall_in_right_gap": mean("recall_in_right_gap", "floor")}}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"gaps, StackFAQ with {args.k} threads removed, {len(ok)} trials:")
        print(f"  precision@{args.k}: {summary['mean']['precision_at_k']} (floor {summary['floor_mean']['precision_at_k']}; "
              f"target {TARGETS['precision_at_k']})")
        print(f"  removed questions in the right gap: {summary['mean']['recall_in_right_gap']} "
              f"(floor {summary['floor_mean']['recall_in_right_gap']}; target {TARGETS['recall_in_right_gap']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
