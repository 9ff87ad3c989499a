"""The learning loop on BANKING77: simulated users vote, the nightly retrain learns from it.

1. The knowledge base: one article per intent with 5 example questions (from `train.csv`, seed 0),
   built like `csbot ingest` does.
2. A stream of questions the model has not seen (the rest of `train.csv`, shuffled) is answered by
   the served model; simulated users (40) vote 👍 when the answer is right and 👎 when it is wrong,
   adding the right intent as a correction with probability p (0.5).
3. `training/retrain.py`'s code runs with its default settings (datasets, encoder training, gate,
   index rebuild, promotion); the test split (`test.csv`, 3,080 questions, disjoint from the KB and
   from the stream) is scored before and after.
4. The same from the same start with 20 % adversarial votes: 8 of the 40 users vote 👎 with a wrong
   correction on right answers and 👍 on wrong ones. It must not be promoted, or must not lower the
   test accuracy.
5. The retrain's wall time on 1,000 events (target ≤ 5 minutes on 2 CPU cores).

Usage: python benchmarks/bench_learning_loop.py [--events 2000] [--timing-events 1000] [--p 0.5]
       [--test-limit N] [--json]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from core.runtime import quiet_libraries  # noqa: E402

quiet_libraries()  # before the libraries load: no progress bars of theirs among the figures
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA = Path(os.environ.get("CSBOT_DATA_DIR", REPO.parent / "shared" / "data"))
PER_INTENT = 5
USERS = 40
ADVERSARIES = 8  # 20 % of the users, casting 20 % of the votes


def read_rows(path: Path) -> list[tuple[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return [(r["text"], r["label"]) for r in csv.DictReader(fh)]


def split_train(rows, per_intent: int, seed: int = 0):
    rng = random.Random(seed)
    by_label = defaultdict(list)
    for text, label in rows:
        by_label[label].append(text)
    kb, stream = [], []
    for label in sorted(by_label):
        texts = by_label[label][:]
        rng.shuffle(texts)
        kb += [(t, label) for t in texts[:per_intent]]
        stream += [(t, label) for t in texts[per_intent:]]
    rng.shuffle(stream)
    return kb, stream


def write_kb(rows, path: Path) -> Path:
    by_label = defaultdict(list)
    for text, label in rows:
        by_label[label].append(text)
    with open(path, "w", encoding="utf-8") as fh:
        for label, questions in sorted(by_label.items()):
            fh.write(json.dumps({"id": label, "title": label.replace("_", " "), "intent": label,
                                 "answer": f"(the team's answer for {label.replace('_', ' ')})", "questions": questions}) + "\n")
    return path


def test_accuracy(settings, test_rows) -> tuple[float, str]:
    from serving.engine import Engine

    engine = Engine(settings)
    texts = [t for t, _ in test_rows]
    predicted = []
    for i in range(0, len(texts), 256):
        predicted += [a.intent for a in engine.answer_batch(texts[i:i + 256])]
    return sum(p == g for p, (_, g) in zip(predicted, test_rows)) / len(test_rows), engine.model_version


def simulate(settings, stream, labels, *, p: float, adversarial: bool, seed: int = 1) -> dict:
    """Answer the stream with the champion and record one vote per question."""
    from serving.engine import Engine
    from store import Store

    rng = random.Random(seed)
    engine = Engine(settings)
    counts = defaultdict(int)
    with Store.from_settings(settings) as store:
        for start in range(0, len(stream), 256):
            batch = stream[start:start + 256]
            answers = engine.answer_batch([t for t, _ in batch])
            for (text, gold), answer in zip(batch, answers):
                user_index = rng.randrange(USERS)
                user = f"user{user_index}"
                store.record_answer(answer, user=user, origin="cli")
                right = answer.intent == gold
                counts["right" if right else "wrong"] += 1
                if adversarial and user_index < ADVERSARIES:
                    counts["adversarial"] += 1
                    if right:
                        wrong = rng.choice([label for label in labels if label != gold])
                        store.record_vote(answer.answer_id, "down", user=user, origin="button", intent=wrong)
                    else:
                        store.record_vote(answer.answer_id, "up", user=user, origin="button")
                    continue
                if right:
                    store.record_vote(answer.answer_id, "up", user=user, origin="button")
                elif rng.random() < p:
                    store.record_vote(answer.answer_id, "down", user=user, origin="button", intent=gold)
                    counts["corrections"] += 1
                else:
                    store.record_vote(answer.answer_id, "down", user=user, origin="button")
    return dict(counts)


def run_retrain(settings):
    from training.retrain import retrain

    start, cpu = time.perf_counter(), _cpu_seconds()
    outcome = retrain(settings, quiet=True)
    return outcome, time.perf_counter() - start, _cpu_seconds() - cpu


def _cpu_seconds() -> float:
    """CPU time of this process (all threads): on a shared machine, CPU seconds / 2 is what the run
    would take on 2 dedicated cores (at best)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--timing-events", type=int, default=1000, help="0 skips the timing run")
    parser.add_argument("--p", type=float, default=0.5, help="probability that a 👎 carries the right intent")
    parser.add_argument("--test-limit", type=int, default=0, help="score only the first N test questions (0: all)")
    parser.add_argument("--skip-poisoned", action="store_true")
    parser.add_argument("--skip-clean", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    from core.settings import Settings
    from training.ingest import ingest

    folder = DATA / "banking77"
    if not folder.is_dir():
        print(f"BANKING77 not found under {folder} (set CSBOT_DATA_DIR)", file=sys.stderr)
        return 2
    train, test = read_rows(folder / "train.csv"), read_rows(folder / "test.csv")
    if args.test_limit:
        test = random.Random(0).sample(test, args.test_limit)
    kb, stream = split_train(train, PER_INTENT)
    labels = sorted({label for _, label in kb})
    root = Path(tempfile.mkdtemp(prefix="csbot-learning-loop-"))
    results: dict = {"kb_questions": len(kb), "intents": len(labels), "test_questions": len(test), "p": args.p}
    try:
        base = root / "base"
        t0 = time.perf_counter()
        ingest([write_kb(kb, root / "kb.jsonl")], Settings.load(env={}, home=base))
        results["ingest_seconds"] = round(time.perf_counter() - t0, 1)
        before, _ = test_accuracy(Settings.load(env={}, home=base), test)
        results["accuracy_before"] = round(before, 4)
        print(f"KB: {len(labels)} intents × {PER_INTENT} questions; test accuracy before: {before:.4f}", flush=True)

        scenarios = [] if args.skip_clean else [("clean", args.events, False)]
        if not args.skip_poisoned:
            scenarios.append(("poisoned-20%", args.events, True))
        if args.timing_events:
            scenarios.append((f"timing-{args.timing_events}", args.timing_events, False))
        for name, n_events, adversarial in scenarios:
            home = root / name
            shutil.copytree(base, home)
            settings = Settings.load(env={}, home=home)
            votes = simulate(settings, stream[:n_events], labels, p=args.p, adversarial=adversarial)
            load_before = os.getloadavg()[0]
            outcome, seconds, cpu = run_retrain(settings)
            after, served = test_accuracy(settings, test)
            row = {"events": n_events, "votes": votes, "status": outcome.status, "exit_code": outcome.exit_code,
                   "message": outcome.message, "retrain_seconds": round(seconds, 1),
                   "retrain_cpu_seconds": round(cpu, 1), "load_average": round((load_before + os.getloadavg()[0]) / 2, 1),
                   "accuracy_after": round(after, 4),
                   "delta_points": round(100 * (after - before), 2), "served": served,
                   "timings": outcome.report.get("timings"), "counts": outcome.report.get("counts"),
                   "heldout": {k: (outcome.report.get(f"{k}_metrics") or {}).get("accuracy") for k in ("champion", "candidate")}}
            results[name] = row
            print(f"{name}: {outcome.status} in {seconds:.0f}s ({cpu:.0f} CPU-s, load {row['load_average']}); test accuracy {before:.4f} → {after:.4f} "
                  f"({row['delta_points']:+.2f} points); {outcome.message}", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print()
    print("| run | feedback events | outcome | retrain wall time (CPU-s / 2) | test accuracy before → after |")
    print("|---|---|---|---|---|")
    for name in [k for k in results if isinstance(results[k], dict) and "events" in results[k]]:
        r = results[name]
        print(f"| {name} | {r['events']} | {r['status']} | {r['retrain_seconds']:.0f} s ({r['retrain_cpu_seconds'] / 2:.0f} s) | "
              f"{results['accuracy_before']:.4f} → {r['accuracy_after']:.4f} ({r['delta_points']:+.2f}) |")
    if args.json:
        print(json.dumps(results, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
