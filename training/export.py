"""Compressed serving at build time: export a version's encoder to ONNX (fp32 and int8) and choose the
runtime that serves it (docs/benchmarks.md "Encoder runtimes").

`prepare_runtime(draft, source, ...)` runs inside `training/build.py` before anything is encoded:

1. The encoder (the version's fine-tuned folder, or the configured base) is exported with
   models/onnx_export.py into the draft's `onnx/` folder. An export of the same weights made earlier
   in this process, or the one beside a reused encoder folder (a retrain's reference build reuses the
   champion's), is hard-linked instead of exported again.
2. fp32 ONNX and int8 are scored on the same probe rows: the KB's example questions (else its section
   headings), each labelled with its article's intent, matched to the nearest article title or
   heading (not itself) by each runtime's embeddings; and the int8 embeddings' cosine to torch (the 5th
   percentile over the probe texts and titles). `models.runtimes.choose_runtime` applies the rule:
   int8 when within `int8_margin` of fp32 and its cosine ≥ `int8_cosine_floor`, else fp32 ONNX, else
   torch.
3. The chosen runtime's encoder is returned: the build encodes the index, fits the intent head and
   tunes the thresholds with it, so index and queries come from the same runtime (the index records
   it in its encoder version).

`runtime = "torch"` (the setting) skips all of it; CUDA builds serve torch. A forced `onnx` or
`onnx-int8` exports and measures, and serves what it says.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np

from models.runtimes import VARIANT_OF_RUNTIME, choose_runtime, load_encoder
from models.onnx_files import MANIFEST

log = logging.getLogger(__name__)

PROBE_ROWS = 400  # probe questions at most (a deterministic sample)
TARGETS = 3000  # titles and headings at most
_EXPORTS: dict[str, Path] = {}  # encoder version -> a folder holding its complete export (this process)


def wants_onnx(settings) -> bool:
    """Whether a build exports the encoder: not with runtime = torch, not on CUDA."""
    from models.loading import pick_device

    return settings.runtime != "torch" and not pick_device(settings.device).startswith("cuda")


def export_encoder(source: str, folder: Path, encoder_version: str, *, reuse: Path | None = None,
                   token_states_layer: int | None = None, progress=None) -> dict:
    """The ONNX export of `source` in `folder` (linked from an earlier one of the same weights, and
    the same `token_states_layer`, traced as exports are now, when there is one); returns its manifest."""
    from models.onnx_export import export_onnx, read_manifest

    for candidate in (reuse, _EXPORTS.get(encoder_version)):
        if candidate is None or not (Path(candidate) / MANIFEST).is_file():
            continue
        try:
            found = read_manifest(candidate)
        except Exception:  # noqa: BLE001 - an unreadable earlier export is simply not reused
            continue
        # (an export from before the manifests recorded the attention traced, i.e. before exports traced
        # eager attention, is made again: it would serve slower)
        if (found.get("token_states") or {}).get("layer") == token_states_layer and "attention" in found:
            _link_tree(Path(candidate), folder)
            log.info("ONNX export of %s reused from %s", source, candidate)
            return read_manifest(folder)
    if progress is not None:
        progress("exporting the encoder to ONNX (fp32 and int8)")
    started = time.perf_counter()
    try:
        manifest = export_onnx(source, folder, measure=False, token_states_layer=token_states_layer)
    except OSError:
        raise
    except Exception as exc:  # tokenizers and onnx report a full disk as a plain Exception
        if "no space left" in str(exc).lower():
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder)) from exc
        raise
    log.info("encoder exported to ONNX fp32 and int8 in %.1fs", time.perf_counter() - started)
    _EXPORTS[encoder_version] = folder
    return manifest


def remember(encoder_version: str, folder: Path | None) -> None:
    """After a version is committed (its draft folder renamed), point later builds at its export."""
    if folder is not None and (Path(folder) / MANIFEST).is_file():
        _EXPORTS[encoder_version] = Path(folder)


def prepare_runtime(draft, source: str, encoder_version: str, documents, settings, torch_encoder,
                    *, reuse: Path | None = None, verdict: dict | None = None, progress=None):
    """Export, measure and choose (module doc). Returns (encoder to build with, runtime record).
    `verdict` ({"served", "reason", "heldout"}): the retrain gate's choice on its held-out set, which
    overrides the probe's (`heldout_verdict`)."""
    started = time.perf_counter()
    layer = shared_sentiment_layer(settings)
    if layer is not None and not 1 <= layer < torch_encoder.n_layers:  # an encoder too shallow to share
        layer = None
    manifest = export_encoder(source, draft.onnx_dir, encoder_version, reuse=reuse,
                              token_states_layer=layer, progress=progress)
    if progress is not None:
        progress("choosing the runtime: ONNX fp32 or int8")
    fp32 = load_encoder(draft.onnx_dir, "onnx", threads=settings.torch_threads)
    int8 = load_encoder(draft.onnx_dir, "onnx-int8", workers=settings.batch_threads)
    probes, targets = _probe(documents)
    scores = {"probe_rows": len(probes)}
    texts = [t for t, _ in probes] + [t for t, _ in targets]
    reference = torch_encoder.embed(texts)
    embedded = {"onnx": fp32.embed(texts), "onnx-int8": int8.embed(texts)}
    correct = {runtime: _correct(vectors, probes, targets) for runtime, vectors in embedded.items()}
    for runtime, right in correct.items():
        scores[f"{runtime}_accuracy"] = None if right is None else round(float(np.mean(right)), 4)
    discordant = None
    if correct["onnx"] is not None:
        discordant = discordant_rows(correct["onnx"], correct["onnx-int8"])
        scores["only_fp32_right"], scores["only_int8_right"] = discordant
    cosines = np.sum(reference * embedded["onnx-int8"], axis=1)
    scores["int8_cosine_p5"] = round(float(np.percentile(cosines, 5)), 4) if len(cosines) else None
    scores["int8_cosine_min"] = round(float(cosines.min()), 4) if len(cosines) else None
    fp32_accuracy, int8_accuracy = scores["onnx_accuracy"], scores["onnx-int8_accuracy"]
    if fp32_accuracy is None:  # nothing to score (a one-article KB): the embeddings' agreement decides
        fp32_accuracy = int8_accuracy = 1.0
    chosen, reason = choose_runtime(fp32_accuracy, int8_accuracy, scores["int8_cosine_p5"],
                                    margin=settings.int8_margin, cosine_floor=settings.int8_cosine_floor,
                                    discordant=discordant)
    if settings.runtime != "auto":
        chosen, reason = settings.runtime, f"runtime = {settings.runtime} (setting); measured: {reason}"
    elif verdict is not None:
        chosen, reason = verdict["served"], verdict["reason"]
        scores["heldout"] = verdict.get("heldout")
    record = {"served": chosen, "reason": reason, "scores": scores,
              "export": {"opset": manifest.get("opset"), "bytes": {v: e.get("bytes") for v, e in manifest["variants"].items()}},
              "seconds": round(time.perf_counter() - started, 2)}
    log.info("runtime %s: %s", chosen, reason)
    return {"onnx": fp32, "onnx-int8": int8}.get(chosen, torch_encoder), record


def shared_sentiment_layer(settings) -> int | None:
    """The hidden state the encoder's export should also output for the fine-tuned sentiment model's
    tail (models/sentiment_onnx.py), or None: no model, `sentiment_share_encoder` off, nothing to share."""
    if not (settings.uses_sentiment_model and settings.sentiment_share_encoder):
        return None
    from models.sentiment_model import artefact_shared_layers

    return artefact_shared_layers(sentiment_artefact(settings))


def sentiment_artefact(settings) -> Path:
    """The artefact a build copies for `settings.sentiment_model`: "builtin" or an artefact file as it
    is; a classifier's folder or hub name turned into one (models/sentiment_brought.py `bring`)."""
    from models.sentiment_brought import bring, is_brought
    from models.sentiment_model import artefact_path

    spec = str(settings.sentiment_model).strip()
    if not is_brought(spec):
        return artefact_path(spec)
    return bring(spec, labels=settings.sentiment_labels, band=settings.sentiment_neutral_band,
                 cache=Path(settings.home) / "cache" / "sentiment")


def heldout_verdict(settings, version, score) -> dict | None:
    """The retrain gate's runtime choice: the candidate `version` (built in the gate's home) scored on
    the held-out rows with fp32 ONNX and with int8 (`score(runtime) -> evaluate() report`, with its
    per-row "correct" where the sign test should read them), under the
    same rule. None when there is nothing to choose (runtime forced, CUDA, no export)."""
    if settings.runtime != "auto" or not wants_onnx(settings) or version.onnx_dir is None:
        return None
    fp32_report, int8_report = score("onnx"), score("onnx-int8")
    fp32, int8 = fp32_report.get("accuracy"), int8_report.get("accuracy")
    cosine = ((version.meta.get("runtime") or {}).get("scores") or {}).get("int8_cosine_p5")
    discordant = None
    if fp32_report.get("correct") is not None and int8_report.get("correct") is not None:
        discordant = discordant_rows(fp32_report["correct"], int8_report["correct"])
    served, reason = choose_runtime(fp32, int8, cosine, margin=settings.int8_margin,
                                    cosine_floor=settings.int8_cosine_floor, discordant=discordant)
    heldout = {"onnx_accuracy": fp32, "onnx-int8_accuracy": int8, "int8_cosine_p5": cosine}
    if discordant is not None:
        heldout["only_fp32_right"], heldout["only_int8_right"] = discordant
    return {"served": served, "reason": f"on the retrain's held-out set: {reason}", "heldout": heldout}


def _probe(documents) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    from retrieval.kb import SECTION_SEP, split_sections

    targets, headings, questions = [], [], []
    for doc in documents:
        targets.append((doc.title, doc.label))
        for section in split_sections(doc):
            if section.heading:
                text = SECTION_SEP.join(section.path)
                targets.append((text, doc.label))
                headings.append((text, doc.label))
        questions.extend((q, doc.label) for q in doc.questions)
    probes = questions if len(questions) >= 10 else questions + headings
    return _sample(probes, PROBE_ROWS), _sample(targets, TARGETS)


def _sample(rows: list, limit: int) -> list:
    if len(rows) <= limit:
        return rows
    keep = np.random.default_rng(13).choice(len(rows), size=limit, replace=False)
    return [rows[i] for i in sorted(keep)]


def discordant_rows(fp32_right, int8_right) -> tuple[int, int]:
    """(rows only fp32 got right, rows only int8 got right): what `choose_runtime`'s sign test reads."""
    a, b = np.asarray(fp32_right, dtype=bool), np.asarray(int8_right, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"the two variants were scored on different rows ({a.shape} against {b.shape})")
    return int(np.sum(a & ~b)), int(np.sum(~a & b))


def _correct(vectors: np.ndarray, probes, targets) -> np.ndarray | None:
    """Per probe row: is its nearest title/heading (other than its own text) of its intent?"""
    if not probes or len({label for _, label in targets}) < 2:
        return None
    q, t = vectors[:len(probes)], vectors[len(probes):]
    sims = q @ t.T
    target_texts = [text for text, _ in targets]
    for i, (text, _) in enumerate(probes):
        for j, other in enumerate(target_texts):
            if other == text:
                sims[i, j] = -np.inf
    best = np.argmax(sims, axis=1)
    return np.array([targets[j][1] == label for j, (_, label) in zip(best, probes)], dtype=bool)


def _link_tree(source: Path, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.is_file():
            target = folder / path.name
            try:
                os.link(path, target)
            except OSError:  # another filesystem, or links not allowed
                shutil.copyfile(path, target)


# ----- the fine-tuned sentiment model -------------------------------------------------------------
_SENTIMENT_EXPORTS: dict[str, Path] = {}  # artefact sha256 -> a committed folder holding its export (this process)


def prepare_sentiment(draft, artefact: Path, settings, versions=None, encoder_runtime: str = "torch",
                      progress=None) -> dict:
    """Copy the fine-tuned sentiment model into the draft, export it to ONNX fp32 and int8 (hard-linked
    from an earlier export of the same artefact: this process's, or one of the newest versions'), and
    choose its runtime (`models.runtimes.choose_sentiment_runtime`, from the export's agreement with
    torch on the fixed probe texts). When the draft's encoder export (served on `encoder_runtime`) can
    feed the model's tail, the shared path is measured against the model's own pass (`shared`).
    Returns the record for the version's meta "sentiment"."""
    from models.onnx_export import sha256_file
    from models.runtimes import choose_sentiment_runtime
    from models.sentiment_onnx import MANIFEST, export_sentiment, read_manifest

    started = time.perf_counter()
    copied = draft.save_sentiment_model(Path(artefact))
    sha = sha256_file(copied)
    record = {"model": "fine-tuned", "source": str(artefact), "artefact_sha256": sha, **_brought_record(copied)}
    if not wants_onnx(settings):
        return {**record, "served": "torch", "reason": "runtime = torch, or CUDA: no ONNX export"}
    manifest, record["export"] = None, "exported"
    for candidate in [_SENTIMENT_EXPORTS.get(sha), *_recent_sentiment_exports(versions)]:
        if candidate is None or not (Path(candidate) / MANIFEST).is_file():
            continue
        try:
            found = read_manifest(candidate)
        except Exception:  # noqa: BLE001 - an unreadable old export is simply not reused
            continue
        if (found.get("artefact") or {}).get("sha256") == sha and "attention" in found:
            _link_tree(Path(candidate), draft.sentiment_onnx_dir)
            manifest = read_manifest(draft.sentiment_onnx_dir)
            record.update(export="reused", reused_from=str(candidate))
            log.info("sentiment model's ONNX export reused from %s", candidate)
            break
    if manifest is None:
        if progress is not None:
            progress("exporting the sentiment model to ONNX (fp32 and int8)")
        manifest = export_sentiment(copied, draft.sentiment_onnx_dir)
        log.info("sentiment model exported to ONNX fp32 and int8 in %.1fs", manifest["export_seconds"])
    figures = {variant: entry.get("vs_torch") for variant, entry in manifest["variants"].items()}
    chosen, reason = choose_sentiment_runtime(figures.get("fp32"), figures.get("int8"),
                                              min_agreement=settings.sentiment_int8_min_agreement,
                                              cosine_floor=settings.int8_cosine_floor)
    if settings.runtime != "auto":
        chosen, reason = settings.runtime, f"runtime = {settings.runtime} (setting); measured: {reason}"
    if "brought" in record:  # `csbot models` prints the reason: say whose model it is
        reason = f"brought classifier {record['brought']['source']}: {reason}"
    log.info("sentiment runtime %s: %s", chosen, reason)
    record.update(served=chosen, reason=reason, scores=figures)
    record["shared"] = _prepare_shared(draft, settings, encoder_runtime, chosen)
    return {**record, "seconds": round(time.perf_counter() - started, 2)}


def _prepare_shared(draft, settings, encoder_runtime: str, sentiment_runtime: str) -> dict:
    """Whether a question's sentiment continues from the encoder pass (meta "sentiment"."shared"):
    both exports must fit (`shares_prefix_with`) and, on the runtimes the build chose, the shared
    path's labels must agree with the model's own pass on ≥ `sentiment_int8_min_agreement` of the
    probe texts (`models.runtimes.choose_shared`)."""
    from models.onnx_export import read_manifest as read_encoder_manifest
    from models.runtimes import choose_shared
    from models.sentiment_onnx import OnnxSentiment, compare_shared, probe_texts, shares_prefix_with
    from models.sentiment_onnx import read_manifest as read_sentiment_manifest

    pair = f"{encoder_runtime}/{sentiment_runtime}"
    off = {"served": False, "pair": pair}
    if not settings.sentiment_share_encoder:
        return {**off, "reason": "sentiment_share_encoder = false (setting)"}
    if "torch" in (encoder_runtime, sentiment_runtime) or not (draft.onnx_dir / MANIFEST).is_file():
        return {**off, "reason": "the encoder or the sentiment model is served by torch"}
    encoder_manifest = read_encoder_manifest(draft.onnx_dir)
    sentiment_manifest = read_sentiment_manifest(draft.sentiment_onnx_dir)
    problem = shares_prefix_with(encoder_manifest, sentiment_manifest)
    if problem:
        return {**off, "reason": problem}
    encoder = load_encoder(draft.onnx_dir, encoder_runtime, threads=settings.torch_threads,
                           workers=settings.batch_threads)
    sentiment = OnnxSentiment(draft.sentiment_onnx_dir, VARIANT_OF_RUNTIME[sentiment_runtime],
                              threads=settings.torch_threads, workers=settings.batch_threads)
    figures = compare_shared(encoder, sentiment, probe_texts())
    served, reason = choose_shared(figures, min_agreement=settings.sentiment_int8_min_agreement)
    log.info("sentiment from the encoder pass's hidden state %s: %s", sentiment_manifest["tail"]["layer"], reason)
    return {"served": served, "pair": pair, "layer": sentiment_manifest["tail"]["layer"], "reason": reason,
            "agreement": figures}


def remember_sentiment(version) -> None:
    """After a version is committed, point later builds in this process at its sentiment export."""
    folder = version.sentiment_onnx_dir
    sha = (version.meta.get("sentiment") or {}).get("artefact_sha256")
    if folder is not None and sha:
        _SENTIMENT_EXPORTS[sha] = folder


def _recent_sentiment_exports(versions, newest: int = 5) -> list[Path]:
    if versions is None:
        return []
    out = []
    for name in reversed(versions.local_names()[-newest:]):  # exports on this disk (none is fetched for it)
        try:
            folder = versions.get(name).sentiment_onnx_dir
        except Exception:  # noqa: BLE001 - an unreadable version is skipped
            continue
        if folder is not None:
            out.append(folder)
    return out


def _brought_record(artefact: Path) -> dict:
    """For a classifier a team brought (models/sentiment_brought.py): meta "sentiment" "brought" (its
    source, the canonical name of each of its labels, the neutral band of a binary one)."""
    from models.sentiment_brought import read_brought

    found = read_brought(artefact)
    if found is None:
        return {}
    meta = found[0]
    return {"brought": {"source": meta["source"], "model_labels": meta["model_labels"],
                        **({"neutral_band": meta["neutral_band"]} if "neutral_band" in meta else {})}}
