"""Encoder runtimes side by side: torch, ONNX fp32, ONNX int8 (figures printed, nothing asserted).

In one run, on the same questions:
- per-question latency p50/p99 with ONE thread (`encode([question])`, the full Encoded features the
  engine reads), the runtimes interleaved question by question so machine noise hits them alike;
  each p50 is also printed as a ratio to the bare sentence-transformers `encode(question)` (the
  torch floor) measured in the same loop;
- batch throughput with TWO threads (`encode(questions, batch_size=64)`, 512 questions), median of
  three repeats, the runtimes interleaved (int8 runs the texts two side by side, one at a time each);
- accuracy on BANKING77, 10 examples per intent (train.csv, seed 0) → test.csv (3,080), with a
  logistic-regression head (C=10, as bench_accuracy's floor) and a nearest-centroid head on each
  runtime's own embeddings: what matters is the difference between runtimes; and CLINC150 in-scope
  (`--clinc-per-intent`, 20 per intent by default → the 4,500 in-scope test questions), same head;
- agreement with torch on the BANKING77 test questions: embedding cosine (mean / 5th percentile /
  min) and the builtin sentiment head's labels (it reads layers 0-4).

Usage: python benchmarks/bench_runtimes.py [--rounds 200] [--folder DIR (reuse or keep an export)] [--skip-latency]
                                           [--clinc-per-intent 20]
                                           [--model builtin:all-MiniLM-L6-v2]
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

import numpy as np  # noqa: E402

from benchmarks.bench_accuracy import few_shot, read_rows  # noqa: E402 (the same 10 examples per intent)
from models.onnx_export import MANIFEST, export_onnx, read_manifest  # noqa: E402
from models.runtimes import choose_runtime, load_encoder  # noqa: E402
from training.fit_heads import fit_softmax_head  # noqa: E402

DATA = Path(os.environ.get("CSBOT_DATA_DIR", REPO.parent / "shared" / "data"))
RUNTIMES = ("torch", "onnx", "onnx-int8")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def latency(encoders: dict, bare, questions: list[str], rounds: int) -> dict[str, list[float]]:
    """Milliseconds per single-question encode, runtimes interleaved per question."""
    times: dict[str, list[float]] = {name: [] for name in ("bare", *encoders)}
    calls = {"bare": lambda q: bare.encode(q), **{name: (lambda q, e=e: e.encode([q])) for name, e in encoders.items()}}
    for q in questions[:20]:  # warm-up
        for call in calls.values():
            call(q)
    for i in range(rounds):
        q = questions[i % len(questions)]
        for name, call in calls.items():
            start = time.perf_counter()
            call(q)
            times[name].append((time.perf_counter() - start) * 1000)
    return times


def throughput(encoders: dict, questions: list[str], repeats: int = 3) -> dict[str, float]:
    """Questions per second through `encode(questions, batch_size=64)`: median of `repeats`, the
    runtimes interleaved repeat by repeat (a multi-threaded run on a shared machine is noisy)."""
    for encoder in encoders.values():
        encoder.encode(questions[:64])
    rates: dict[str, list[float]] = {name: [] for name in encoders}
    for _ in range(repeats):
        for name, encoder in encoders.items():
            start = time.perf_counter()
            encoder.encode(questions, batch_size=64)
            rates[name].append(len(questions) / (time.perf_counter() - start))
    return {name: statistics.median(r) for name, r in rates.items()}


class _Bare:
    """The bare sentence-transformers encode behind the `encode(texts, batch_size)` call."""

    def __init__(self, model):
        self.model = model

    def encode(self, texts, batch_size=64):
        return self.model.encode(texts, batch_size=batch_size)


def centroid_accuracy(train_x, train_y, test_x, test_y) -> float:
    labels = sorted(set(train_y))
    index = {label: i for i, label in enumerate(labels)}
    centroids = np.zeros((len(labels), train_x.shape[1]), np.float32)
    for x, y in zip(train_x, train_y):
        centroids[index[y]] += x
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    predicted = np.argmax(test_x @ centroids.T, axis=1)
    return float(np.mean([labels[p] == y for p, y in zip(predicted, test_y)]))


def lr_accuracy(train_x, train_y, test_x, test_y) -> float:
    head = fit_softmax_head(train_x, train_y, c=10.0, calibrate=False)
    predicted = np.argmax(head.proba_from_features(test_x), axis=1)
    return float(np.mean([head.labels[p] == y for p, y in zip(predicted, test_y)]))


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--folder", help="ONNX export folder: reused when it holds an export, else written there")
    parser.add_argument("--model", default="builtin:all-MiniLM-L6-v2")
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--skip-latency", action="store_true", help="accuracy only (no latency or throughput)")
    parser.add_argument("--clinc-per-intent", type=int, default=20,
                        help="CLINC150 training questions per intent for its accuracy row (0: skip CLINC150)")
    args = parser.parse_args()
    import onnxruntime
    import torch

    from models.loading import load_sentence_transformer
    from models.sentiment import SentimentModel

    print(f"machine: {os.cpu_count()} cores; torch {torch.__version__}, onnxruntime {onnxruntime.__version__}")
    tmp = tempfile.TemporaryDirectory()
    folder = Path(args.folder) if args.folder else Path(tmp.name) / "onnx"
    if (folder / MANIFEST).is_file():
        manifest = read_manifest(folder)
        print(f"reusing the export in {folder}")
    else:
        start = time.perf_counter()
        manifest = export_onnx(args.model, folder)
        print(f"exported {args.model} to {folder} in {time.perf_counter() - start:.1f}s")
    for variant, entry in manifest["variants"].items():
        print(f"  {variant}: {entry['bytes'] / 1e6:.1f} MB; vs torch on the probe set {entry.get('vs_torch')}")

    train = few_shot(read_rows(DATA / "banking77" / "train.csv"), 10)
    test = read_rows(DATA / "banking77" / "test.csv")
    questions = [t for t, _ in test]

    # -- one thread: per-question latency
    torch.set_num_threads(1)
    bare = load_sentence_transformer(args.model, "cpu")
    one = {name: load_encoder(args.model if name == "torch" else folder, name, device="cpu", threads=1,
                           workers=1) for name in RUNTIMES}
    times = ({name: [0.0] for name in [*RUNTIMES, "bare"]} if args.skip_latency
             else latency(one, bare, questions, args.rounds))
    bare_p50 = statistics.median(times["bare"]) or 1.0

    # -- two threads: batch throughput, BANKING77 encodings
    torch.set_num_threads(2)
    two = {name: load_encoder(args.model if name == "torch" else folder, name, device="cpu", threads=2,
                           workers=2) for name in RUNTIMES}
    rates = ({name: 0 for name in [*RUNTIMES, "bare"]} if args.skip_latency
             else throughput({"bare": _Bare(bare), **two}, questions[:512]))

    rows = {}
    for name in RUNTIMES:
        p50 = statistics.median(times[name])
        rows[name] = {"p50_ms": round(p50, 2), "p99_ms": round(percentile(times[name], 99), 2),
                      "ratio_to_bare_torch": round(p50 / bare_p50, 2), "batch_per_s": round(rates[name])}
    rows["bare"] = {"p50_ms": round(bare_p50, 2), "p99_ms": round(percentile(times["bare"], 99), 2),
                    "batch_per_s": round(rates["bare"])}

    if not args.skip_accuracy:
        sentiment = SentimentModel.load("builtin")
        encoded = {}
        for name, encoder in two.items():
            start = time.perf_counter()
            encoded[name] = (encoder.encode([t for t, _ in train], 64), encoder.encode(questions, 64))
            print(f"encoded BANKING77 10-shot + test with {name} in {time.perf_counter() - start:.1f}s", flush=True)
        train_y, test_y = [y for _, y in train], [y for _, y in test]
        torch_labels = [label for label, _ in sentiment.predict(encoded["torch"][1])]
        for name, (tr, te) in encoded.items():
            cos = cosines(encoded["torch"][1].embeddings, te.embeddings)
            labels = [label for label, _ in sentiment.predict(te)]
            rows[name].update({
                "banking77_10shot_lr": round(lr_accuracy(tr.embeddings, train_y, te.embeddings, test_y), 4),
                "banking77_10shot_centroid": round(centroid_accuracy(tr.embeddings, train_y, te.embeddings, test_y), 4),
                "cosine_to_torch_mean": round(float(cos.mean()), 4),
                "cosine_to_torch_p5": round(float(np.percentile(cos, 5)), 4),
                "cosine_to_torch_min": round(float(cos.min()), 4),
                "sentiment_agreement": round(float(np.mean([a == b for a, b in zip(labels, torch_labels)])), 4),
            })
        if args.clinc_per_intent:
            clinc_train = few_shot([r for r in read_rows(DATA / "clinc150" / "train.csv") if r[1] != "oos"],
                                   args.clinc_per_intent)
            clinc_test = [r for r in read_rows(DATA / "clinc150" / "test.csv") if r[1] != "oos"]
            for name, encoder in two.items():
                tr, te = encoder.encode([t for t, _ in clinc_train], 64), encoder.encode([t for t, _ in clinc_test], 64)
                rows[name]["clinc150_inscope_lr"] = round(lr_accuracy(tr.embeddings, [y for _, y in clinc_train],
                                                                      te.embeddings, [y for _, y in clinc_test]), 4)
                print(f"CLINC150 in-scope ({args.clinc_per_intent}/intent → {len(clinc_test)} test) with {name}: "
                      f"{rows[name]['clinc150_inscope_lr']:.2%}", flush=True)
        # The gate's rule applied to these figures (int8 cosine: to fp32 ONNX, 5th percentile).
        int8_vs_fp32 = float(np.percentile(cosines(encoded["onnx"][1].embeddings, encoded["onnx-int8"][1].embeddings), 5))
        verdict = choose_runtime(rows["onnx"]["banking77_10shot_lr"], rows["onnx-int8"]["banking77_10shot_lr"], int8_vs_fp32)
        print(f"choose_runtime on these figures: {verdict[0]} ({verdict[1]})")

    def shown(value):
        return "-" if args.skip_latency else value

    print("\n| runtime | p50 ms (1 thread) | p99 ms | p50 / bare torch | batch/s (2 threads) | "
          "BANKING77 10-shot LR | centroid | CLINC150 in-scope LR | cosine to torch mean / p5 / min | "
          "sentiment labels = torch |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| bare sentence-transformers encode | {shown(rows['bare']['p50_ms'])} | {shown(rows['bare']['p99_ms'])} | "
          f"1.00 | {shown(rows['bare']['batch_per_s'])} | | | | | |")
    for name in RUNTIMES:
        r = rows[name]
        clinc = f"{r['clinc150_inscope_lr']:.2%}" if "clinc150_inscope_lr" in r else "-"
        acc = (f"{r['banking77_10shot_lr']:.2%} | {r['banking77_10shot_centroid']:.2%} | {clinc} | "
               f"{r['cosine_to_torch_mean']} / {r['cosine_to_torch_p5']} / {r['cosine_to_torch_min']} | "
               f"{r['sentiment_agreement']:.1%}") if "banking77_10shot_lr" in r else "| | | |"
        print(f"| {name} | {shown(r['p50_ms'])} | {shown(r['p99_ms'])} | {shown(r['ratio_to_bare_torch'])} | "
              f"{shown(r['batch_per_s'])} | {acc} |")
    print(json.dumps(rows))
    tmp.cleanup()


if __name__ == "__main__":
    main()
