"""Sentiment benchmark: TweetEval test and the airline test split, shipped head vs the floor.

    python benchmarks/bench_sentiment.py [--data-dir ../shared/data] [--head builtin|PATH] [--ablations] [--cost N]

(a) floor: multinomial LR on the frozen final sentence embedding, trained in this run on the same
    data as the shipped head (SemEval pool + airline train);
(b) the shipped head (`models/assets/sentiment_head.npz`, or --head).
`--ablations` also trains, in this run and with the shipped recipe, heads on feature sets that
include layers 5/6 (which the shipped head may not read), to show what the layer constraint costs.
Features come from the cache of training/train_sentiment.py ($CSBOT_SENTIMENT_CACHE, default
/tmp/csbot-sentiment-cache); a cold run encodes ~77k tweets (about 10-20 min on 2 CPU cores).

Plain statements (neutral rows): every run also prints the neutral-class recall of each head on the
neutral rows, and where the others went (the share labelled negative / positive: the lean), of
TweetEval test, airline test and financial_phrasebank dev+test (news sentences, not
used for any choice; its dev and test splits shown apart). `--neutral-only` prints just that table for the shipped head (no floor to
train: needs only the test features). `--tune-neutral-offset OUT` picks the offset added to the
shipped head's neutral logit on the choosing sets (TweetEval val + airline dev: the offset with the
best mean macro-recall, the smallest on a tie) and writes the head with it to OUT (docs/sentiment.md).

The fine-tuned model (`models/assets/sentiment_lora.npz`, or --model: an artefact, or a team's own
classifier — a folder or hub name, with --sentiment-labels / --neutral-band as its settings, converted as
a build converts it; '' to leave it out) is shown
side by side with the head, as row (c) of both tables: it runs its own transformer pass, so its
test-set logits are cached too (keyed by the artefact's and the texts' hashes). `--model-only`
prints both tables for the shipped head and the model only (no floor to train). Every run ends with
per-text latency, one thread, one text at a time (`--latency N` texts from TweetEval test, 0 to skip):
the shared encoder pass alone (the old head's floor: the head itself rides on it), the old head
(encoder pass + head), and the fine-tuned model, with its ratio to the encoder pass. Row (d) (off
with --no-int8) is the fine-tuned model as the engine serves it on CPU: exported with
models/sentiment_onnx.py into the cache folder, ONNX int8, one text at a time; the latency table then
adds the int8 encoder pass, the old head on it, and the int8 model.

Serving cost (`--cost N`: only this table, on N TweetEval test texts; no accuracy tables): the builtin
fine-tuned model and a brought classifier side by side, each exported as a build exports it
(models/sentiment_onnx.py) and served on the runtime a build would choose (int8 when its labels agree
with torch on the probe texts, `choose_sentiment_runtime`), both ONNX variants timed: median ms per
message (one message a call) and msgs/s in batches of 64, one thread, with the brought model's ratio
to the builtin on the same variant; the old head (the int8 encoder pass + head) beside them. The
brought classifier is --model when it names one, else `same-size`: one built here from the builtin's
own base (MiniLM-L6 as an AutoModelForSequenceClassification with a fresh, untrained 3-label head, so
its labels mean nothing: it measures cost only).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from training import train_sentiment as ts  # noqa: E402

ABLATION_SPECS = ["layers:0,1,2,3,4,5,6", "layers:6", "layers:4"]
OFFSET_GRID = [round(0.05 * i, 2) for i in range(-10, 21)]  # -0.5 .. 1.0


def load_phrasebank(data_dir: Path, parts=("dev", "test")) -> "ts.Split":
    """financial_phrasebank (Malo et al. 2014): sentences from financial news, 3-way labelled."""
    import csv

    with open(data_dir / "financial_phrasebank" / "all.csv", newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["suggested_split"] in parts]
    name = "fpb_" + "_".join(parts)
    return ts.Split(name, [r["sentence"] for r in rows], [r["label_name"] for r in rows])


def label_recalls(split, predicted) -> dict:
    """Per-class recall, macro-recall and accuracy of predicted labels against the split's, and where
    the neutral rows went (`neutral_as`: the share of them labelled negative and positive: the lean)."""
    predicted, gold = np.asarray(predicted), np.array(split.labels)
    per = {label: float(np.mean(predicted[gold == label] == label)) for label in ts.LABELS if (gold == label).any()}
    neutral = predicted[gold == "neutral"]
    lean = {label: float(np.mean(neutral == label)) if len(neutral) else float("nan") for label in ("negative", "positive")}
    return {"n": len(gold), "per_class": per, "macro_recall": float(np.mean(list(per.values()))),
            "accuracy": float(np.mean(predicted == gold)), "neutral_as": lean}


BROUGHT_LABELS = ""  # --sentiment-labels: the names of LABEL_0.. of a brought classifier
BROUGHT_BAND: float | None = None  # --neutral-band: a binary brought classifier's neutral band


SAME_SIZE = "same-size"  # --model: a classifier of the builtin's size, built here (module doc)


def same_size_classifier(folder: Path) -> Path:
    """The builtin's base (MiniLM-L6) as an AutoModelForSequenceClassification with a fresh 3-label head
    (BERT's pooler + one linear layer), saved to `folder` once: a brought classifier of the builtin's
    size. Its head is untrained: its labels mean nothing, its cost is what it is for."""
    if (folder / "config.json").is_file():
        return folder
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from models.loading import resolve_model_path

    source = resolve_model_path("builtin:all-MiniLM-L6-v2")
    torch.manual_seed(0)
    id2label = dict(enumerate(ts.LABELS))
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=len(id2label), id2label=id2label,
                                                               label2id={v: k for k, v in id2label.items()})
    tmp = folder.with_name(folder.name + ".tmp")
    model.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(source).save_pretrained(tmp)
    tmp.replace(folder)
    return folder


def onnx_folder(artefact: Path, base: Path, log) -> Path:
    """The artefact's ONNX export (fp32 and int8, as a build exports it), made once under `base`."""
    import hashlib

    from models.sentiment_onnx import MANIFEST, export_sentiment

    folder = base / f"sentiment-onnx-{hashlib.sha1(Path(artefact).read_bytes()).hexdigest()[:16]}"
    if not (folder / MANIFEST).is_file():
        log(f"  exporting {artefact} to ONNX in {folder}")
        export_sentiment(artefact, folder)
    return folder


class ModelRow:
    """The fine-tuned model as a row of the tables: predictions from the texts, logits cached on disk."""

    def __init__(self, spec, cache_dir, log, runtime: str = "torch"):
        """`runtime`: torch (FineTunedSentiment), or onnx-int8 / onnx as the engine serves it (the
        artefact exported once into the cache folder by models/sentiment_onnx.py, one thread)."""
        import hashlib

        from models.sentiment_brought import bring, is_brought
        from models.sentiment_model import FineTunedSentiment, artefact_path

        base = Path(cache_dir) if cache_dir is not None else Path("/tmp/csbot-sentiment-cache")
        if spec == SAME_SIZE:
            spec = str(same_size_classifier(base / "same-size-classifier"))
        if is_brought(spec):  # a team's own classifier (a folder or a hub name): converted as a build does
            from core.settings import GeneralSettings

            spec = str(bring(spec, labels=BROUGHT_LABELS or GeneralSettings.sentiment_labels,
                             band=BROUGHT_BAND if BROUGHT_BAND is not None else GeneralSettings.sentiment_neutral_band,
                             cache=base / "brought"))
        self.path = artefact_path(spec)
        self.runtime = runtime
        if runtime == "torch":
            self.model = FineTunedSentiment.load(spec)
        else:
            from models.sentiment_onnx import OnnxSentiment

            self.model = OnnxSentiment(onnx_folder(self.path, base, log), "int8" if runtime == "onnx-int8" else "fp32",
                                       threads=1)
        self.cache_dir, self.log = cache_dir, log

    def labels_for(self, split) -> list[str]:
        import hashlib

        digest = hashlib.sha1(self.path.read_bytes() + self.runtime.encode())
        for text in split.texts:
            digest.update(text.encode("utf-8", "surrogatepass") + b"\0")
        path = None if self.cache_dir is None else Path(self.cache_dir) / f"lora-{split.name}-{digest.hexdigest()[:16]}.npy"
        if path is not None and path.is_file():
            logits = np.load(path)
        else:
            start = time.time()
            logits = self.model.logits(split.texts, batch_size=128)
            self.log(f"  fine-tuned model on {split.name}: {len(split.texts)} texts ({time.time() - start:.0f}s)")
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                np.save(path, logits)
        return [self.model.labels[i] for i in logits.argmax(axis=1)]


def row_recalls(row, split, encoded) -> dict:
    if isinstance(row, ModelRow):
        return label_recalls(split, row.labels_for(split))
    return recalls(row, split, encoded)


def recalls(head, split, encoded, offset: float = 0.0) -> dict:
    """Per-class recall, macro-recall and accuracy, with `offset` added to the neutral logit."""
    from models.heads import features_for

    logits = head.logits(features_for(head.feature_spec, encoded))
    logits[:, head.labels.index("neutral")] += offset
    return label_recalls(split, [head.labels[i] for i in logits.argmax(axis=1)])


def tune_neutral_offset(head, splits, encoded) -> tuple[float, list]:
    """The offset on OFFSET_GRID with the best mean macro-recall on `splits` (smallest |offset| on a tie)."""
    table = []
    for offset in OFFSET_GRID:
        scores = [recalls(head, s, e, offset)["macro_recall"] for s, e in zip(splits, encoded)]
        table.append((offset, float(np.mean(scores)), scores))
    best = max(table, key=lambda row: (round(row[1], 4), -abs(row[0])))
    return best[0], table


def neutral_table(rows, data_dir, cache_dir, encoder, log) -> None:
    splits = ts.eval_splits(data_dir, "test") + [load_phrasebank(data_dir, (part,)) for part in ("dev", "test")]
    encoded = ts.load_features(encoder, splits, cache_dir, log=log)
    width = max(len(name) for name, _ in rows) + 2
    print("\nneutral-class recall on the neutral rows (plain statements); macro-recall in brackets; the lean: "
          "the share of the neutral rows labelled negative / positive")
    print(f"{'head':<{width}}" + "".join(f"{s.name:>32}" for s in splits))
    for name, head in rows:
        cells = []
        for split, enc in zip(splits, encoded):
            r = row_recalls(head, split, enc)
            lean = r["neutral_as"]
            cells.append(f"{r['per_class']['neutral']:.3f} ({r['macro_recall']:.3f}) "
                         f"{lean['negative']:.2f}/{lean['positive']:.2f}")
        print(f"{name:<{width}}" + "".join(f"{c:>32}" for c in cells))
    print("(neutral rows: " + ", ".join(f"{s.name} {s.labels.count('neutral')}" for s in splits) + ")")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=ts.default_data_dir())
    parser.add_argument("--head", default="builtin")
    parser.add_argument("--encoder", default=ts.DEFAULT_ENCODER)
    parser.add_argument("--cache-dir", type=Path, default=ts.DEFAULT_CACHE)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ablations", action="store_true", help="also train heads that read layers 5/6")
    parser.add_argument("--model", default="builtin", help="fine-tuned model artefact, or a brought classifier "
                        "(a folder or hub name of any AutoModelForSequenceClassification, as `sentiment_model` takes "
                        "it); '' to leave it out")
    parser.add_argument("--sentiment-labels", default="", help="with a brought classifier: the names of "
                        "LABEL_0, LABEL_1, ... (the sentiment_labels setting)")
    parser.add_argument("--neutral-band", type=float, default=None, help="with a binary brought classifier: "
                        "the sentiment_neutral_band setting")
    parser.add_argument("--model-only", action="store_true", help="shipped head and fine-tuned model only, no floor")
    parser.add_argument("--no-int8", dest="int8", action="store_false",
                        help="leave out row (d): the fine-tuned model through ONNX int8, as served")
    parser.add_argument("--latency", type=int, default=200, help="texts timed one at a time, one thread (0: skip)")
    parser.add_argument("--cost", type=int, default=0, metavar="N",
                        help="only the serving-cost table on N texts: the builtin model, --model (default: "
                        f"{SAME_SIZE!r}, a classifier of its size built here) and the old head")
    parser.add_argument("--neutral-only", action="store_true", help="only the neutral-recall table, shipped head")
    parser.add_argument("--tune-neutral-offset", type=Path, metavar="OUT",
                        help="choose the neutral-logit offset on val and write the adjusted head to OUT")
    args = parser.parse_args(argv)

    import torch

    from models.sentiment import SentimentModel

    torch.set_num_threads(max(1, args.threads))
    started = time.time()
    cache_dir = args.cache_dir if str(args.cache_dir) else None
    encoder = ts.LazyEncoder(args.encoder)
    log = lambda message: print(message, file=sys.stderr)  # noqa: E731
    if args.tune_neutral_offset:
        return write_tuned_head(args, cache_dir, encoder, log)
    if args.cost:
        global BROUGHT_LABELS, BROUGHT_BAND
        BROUGHT_LABELS, BROUGHT_BAND = args.sentiment_labels, args.neutral_band
        serving_cost(args, ts.eval_splits(args.data_dir, "test")[0].texts, cache_dir, log)
        print(f"({time.time() - started:.0f}s)")
        return 0
    if args.neutral_only:
        shipped = SentimentModel.load(args.head).head
        neutral_table([(f"shipped: {args.head}", shipped)], args.data_dir, cache_dir, encoder, log)
        print(f"({time.time() - started:.0f}s)")
        return 0
    test_splits = ts.eval_splits(args.data_dir, "test")
    tests = ts.load_features(encoder, test_splits, cache_dir, log=log)

    rows = []
    if not args.model_only:
        train_splits = ts.training_splits(args.data_dir)
        train = ts.concat(ts.load_features(encoder, train_splits, cache_dir, log=log))
        labels = [label for split in train_splits for label in split.labels]
        log("training the floor")
        rows.append(("(a) floor: LR on final embedding", ts.train_floor_head(train, labels)))
    shipped = SentimentModel.load(args.head).head
    rows.append((f"(b) shipped: {shipped.feature_spec}" + (" MLP" if shipped.hidden_weights is not None else " LR"),
                 shipped))
    if args.ablations and not args.model_only:
        weight = ts.example_weights(train_splits)
        for spec in ABLATION_SPECS:
            log(f"training ablation {spec}")
            rows.append((f"    ablation: {spec} MLP", ts.train_head(train, labels, weight, feature_spec=spec,
                                                                    log=lambda m: None)))
    BROUGHT_LABELS, BROUGHT_BAND = args.sentiment_labels, args.neutral_band
    model_row = ModelRow(args.model, cache_dir, log) if args.model else None
    int8_row = ModelRow(args.model, cache_dir, log, runtime="onnx-int8") if args.model and args.int8 else None
    if model_row is not None:
        rows.append(("(c) fine-tuned: LoRA + head", model_row))
    if int8_row is not None:
        rows.append(("(d) fine-tuned, ONNX int8 (served)", int8_row))

    width = max(len(name) for name, _ in rows) + 2
    print(f"{'':<{width}}{'TweetEval test':^33}{'airline test':^33}")
    print(f"{'head':<{width}}" + f"{'macro-R':>11}{'acc':>11}{'neutral R':>11}" * 2)
    for name, head in rows:
        cells = []
        for split, encoded in zip(test_splits, tests):
            m = row_recalls(head, split, encoded)
            cells += [m["macro_recall"], m["accuracy"], m["per_class"]["neutral"]]
        print(f"{name:<{width}}" + "".join(f"{v:>11.4f}" for v in cells))
    print(f"(n: TweetEval test {len(test_splits[0].labels)}, airline test {len(test_splits[1].labels)}; "
          f"{time.time() - started:.0f}s)")
    neutral_table(rows, args.data_dir, cache_dir, encoder, log)
    if args.latency:
        latency_table(args, test_splits[0].texts, shipped, model_row, int8_row)
    return 0


def latency_table(args, texts, head, model_row, int8_row=None) -> None:
    """p50 / p99 per text, one thread, one text per call: encoder pass, old head, fine-tuned model."""
    import torch

    from models.encoder import Encoder
    from models.sentiment import SentimentModel

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    sample = [texts[i] for i in rng.choice(len(texts), size=min(args.latency, len(texts)), replace=False)]
    encoder = Encoder(args.encoder, "cpu")
    old = SentimentModel(head)

    fns = [("shared encoder pass alone (floor)", lambda t: encoder.encode([t])),
           ("(b) old head: encoder pass + head", lambda t: old.predict(encoder.encode([t])))]
    if model_row is not None:
        fns.append(("(c) fine-tuned model, own pass", lambda t: model_row.model.predict([t])))
    if int8_row is not None:
        from models.onnx_encoder import OnnxEncoder
        from models.sentiment_onnx import export_sentiment  # noqa: F401 (the int8 row's folder exists)
        from training.export import export_encoder

        folder = Path(int8_row.model.folder).parent / "encoder-onnx"
        if not (folder / "onnx.json").is_file():
            export_encoder(args.encoder, folder, "bench")
        int8_encoder = OnnxEncoder(folder, "int8", threads=1)
        fns.append(("int8 encoder pass (the served floor)", lambda t: int8_encoder.encode([t])))
        fns.append(("(b) old head on the int8 pass", lambda t: old.predict(int8_encoder.encode([t]))))
        fns.append(("(d) fine-tuned int8, own pass", lambda t: int8_row.model.predict([t])))
    for text in sample[:10]:  # warm-up
        for _, fn in fns:
            fn(text)
    times = [[] for _ in fns]
    for text in sample:  # interleaved, so a change in the machine's load hits every row alike
        for k, (_, fn) in enumerate(fns):
            start = time.perf_counter()
            fn(text)
            times[k].append((time.perf_counter() - start) * 1000)
    rows = [(name, (float(np.percentile(t, 50)), float(np.percentile(t, 99)))) for (name, _), t in zip(fns, times)]
    floor = rows[0][1][0]
    print(f"\nper-text latency, 1 thread, {len(sample)} TweetEval test texts one at a time, interleaved (torch, CPU)")
    print(f"{'':<38}{'p50 ms':>9}{'p99 ms':>9}{'p50 / torch encoder':>21}")
    for name, (p50, p99) in rows:
        print(f"{name:<38}{p50:>9.2f}{p99:>9.2f}{p50 / floor:>21.2f}")
    torch.set_num_threads(max(1, args.threads))


class Served:
    """A sentiment model as a build serves it (module doc): its ONNX export, both variants one thread
    each, and the runtime `choose_sentiment_runtime` picks from the export's agreement with torch."""

    def __init__(self, name: str, spec: str, cache_dir, log):
        from core.settings import GeneralSettings
        from models.runtimes import choose_sentiment_runtime
        from models.sentiment_onnx import OnnxSentiment, read_manifest

        row = ModelRow(spec, cache_dir, log, runtime="onnx-int8")  # converts a brought model, exports once
        folder = row.model.folder
        figures = {v: e.get("vs_torch") for v, e in read_manifest(folder)["variants"].items()}
        self.name, self.source = name, str(row.path)
        self.served, self.reason = choose_sentiment_runtime(
            figures.get("fp32"), figures.get("int8"), min_agreement=GeneralSettings.sentiment_int8_min_agreement,
            cosine_floor=GeneralSettings.int8_cosine_floor)
        self.variants = {"onnx-int8": row.model, "onnx": OnnxSentiment(folder, "fp32", threads=1)}


def serving_cost(args, texts, cache_dir, log, batch_size: int = 64, repeats: int = 3) -> dict:
    """The serving-cost table (module doc); returns its figures {row: {"runtime", "ms", "msgs_s"}}."""
    import torch

    from models.onnx_encoder import OnnxEncoder
    from models.sentiment import SentimentModel
    from training.export import export_encoder

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    sample = [texts[i] for i in rng.choice(len(texts), size=min(args.cost, len(texts)), replace=False)]
    other = SAME_SIZE if args.model in ("", "builtin") else args.model
    models = [Served("builtin", "builtin", cache_dir, log), Served(f"brought: {other}", other, cache_dir, log)]
    base = Path(cache_dir) if cache_dir is not None else Path("/tmp/csbot-sentiment-cache")
    folder = base / "encoder-onnx"
    if not (folder / "onnx.json").is_file():
        export_encoder(args.encoder, folder, "bench")
    encoder, old = OnnxEncoder(folder, "int8", threads=1, workers=1), SentimentModel.load(args.head)
    rows = [(m.name, runtime, model.predict) for m in models for runtime, model in m.variants.items()]
    rows.append(("old head on the int8 encoder pass", "onnx-int8", lambda batch, batch_size=batch_size:
                 old.predict(encoder.encode(batch))))
    for text in sample[:10]:  # warm-up
        for _, _, fn in rows:
            fn([text])
    single = [[] for _ in rows]
    for text in sample:  # interleaved, so a change in the machine's load hits every row alike
        for k, (_, _, fn) in enumerate(rows):
            start = time.perf_counter()
            fn([text])
            single[k].append((time.perf_counter() - start) * 1000)
    batched = [[] for _ in rows]
    for _ in range(repeats):
        for k, (_, _, fn) in enumerate(rows):
            start = time.perf_counter()
            for i in range(0, len(sample), batch_size):
                fn(sample[i:i + batch_size], batch_size=batch_size)
            batched[k].append(len(sample) / (time.perf_counter() - start))
    figures = {f"{name} [{runtime}]": {"runtime": runtime, "ms": float(np.median(t)), "msgs_s": float(np.median(b))}
               for (name, runtime, _), t, b in zip(rows, single, batched)}
    _print_cost(figures, models, len(sample), batch_size)
    return figures


def _print_cost(figures: dict, models: list, n: int, batch_size: int) -> None:
    builtin = {f["runtime"]: f for key, f in figures.items() if key.startswith("builtin [")}
    served = {f"{m.name} [{m.served}]" for m in models}
    print(f"\nserving cost per message, {n} TweetEval test texts, 1 thread (ONNX on CPU); "
          f"batch: {batch_size} messages a call; * = the runtime a build serves")
    print(f"{'':<58}{'median ms':>10}{'× builtin':>10}{'msgs/s':>9}{'× builtin':>10}")
    for key, f in figures.items():
        ref = builtin[f["runtime"]]
        mark = "*" if key in served else " "
        print(f"{mark} {key:<56}{f['ms']:>10.2f}{f['ms'] / ref['ms']:>10.2f}{f['msgs_s']:>9.1f}"
              f"{f['msgs_s'] / ref['msgs_s']:>10.2f}")
    for m in models:
        print(f"{m.name}: serves {m.served} ({m.reason}); artefact {m.source}")


def write_tuned_head(args, cache_dir, encoder, log) -> int:
    """Choose the neutral-logit offset on the choosing sets and write the shipped head with it."""
    from models.sentiment import SentimentModel

    head = SentimentModel.load(args.head).head
    already = float(head.info.get("neutral_logit_offset", 0.0))
    if already:
        head.bias[head.labels.index("neutral")] -= already  # tune from the trained head, not on top
    splits = ts.eval_splits(args.data_dir, "val")
    encoded = ts.load_features(encoder, splits, cache_dir, log=log)
    offset, table = tune_neutral_offset(head, splits, encoded)
    for value, mean, scores in table:
        print(f"offset {value:+.2f}: mean macro-recall {mean:.4f} ({', '.join(f'{x:.4f}' for x in scores)})")
    head.bias[head.labels.index("neutral")] += offset
    head.info = {**head.info, "neutral_logit_offset": offset,
                 "neutral_logit_offset_chosen_on": [s.name for s in splits]}
    head.save(args.tune_neutral_offset, half=True)
    print(f"chose offset {offset:+.2f}; wrote {args.tune_neutral_offset}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
