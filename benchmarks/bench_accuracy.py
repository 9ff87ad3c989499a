"""Intent accuracy of the engine against the frozen floor, on public data sets (figures printed).

Each data set becomes a knowledge base (one article per intent, its training questions as example
questions), is built into a model version exactly as `csbot ingest` does (encoder fine-tuning,
index, intent head), and its test questions go through `Engine.answer_batch`. Beside every figure
the floor measured in the same run: frozen all-MiniLM-L6-v2 embeddings + logistic regression (C=10).

- BANKING77: full train → test; and 10 examples per intent → test.
- CLINC150: train (in-scope) → test; one confidence threshold chosen on val so that out-of-scope
  recall ≥ 80 % there; test in-scope accuracy (a declined in-scope question counts as wrong) and
  out-of-scope recall with that threshold.
TweetEval sentiment is in benchmarks/bench_sentiment.py.

Usage: python benchmarks/bench_accuracy.py [--only banking77-10,banking77-full,clinc150] [--finetune-epochs N]
       [--finetune-max-steps N]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
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

import numpy as np  # noqa: E402

from core.settings import Settings  # noqa: E402
from models.encoder import Encoder  # noqa: E402
from serving.engine import Engine  # noqa: E402
from training.fit_heads import fit_softmax_head  # noqa: E402
from training.ingest import ingest  # noqa: E402

DATA = Path(os.environ.get("CSBOT_DATA_DIR", REPO.parent / "shared" / "data"))
OOS = "oos"


def read_rows(path: Path) -> list[tuple[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return [(r["text"], r["label"]) for r in csv.DictReader(fh)]


def few_shot(rows, per_intent: int, seed: int = 0):
    rng = random.Random(seed)
    by_label = defaultdict(list)
    for text, label in rows:
        by_label[label].append(text)
    return [(t, label) for label in sorted(by_label) for t in rng.sample(by_label[label], min(per_intent, len(by_label[label])))]


def write_kb(rows, path: Path) -> Path:
    by_label = defaultdict(list)
    for text, label in rows:
        by_label[label].append(text)
    with open(path, "w", encoding="utf-8") as fh:
        for label, questions in sorted(by_label.items()):
            fh.write(json.dumps({"id": label, "title": label.replace("_", " "), "intent": label,
                                 "answer": f"(the team's answer for {label})", "questions": questions}) + "\n")
    return path


def engine_predictions(train, texts, home: Path, finetune: dict):
    settings = Settings.load(env={}, home=home, confidence_threshold=0.0, **finetune)
    start = time.perf_counter()
    report = ingest([write_kb(train, home.parent / f"{home.name}.jsonl")], settings)
    build_s = time.perf_counter() - start
    engine = Engine(settings)
    answers = []
    for i in range(0, len(texts), 256):
        answers.extend(engine.answer_batch(texts[i:i + 256]))
    return [a.intent for a in answers], np.array([a.confidence for a in answers]), build_s, report


def floor_predictions(train, texts, encoder: Encoder):
    head = fit_softmax_head(encoder.embed([t for t, _ in train]), [label for _, label in train], c=10.0, calibrate=False)
    probs = head.proba_from_features(encoder.embed(texts))
    return [head.labels[i] for i in probs.argmax(1)], probs.max(1)


def accuracy(predicted, gold) -> float:
    return float(np.mean([p == g for p, g in zip(predicted, gold)]))


def oos_at_threshold(pred, conf, gold, threshold):
    in_scope = [(p, c, g) for p, c, g in zip(pred, conf, gold) if g != OOS]
    oos = [c for c, g in zip(conf, gold) if g == OOS]
    in_acc = float(np.mean([p == g and c >= threshold for p, c, g in in_scope]))
    recall = float(np.mean([c < threshold for c in oos])) if oos else float("nan")
    return in_acc, recall


def pick_threshold(conf, gold, target_recall: float = 0.8) -> float:
    """The smallest threshold whose out-of-scope recall on these rows reaches the target."""
    oos = np.sort(np.array([c for c, g in zip(conf, gold) if g == OOS]))
    k = int(np.ceil(target_recall * len(oos))) - 1
    return float(oos[k] + 1e-6)


def run_banking(name, per_intent, tmp, base, finetune):
    train = read_rows(DATA / "banking77" / "train.csv")
    test = read_rows(DATA / "banking77" / "test.csv")
    if per_intent:
        train = few_shot(train, per_intent)
    texts, gold = [t for t, _ in test], [label for _, label in test]
    pred, _, build_s, report = engine_predictions(train, texts, tmp / name, finetune)
    floor, _ = floor_predictions(train, texts, base)
    return {"benchmark": name, "train": len(train), "test": len(test), "engine": round(accuracy(pred, gold), 4),
            "floor": round(accuracy(floor, gold), 4), "build_s": round(build_s, 1)}


def run_clinc(tmp, base, finetune):
    train = [(t, label) for t, label in read_rows(DATA / "clinc150" / "train.csv") if label != OOS]
    val, test = read_rows(DATA / "clinc150" / "val.csv"), read_rows(DATA / "clinc150" / "test.csv")
    val_texts, val_gold = [t for t, _ in val], [label for _, label in val]
    test_texts, test_gold = [t for t, _ in test], [label for _, label in test]
    pred_all, conf_all, build_s, _ = engine_predictions(train, val_texts + test_texts, tmp / "clinc", finetune)
    n = len(val_texts)
    threshold = pick_threshold(conf_all[:n], val_gold)
    in_acc, recall = oos_at_threshold(pred_all[n:], conf_all[n:], test_gold, threshold)
    no_oos = accuracy([p for p, g in zip(pred_all[n:], test_gold) if g != OOS], [g for g in test_gold if g != OOS])
    floor_pred, floor_conf = floor_predictions(train, val_texts + test_texts, base)
    f_threshold = pick_threshold(floor_conf[:n], val_gold)
    f_in_acc, f_recall = oos_at_threshold(floor_pred[n:], floor_conf[n:], test_gold, f_threshold)
    f_no_oos = accuracy([p for p, g in zip(floor_pred[n:], test_gold) if g != OOS], [g for g in test_gold if g != OOS])
    return {"benchmark": "clinc150", "train": len(train), "test": len(test), "threshold": round(threshold, 4),
            "in_scope_acc": round(in_acc, 4), "oos_recall": round(recall, 4), "in_scope_acc_no_oos": round(no_oos, 4),
            "floor_threshold": round(f_threshold, 4), "floor_in_scope_acc": round(f_in_acc, 4),
            "floor_oos_recall": round(f_recall, 4), "floor_in_scope_acc_no_oos": round(f_no_oos, 4),
            "build_s": round(build_s, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="banking77-10,banking77-full,clinc150")
    parser.add_argument("--finetune-epochs", type=float, default=None, help="override the setting (0 = frozen encoder)")
    parser.add_argument("--finetune-max-steps", type=int, default=None, help="override the setting's step cap")
    args = parser.parse_args()
    if not (DATA / "banking77").is_dir():
        sys.exit(f"no data at {DATA}: set CSBOT_DATA_DIR")
    wanted = args.only.split(",")
    finetune = {"finetune_epochs": args.finetune_epochs, "finetune_max_steps": args.finetune_max_steps}
    base = Encoder("builtin:all-MiniLM-L6-v2", "cpu")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if "banking77-10" in wanted:
            results.append(run_banking("banking77-10", 10, tmp, base, finetune))
            print(json.dumps(results[-1]), flush=True)
        if "banking77-full" in wanted:
            results.append(run_banking("banking77-full", 0, tmp, base, finetune))
            print(json.dumps(results[-1]), flush=True)
        if "clinc150" in wanted:
            results.append(run_clinc(tmp, base, finetune))
            print(json.dumps(results[-1]), flush=True)
    print("\n| benchmark | engine | floor (frozen MiniLM + LR) | build s |\n|---|---|---|---|")
    for r in results:
        if r["benchmark"] == "clinc150":
            print(f"| CLINC150 in-scope acc @ OOS recall (threshold from val) | {r['in_scope_acc']:.3f} @ {r['oos_recall']:.3f} "
                  f"| {r['floor_in_scope_acc']:.3f} @ {r['floor_oos_recall']:.3f} | {r['build_s']} |")
            print(f"| CLINC150 in-scope acc, no OOS handling | {r['in_scope_acc_no_oos']:.3f} | {r['floor_in_scope_acc_no_oos']:.3f} | |")
        else:
            print(f"| {r['benchmark']} ({r['train']} train → {r['test']} test) | {r['engine']:.3f} | {r['floor']:.3f} | {r['build_s']} |")


if __name__ == "__main__":
    main()
