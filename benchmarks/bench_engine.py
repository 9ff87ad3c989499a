"""Engine latency and throughput, and ingest speed (figures printed; nothing asserted).

- Ingest of the demo KB (intent model included), wall time, with `runtime = torch` (no ONNX export),
  with `auto` and `sentiment_model = none` (the encoder exported to ONNX fp32 + int8, both scored, the
  index built by the winner; sentiment by the head on the same pass) and with the defaults (the
  fine-tuned sentiment model exported too): the ratios are the exports' cost.
- Single-question latency p50/p99 end to end in `Engine.answer` for each runtime (torch, ONNX fp32,
  ONNX int8, for the encoder and the fine-tuned sentiment model alike: sentiment included, from the
  encoder pass's token states through the model's tail where the build approved it, "(shared)"), the
  same with the model's own whole pass (`demo-own`: `sentiment_share_encoder = false`), and int8 with
  the head (`sentiment_model = none`: one pass), printed as a ratio to the bare
  torch sentence-transformers encode of the same question in the same run (the floor). Two series:
  per call (engine and floor alternate call by call: cold caches, the stricter figure) and in blocks
  of 25 calls (warm caches, as a burst of questions); see `measure`.
- Batch throughput (`Engine.answer_batch`, 64 questions per call): int8 runs its texts side by side,
  `batch_threads` of them (default one per core; one intra-op thread each), also shown with
  `batch_threads = 1`.
- The same on a 1k-chunk KB (1,000 DSTC10 FAQ snippets) and a 100k-chunk KB (the 12k real DSTC10
  snippets' vectors plus noisy copies of them up to 100k, HNSW index; the engine is pinned to a
  version whose index is replaced by that one).

Usage: python benchmarks/bench_engine.py [--rounds 200] [--skip-large] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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

import faiss  # noqa: E402
import numpy as np  # noqa: E402

from core.settings import Settings  # noqa: E402
from models.loading import load_sentence_transformer  # noqa: E402
from retrieval.index import Entry, VectorIndex  # noqa: E402
from serving.engine import Engine  # noqa: E402
from serving.versions import VersionStore  # noqa: E402
from training.ingest import ingest  # noqa: E402

DATA = Path(os.environ.get("CSBOT_DATA_DIR", REPO.parent / "shared" / "data"))
QUESTIONS = [
    "How do I reset my password?", "my parcel never arrived", "can I get a refund for a broken kettle",
    "is there a pet policy at the guest house", "what time does check-in start", "do you ship to Canada",
    "the app keeps crashing when I log in", "how much is Plus per year",
]


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000


def time_calls(fn, questions: list[str], rounds: int) -> list[float]:
    samples = []
    for i in range(rounds):
        q = questions[i % len(questions)]
        start = time.perf_counter()
        fn(q)
        samples.append(time.perf_counter() - start)
    return samples


BLOCK = 25  # calls per block in the warm series


def measure(engine: Engine, label: str, rounds: int, model) -> dict:
    """`model`: the bare torch sentence-transformers model of the served version (the floor).

    Two series of the engine against the floor, `rounds` calls each. Per call: the two alternate call by
    call, so each call finds the caches as the other left them (torch's 90 MB of weights push the int8
    graphs out): the stricter figure, as a bot answering now and then between other work. In blocks:
    BLOCK calls of one, then BLOCK of the other, so each runs on warm caches, as a server answering a
    burst; load from other processes still hits both alike, block by block."""
    for q in QUESTIONS:  # warm up both paths
        engine.answer(q)
        model.encode([q])
    floor, single = [], []
    for i in range(rounds):
        q = QUESTIONS[i % len(QUESTIONS)]
        floor += time_calls(lambda text: model.encode([text]), [q], 1)
        single += time_calls(engine.answer, [q], 1)
    warm_floor, warm = [], []
    for start in range(0, rounds, BLOCK):
        block = [QUESTIONS[i % len(QUESTIONS)] for i in range(start, min(rounds, start + BLOCK))]
        warm_floor += time_calls(lambda text: model.encode([text]), block, len(block))
        warm += time_calls(engine.answer, block, len(block))
    throughput = batch_rate(engine, rounds)
    one_thread = None
    if engine.runtime == "onnx-int8":  # its texts run side by side, batch_threads of them (0: one per core)
        one_thread = batch_rate(Engine(engine.settings.replace(batch_threads=1), version=engine.pinned), rounds)
    f50, f99 = percentiles(floor)
    s50, s99 = percentiles(single)
    wf50, _ = percentiles(warm_floor)
    w50, w99 = percentiles(warm)
    shared = engine.served.shares_encoder
    row = {"kb": label, "runtime": engine.runtime, "sentiment": engine.sentiment_runtime,
           "sentiment_shares_encoder": shared, "index": engine.served.index.meta["type"],
           "vectors": len(engine.served.index),
           "encode_p50_ms": round(f50, 2), "answer_p50_ms": round(s50, 2), "answer_p99_ms": round(s99, 2),
           "ratio_p50": round(s50 / f50, 2), "batch_per_s": round(throughput, 1),
           "warm_encode_p50_ms": round(wf50, 2), "warm_answer_p50_ms": round(w50, 2),
           "warm_answer_p99_ms": round(w99, 2), "warm_ratio_p50": round(w50 / wf50, 2),
           "batch_per_s_one_thread": round(one_thread, 1) if one_thread else None}
    print(f"{label:>10} {engine.runtime:>9} sentiment {engine.sentiment_runtime:>9}{' (shared)' if shared else '         '} | {row['index']:>5} {row['vectors']:>7} vectors | "
          f"per call: torch encode p50 {f50:6.2f} ms, answer p50 {s50:6.2f} ms p99 {s99:6.2f} ms, ratio {s50 / f50:4.2f} | "
          f"in blocks: {wf50:6.2f} / {w50:5.2f} ms p99 {w99:5.2f}, ratio {w50 / wf50:4.2f} | batch {throughput:6.1f} q/s"
          + (f" (batch_threads=1: {one_thread:6.1f})" if one_thread else ""), flush=True)
    return row


def batch_rate(engine: Engine, rounds: int) -> float:
    """Questions a second through `Engine.answer_batch`, 64 questions per call."""
    batch_questions = (QUESTIONS * 8)[:64]
    engine.answer_batch(batch_questions)  # warm-up (and the pool's threads)
    start = time.perf_counter()
    batches = max(3, rounds // 40)
    for _ in range(batches):
        engine.answer_batch(batch_questions)
    return batches * len(batch_questions) / (time.perf_counter() - start)


def dstc_kb(path: Path, n: int) -> Path:
    rows = [json.loads(line) for line in (DATA / "dstc10_knowledge_faq" / "knowledge.jsonl").open()][:n]
    with open(path, "w") as fh:
        for r in rows:
            fh.write(json.dumps({"id": f"{r['domain']}-{r['entity_id']}-{r['doc_id']}",
                                 "title": f"{r['entity_name'] or r['domain']}: {r['title']}",
                                 "answer": r["body"], "intent": r["domain"] + "_" + str(r["doc_id"])}) + "\n")
    return path


def large_index_engine(settings: Settings, total: int) -> Engine:
    """Pin a copy of the champion whose index is replaced by `total` vectors (real DSTC10 + noisy copies)."""
    versions = VersionStore.from_settings(settings)
    champion = versions.champion()
    engine = Engine(settings)
    rows = [json.loads(line) for line in (DATA / "dstc10_knowledge_faq" / "knowledge.jsonl").open()]
    texts = [f"{r['title']} {r['body']}" for r in rows]
    print(f"encoding {len(texts)} real DSTC10 snippets for the large index ...", flush=True)
    real = engine.served.encoder.embed(texts, batch_size=128)
    rng = np.random.default_rng(0)
    copies = real[rng.integers(0, len(real), total - len(real))]
    noisy = copies + rng.normal(0, 0.03, copies.shape).astype(np.float32)
    vectors = np.vstack([real, noisy / np.linalg.norm(noisy, axis=1, keepdims=True)])
    doc_ids = list(engine.served.documents)
    entries = [Entry(doc_ids[i % len(doc_ids)], "chunk", f"synthetic {i}") for i in range(total)]
    start = time.perf_counter()
    index = VectorIndex.build(vectors, entries, encoder=champion.meta["encoder"],
                              encoder_version=champion.meta["encoder_version"], index_type="auto",
                              hnsw_min_vectors=settings.hnsw_min_vectors)
    print(f"built {index.meta['type']} index over {total} vectors in {time.perf_counter() - start:.1f}s", flush=True)
    copy = settings.models_dir / (champion.name + "-large")
    shutil.copytree(champion.path, copy)
    index.save(copy / "index")
    return Engine(settings, version=copy.name)


def use_threads(n: int) -> None:
    """torch, FAISS and BLAS threads, as core.runtime.limit_threads sets them for the answering commands."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(n)
    faiss.omp_set_num_threads(n)
    threadpool_limits(limits=n, user_api="blas")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--threads", type=int, default=Settings.torch_threads,
                        help="torch threads while answering, as the torch_threads setting (0: torch's default)")
    args = parser.parse_args()
    import torch

    default_threads = torch.get_num_threads()
    answering_threads = args.threads if args.threads > 0 else default_threads
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}; ingest on {default_threads} threads, "
          f"answering on {answering_threads} (torch_threads={args.threads})")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        walls = {}
        for name, changes in (("torch", {"runtime": "torch", "sentiment_model": "none"}),
                              ("auto-head", {"sentiment_model": "none"}), ("auto", {})):
            home = Path(tmp) / f"demo-{name}"
            start = time.perf_counter()
            report = ingest([REPO / "demo" / "kb"], Settings.load(env={}, home=home, **changes))
            walls[name] = time.perf_counter() - start
            print(f"ingest demo KB ({report['documents']} articles, fine-tuning + intent model + index), "
                  f"{name} {changes}: {walls[name]:.1f}s wall (build {report['seconds']:.1f}s)", flush=True)
        print(f"ingest with the encoder's ONNX export / without: {walls['auto-head'] / walls['torch']:.2f}; "
              f"with the sentiment model's too / without either: {walls['auto'] / walls['torch']:.2f}", flush=True)
        settings = Settings.load(env={}, home=Path(tmp) / "demo-auto")
        champion = VersionStore.from_settings(settings).champion()
        print(f"the build chose {champion.runtime}: {champion.meta['runtime']['reason']}", flush=True)
        print(f"and for sentiment {champion.sentiment_runtime}: {champion.meta['sentiment']['reason']}", flush=True)
        use_threads(answering_threads)
        floor = load_sentence_transformer(champion.encoder_name, "cpu")
        for runtime in ("torch", "onnx", "onnx-int8"):
            rows.append(measure(Engine(settings.replace(runtime=runtime, torch_threads=answering_threads)), "demo",
                                args.rounds, floor))
        rows.append(measure(Engine(settings.replace(sentiment_share_encoder=False, torch_threads=answering_threads)),
                            "demo-own", args.rounds, floor))  # the sentiment model's own pass for questions too
        head_settings = Settings.load(env={}, home=Path(tmp) / "demo-auto-head", torch_threads=answering_threads)
        rows.append(measure(Engine(head_settings), "demo-head", args.rounds, floor))
        if not (DATA / "dstc10_knowledge_faq").is_dir():
            print(f"no {DATA}/dstc10_knowledge_faq: skipping the 1k and 100k KBs")
            print(json.dumps(rows))
            return
        settings_1k = Settings.load(env={}, home=Path(tmp) / "kb1k")
        start = time.perf_counter()
        use_threads(default_threads)
        ingest([dstc_kb(Path(tmp) / "dstc1k.jsonl", 1000)], settings_1k)
        print(f"ingest 1k-article KB: {time.perf_counter() - start:.1f}s", flush=True)
        use_threads(answering_threads)
        floor_1k = load_sentence_transformer(VersionStore.from_settings(settings_1k).champion().encoder_name, "cpu")
        for runtime in ("torch", "onnx-int8"):
            rows.append(measure(Engine(settings_1k.replace(runtime=runtime, torch_threads=answering_threads)), "1k",
                                args.rounds, floor_1k))
        if not args.skip_large:
            rows.append(measure(large_index_engine(settings_1k, 100_000), "100k", args.rounds, floor_1k))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
