"""The nightly retrain: feedback → datasets → encoder fine-tuning (+ sentiment head) → new version
→ gate against the champion on a frozen held-out set → promote (the running bot hot-reloads) or reject.

    python training/retrain.py [--device auto|cpu|cuda] [--dry-run] [--since WHEN] [--force] [--json]
    csbot retrain              (the same code and options)

Only CSBOT_HOME (or a csbot.toml) needs to be set. Exit codes:

    0  promoted: a new champion is served
    0  nothing to do because the feedback table is empty (a fresh install; a message says so)
    3  nothing to do (message says why: no new feedback, too little new data, no model yet,
       another retrain holds the lock)
    4  rejected by the gate: the champion keeps serving (the report says which rule failed)
    5  not promoted: another writer (ingest, forget, `csbot models`) changed the champion while the
       run trained; the feedback is not consumed, so the next run trains on the new champion
    1  error (the champion keeps serving; the log and the training-runs table say what happened)
    2  bad usage or configuration

A dry run (`--dry-run`) reads the feedback, builds the datasets and prints what a run would train
on; it trains nothing and writes nothing but its log (exit 0). Every other run is recorded in the store's
training-runs table and, when it got as far as training, in `CSBOT_HOME/reports/` (JSON and
Markdown; `retrain-latest.json` is always the newest). The log goes to stderr and to
`CSBOT_HOME/logs/retrain-<time>.log`. See docs/retrain.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):  # run as a script: `python training/retrain.py`
    sys.path.insert(0, str(REPO))

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import datetime, timezone  # noqa: E402

from core.answer import OUT_OF_SCOPE  # noqa: E402
from core.errors import CsbotError, UserError  # noqa: E402
from core.settings import ConfigError, RetrainSettings, Settings  # noqa: E402

EXIT_PROMOTED = 0
EXIT_EMPTY = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOTHING = 3
EXIT_REJECTED = 4
EXIT_SUPERSEDED = 5

# The gate's verdicts; runs with them use up their feedback (the store owns that and the watermark).
from store.runs import PROMOTED, REJECTED  # noqa: E402

NOTHING, ERROR, DRY_RUN = "nothing-to-do", "error", "dry-run"
SUPERSEDED = "champion-changed"  # not in CONSUMING_STATUSES: the next run reads the same feedback

log = logging.getLogger("csbot.retrain")


@dataclass
class Outcome:
    status: str
    exit_code: int
    message: str
    report: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"status": self.status, "exit_code": self.exit_code, "message": self.message, **self.report}


# ----- command line -------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="training and scoring device (default: the device setting)")
    parser.add_argument("--dry-run", action="store_true", help="build the datasets and report them; train and write nothing")
    parser.add_argument("--since", metavar="WHEN", help="read feedback newer than WHEN (date, ISO time or age like 7d) "
                        "instead of since the last run")
    parser.add_argument("--force", action="store_true", help="train even with less new data than min_new_examples")
    parser.add_argument("--method", choices=["full", "lora"], help="top-layer fine-tuning: full weights or LoRA (default: config)")
    parser.add_argument("--json", action="store_true", help="print the outcome as one JSON object")
    parser.add_argument("--quiet", action="store_true", help="log warnings only on stderr (the log file keeps everything)")


def run_cli(args) -> int:
    """The shared body of `python training/retrain.py` and `csbot retrain`."""
    try:
        settings = Settings.load(device=args.device, retrain_device=args.device, retrain_method=args.method)
        config = settings.retrain
        if args.since is not None:
            from core.clock import parse_since

            parse_since(args.since)  # a bad --since is bad usage, not a failed run
    except (ConfigError, CsbotError) as exc:
        print(f"retrain: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from core.output import Progress, out

    # Our progress line on a terminal (not with --quiet, not when stderr is a file or pipe); the
    # stage log lines print above it.
    with Progress("retraining", quiet=args.quiet) as progress:
        log.addFilter(progress.filter)
        try:
            outcome = retrain(settings, config, since=args.since, force=args.force, dry_run=args.dry_run,
                              quiet=args.quiet)
        finally:
            log.removeFilter(progress.filter)

    if args.json:
        out(json.dumps(outcome.to_json(), default=str))
    else:
        out(outcome.message)
    return outcome.exit_code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="retrain", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: 2 on bad usage, 0 on --help
        return int(exc.code or 0)
    import contextlib

    from core import output
    from core.runtime import quiet_libraries

    # As under `csbot retrain`: stdout carries only the result (one JSON object with --json);
    # whatever the libraries print while training goes to stderr.
    quiet_libraries()
    output.set_stdout(sys.stdout)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            return run_cli(args)
    finally:
        output.set_stdout(None)


# ----- the run ------------------------------------------------------------------------------------

def retrain(settings: Settings, config: RetrainSettings | None = None, *, since=None, force: bool = False, dry_run: bool = False,
            quiet: bool = False) -> Outcome:
    """One retrain under the lock; never raises (errors become Outcome(status="error")). `config`
    defaults to `settings.retrain`."""
    config = config or settings.retrain
    from training.lock import LockBusy, RetrainLock

    home = Path(settings.home)
    home.mkdir(parents=True, exist_ok=True)
    handler = _setup_logging(home, quiet=quiet)
    lock = RetrainLock(home)
    try:
        try:
            lock.acquire()
        except LockBusy as exc:
            log.info("%s", exc)
            return Outcome(NOTHING, EXIT_NOTHING, f"nothing to do: {exc}")
        try:
            return _Run(settings, config, since=since, force=force, dry_run=dry_run).execute()
        finally:
            lock.release()
    finally:
        if handler is not None:
            log.removeHandler(handler)
            handler.close()


def _setup_logging(home: Path, *, quiet: bool) -> logging.Handler | None:
    log.setLevel(logging.INFO)
    log.propagate = False
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    if not any(getattr(h, "_csbot_stderr", False) for h in log.handlers):
        stderr = logging.StreamHandler(sys.stderr)
        stderr._csbot_stderr = True  # type: ignore[attr-defined]
        log.addHandler(stderr)
    for h in log.handlers:
        if getattr(h, "_csbot_stderr", False):
            h.setFormatter(fmt)
            h.setLevel(logging.WARNING if quiet else logging.INFO)
    try:
        (home / "logs").mkdir(exist_ok=True)
        handler = logging.FileHandler(home / "logs" / f"retrain-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.log",
                                      encoding="utf-8")
    except OSError:
        return None
    handler.setFormatter(fmt)
    log.addHandler(handler)
    for name in ("transformers", "sentence_transformers"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return handler


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _Run:
    def __init__(self, settings: Settings, config: RetrainSettings, *, since, force: bool, dry_run: bool):
        self.settings, self.config = settings, config
        self.since, self.force, self.dry_run = since, force, dry_run
        self.started_at = _now()
        self.t0 = time.perf_counter()
        self.timings: dict[str, float] = {}
        self.report: dict = {"started_at": self.started_at, "dry_run": dry_run, "config": config.to_dict()}
        self.store = None
        self.work: Path | None = None
        self.rows: list[dict] = []

    # -- helpers --------------------------------------------------------------------------------
    def _timed(self, name: str, started: float) -> None:
        self.timings[name] = round(time.perf_counter() - started, 2)

    def _finish(self, status: str, code: int, message: str, *, consumed: bool = False, write_report: bool = False) -> Outcome:
        from serving.versions import code_revision

        self.report.update({"status": status, "message": message, "exit_code": code,
                            "seconds": round(time.perf_counter() - self.t0, 2), "timings": self.timings,
                            "code_revision": code_revision()})
        if self.dry_run:
            return Outcome(DRY_RUN if status != ERROR else ERROR, code if status == ERROR else 0, message, self.report)
        if write_report:
            from training.gate import write_report

            try:
                json_path, md_path = write_report(self.settings.home, self.report)
                self.report.update({"report_json": str(json_path), "report_md": str(md_path)})
            except OSError as exc:
                log.warning("could not write the report: %s", exc)
        if self.store is not None:
            try:
                self.store.record_training_run(
                    started_at=self.started_at, status=status, model_version=self.report.get("served"),
                    data_until=self.report.get("data_until") if consumed else None, n_feedback=len(self.rows),
                    metrics={"champion": _summary(self.report.get("champion_metrics")),
                             "candidate": _summary(self.report.get("candidate_metrics"))},
                    notes=message, composer=_composer_summary(self.report.get("composer")), **{k: self.report.get(k) for k in (
                        "champion", "candidate", "champion_scored_as", "counts", "decision", "report_json",
                        "report_md", "seconds", "timings", "exit_code", "since", "sentiment", "training")})
            except Exception as exc:  # noqa: BLE001 - the outcome stands even if it cannot be recorded
                log.warning("could not record the training run: %s", exc)
        log.info("%s", message)
        return Outcome(status, code, message, self.report)

    # -- the steps --------------------------------------------------------------------------------
    def execute(self) -> Outcome:
        from serving.versions import VersionStore
        from store import Store

        versions = VersionStore(self.settings.models_dir)
        try:
            if not self.dry_run:
                removed = _clean_partial_if_idle(self.settings.home, versions) + _remove_orphan_candidates(versions)
                if removed:
                    log.info("removed %d folder(s) left by an interrupted run", removed)
            work_root = Path(self.settings.home) / "work"
            if not self.dry_run:
                shutil.rmtree(work_root, ignore_errors=True)
            self.work = work_root / f"retrain-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{os.getpid()}"
            self.store = Store.from_settings(self.settings)
            return self._execute(versions)
        except Exception as exc:  # noqa: BLE001 - an error never takes the champion down
            log.error("retrain failed: %s\n%s", exc, traceback.format_exc())
            self.report["error"] = f"{type(exc).__name__}: {exc}"
            return self._finish(ERROR, EXIT_ERROR, f"error: {type(exc).__name__}: {exc} (the champion keeps serving)")
        finally:
            if self.store is not None:
                self.store.close()
            if self.work is not None:
                shutil.rmtree(self.work, ignore_errors=True)

    def _execute(self, versions) -> Outcome:
        from serving.versions import VersionError
        from training.feedback_data import build_feedback_data, merge_with_replay, normalize
        from training.gate import HeldoutSet, training_documents

        config, settings, store = self.config, self.settings, self.store
        step = time.perf_counter()
        if store.counts()["feedback"] == 0:
            return self._finish(NOTHING, EXIT_EMPTY, "nothing to do: the feedback table is empty")
        try:
            champion = versions.champion()
        except VersionError:
            return self._finish(NOTHING, EXIT_NOTHING, "nothing to do: no model version yet (run `csbot ingest PATH`)")
        self.report.update({"champion": champion.name, "served": champion.name})
        since = self.since if self.since is not None else store.feedback_watermark()
        self.report["since"] = since
        self.rows = store.feedback_since(since, limit=config.max_feedback_rows)
        log.info("champion %s; %d feedback rows since %s", champion.name, len(self.rows), since or "the beginning")
        if not self.rows and not self.force:
            return self._finish(NOTHING, EXIT_NOTHING, f"nothing to do: no new feedback since {since}")

        documents = champion.documents()
        heldout = HeldoutSet.load(settings.home)
        added_kb = heldout.update_from_kb(documents, config)
        admins = {store.hash_user(u) for u in (settings.slack.admin_users).split(",") if u.strip()}
        data = build_feedback_data(self.rows, documents, config=config, admin_hashes=admins, heldout_texts=heldout.texts())
        added_admin = heldout.add_admin(data.admin_heldout)
        added_feedback = heldout.add_feedback(data.labelled, config)
        if (added_kb or added_admin or added_feedback) and not self.dry_run:
            heldout.save()
        exclude = heldout.texts()
        self.exclude = exclude
        train_docs = training_documents(documents, exclude)
        replay = champion.examples()
        examples, replay_counts = merge_with_replay(data.examples(), replay, replay_max=config.replay_max, exclude=exclude)
        eval_rows = heldout.eval_rows(documents, builtin_oos=config.builtin_oos)
        counts = {**data.counts, **replay_counts, "feedback_rows": len(self.rows), "new_training_items": data.n_new,
                  "kb_articles": len(documents), "kb_questions_trained": sum(len(d.questions) for d in train_docs),
                  "heldout_rows": len(eval_rows), "heldout_added_kb": added_kb, "heldout_added_admin": added_admin,
                  "heldout_added_feedback": added_feedback,
                  "training_examples": len(examples)}
        self.report.update({"counts": counts, "data_until": data.data_until})
        self.heldout, self.documents = heldout, documents
        self.composer_data = self._composer_data(champion, documents, admins, exclude)
        self._timed("datasets", step)
        log.info("datasets: %d labelled (%d 👍, %d corrections), %d hard negatives, %d replayed; %d conflicts dropped, "
                 "%d capped; held-out set %d rows", counts.get("labelled", 0), counts.get("positives", 0),
                 counts.get("corrections", 0), counts.get("hard_negatives", 0), replay_counts["replayed"],
                 counts.get("conflicts_dropped", 0), counts.get("capped_examples", 0), len(eval_rows))
        if data.n_new < config.min_new_examples and not self.force:
            return self._finish(NOTHING, EXIT_NOTHING,
                                f"nothing to do: {data.n_new} new training items (labelled + hard negatives) from "
                                f"{len(self.rows)} feedback rows, fewer than min_new_examples={config.min_new_examples}; "
                                "they wait for the next run (or use --force)")
        in_scope = sum(1 for r in eval_rows if r["intent"] != OUT_OF_SCOPE)
        if in_scope < config.gate_min_heldout and not self.dry_run:
            return self._finish(NOTHING, EXIT_NOTHING,
                                f"not enough held-out data: {in_scope} in-scope held-out rows, fewer than "
                                f"gate_min_heldout={config.gate_min_heldout}, so the gate cannot tell a better model; "
                                "the feedback waits for the next run (it is not consumed)")
        if self.dry_run:
            self.report["sample"] = {"labelled": [dataclasses.asdict(q) for q in data.labelled[:5]],
                                     "hard_negatives": [dataclasses.asdict(h) for h in data.hard_negatives[:5]],
                                     "composer": [r.summary() for r in self.composer_data.sft[:3]]}
            plan = self.report["composer"]["plan"]
            return self._finish(DRY_RUN, 0, "dry run: would train on " + ", ".join(
                f"{k} {counts.get(k, 0)}" for k in ("labelled", "positives", "corrections", "hard_negatives", "replayed",
                                                    "kb_questions_trained", "heldout_rows"))
                + (f"; the composer on {plan['rows']['sft_rows']} SFT and {plan['rows']['kto_rows']} KTO rows ("
                   if plan["train"] else "; not the composer (") + plan["reason"] + ")")
        self.work.mkdir(parents=True, exist_ok=True)

        # Training: encoder top layers (intent + retrieval stages), then the sentiment head.
        step = time.perf_counter()
        job = self._encoder_job(champion, train_docs, examples, data)
        self.report["training"] = _run_encoder_job(job, config, self.work)
        self._timed("encoder_training", step)
        step = time.perf_counter()
        from training.build import carry_sentiment

        self.build_settings = carry_sentiment(settings, champion)
        # What labels sentiment learns from the corrections: the fine-tuned model when the champion
        # serves one (its head; the LoRA adapter stays), else the head over the encoder pass.
        self.report["sentiment"] = self._sentiment(champion, train_docs, Path(job.out_dir))
        if self.report["sentiment"].get("status") == "updated":
            kind = "sentiment_model" if self.report["sentiment"]["model"] == "fine-tuned" else "sentiment_head"
            self.build_settings = self.build_settings.replace(**{kind: self.report["sentiment"]["path"]})
        self._timed("sentiment", step)

        # The gate scores a build of the candidate without the held-out questions (in a temporary
        # folder); only if it passes is the served version built, from the whole KB.
        self.version_meta = {"reason": "retrain", "data_until": data.data_until, "feedback_counts": counts,
                             "retrain": {"method": config.method, "stages": config.stages, "start_from": config.start_from,
                                         "sentiment_updated": self.report["sentiment"].get("status") == "updated"}}
        return self._gate(versions, champion, documents, train_docs, examples,
                          [ex for ex in replay if normalize(ex.text) not in exclude], eval_rows, Path(job.out_dir))

    def _composer_data(self, champion, documents, admins, exclude):
        """The composer's rows and this run's plan for it (training/compose_data.py, compose_train.py)."""
        from training.compose_data import build_composer_data
        from training.compose_train import plan_composer

        data = build_composer_data(self.rows, documents, config=self.config, compose=self.settings.compose,
                                   section_max_words=self.settings.section_max_words, admin_hashes=admins,
                                   heldout_texts=exclude)
        plan = plan_composer(self.settings, self.config, champion, data, documents)
        self.report["composer"] = {"plan": plan, "counts": data.counts}
        log.info("composer: %s (%s); %d SFT rows (%d from 👍), %d KTO rows (%d 👎)", "trains" if plan["train"] else
                 "not trained", plan["reason"], len(data.sft), data.counts.get("sft_feedback", 0), len(data.kto),
                 data.counts.get("kto_undesirable", 0))
        return data

    def _composer(self, champion):
        """The composer stage (after the classifier's gate passed): what the new version carries."""
        from training.compose_train import run_composer

        step = time.perf_counter()
        outcome = run_composer(self.settings, self.config, champion, self.documents, self.composer_data, self.heldout,
                               self.work, plan=self.report["composer"]["plan"])
        self.report["composer"] = {**self.report["composer"], **outcome.report, "status": outcome.status,
                                   "carried_from": (outcome.meta or {}).get("carried_from") if outcome.status != "approved"
                                   else None}
        self._timed("composer", step)
        return outcome

    def _encoder_job(self, champion, train_docs, examples, data):
        from training.feedback_data import normalize, stable_fraction
        from training.finetune import EncoderJob

        config = self.config
        article = {d.id: _article_text(d, config.article_words) for d in train_docs}
        first_doc: dict[str, str] = {}
        for d in train_docs:
            first_doc.setdefault(d.label, d.id)
        doc_of_example = {q.text: q.doc_id for q in data.labelled}
        labelled = [(q, d.label, d.id) for d in train_docs for q in d.questions]
        labelled += [(ex.text, ex.intent, doc_of_example.get(ex.text) or first_doc.get(ex.intent)) for ex in examples
                     if ex.intent in first_doc]
        val, train = [], []
        for row in labelled:
            (val if stable_fraction(row[0], f"validation{config.seed}") < config.validation_fraction else train).append(row)
        val = val[:config.validation_max]
        if len(train) > config.max_stage_rows:
            new_texts = {q.text for q in data.labelled}
            fresh = [r for r in train if r[0] in new_texts]
            rest = sorted((r for r in train if r[0] not in new_texts),
                          key=lambda r: stable_fraction(r[0], f"sample{config.seed}"))
            train = fresh[:config.max_stage_rows] + rest[:max(0, config.max_stage_rows - len(fresh))]
        texts = [d.title for d in train_docs] + [t for t, _, _ in train]
        labels = [d.label for d in train_docs] + [label for _, label, _ in train]
        pairs = [[t, article[doc]] for t, _, doc in train if doc in article]
        triplets = []
        exclude = getattr(self, "exclude", set())
        for neg in data.hard_negatives:
            if neg.negative_doc not in article or normalize(neg.text) in exclude:
                continue
            positive = article.get(neg.positive_doc) if neg.positive_doc else None
            triplets.append([neg.text, positive or neg.text, article[neg.negative_doc]])
        base = champion.encoder_name if config.start_from == "champion" else self.settings.encoder
        cfg = config.to_dict()
        cfg["device"] = config.device or self.settings.device
        self.report["encoder_data"] = {"intent_rows": len(texts), "pairs": len(pairs), "triplets": len(triplets),
                                       "validation": len(val), "base": base}
        return EncoderJob(base=base, out_dir=str(self.work / "encoder"), texts=texts, labels=labels, pairs=pairs,
                          triplets=triplets, val_texts=[t for t, _, _ in val], val_labels=[label for _, label, _ in val],
                          articles=[[d.label, article[d.id]] for d in train_docs], config=cfg)

    def _sentiment(self, champion, train_docs, encoder_dir: Path) -> dict:
        from training.sentiment_update import update_sentiment_head, update_sentiment_model

        model = "fine-tuned" if self.settings.uses_sentiment_model and champion.sentiment_model_path else "head"
        if not self.config.sentiment_update:
            return {"status": "skipped", "reason": "sentiment_update is off", "model": model}
        replay = [q for d in train_docs for q in d.questions] + [r.get("question") or "" for r in self.rows[-2000:]]
        device = self.config.device or self.settings.device
        if model == "fine-tuned":
            summary = update_sentiment_model(self.store, champion.sentiment_model_path, replay,
                                             self.work / "sentiment_model.npz", self.config, device=device)
        else:
            from models.encoder import Encoder

            encoder = Encoder(str(encoder_dir), device, cached=False)
            summary = update_sentiment_head(self.store, champion.sentiment_head_path, encoder, replay,
                                            self.work / "sentiment_head.npz", self.config)
        log.info("sentiment %s: %s%s", model, summary.get("status"), f" ({summary['reason']})" if summary.get("reason") else "")
        return {**summary, "model": model}

    def _gate(self, versions, champion, documents, train_docs, examples, replay_examples, eval_rows,
              encoder_dir: Path) -> Outcome:
        from training.build import build_version
        from training.export import heldout_verdict
        from training.gate import decide, reference_build, score_version

        step = time.perf_counter()
        gate_home = Path(tempfile.mkdtemp(prefix="candidate-", dir=self.work))
        gate_settings = self.build_settings.replace(home=gate_home)
        scored = build_version(train_docs, gate_settings, extra_examples=examples, encoder_dir=encoder_dir,
                               parent=champion.name, meta={"reason": "gate candidate"})
        self._timed("candidate_build", step)
        step = time.perf_counter()
        ref_settings, ref_name = reference_build(self.settings, champion, train_docs, replay_examples, self.work)
        self.report["champion_scored_as"] = f"{champion.name} rebuilt without the held-out questions"
        self._timed("reference_build", step)
        step = time.perf_counter()
        champion_report = score_version(ref_settings, ref_name, eval_rows)
        candidate_report = score_version(gate_settings, scored.version.name, eval_rows)
        # The runtime that serves the new version: fp32 ONNX and int8 on the same held-out rows.
        verdict = heldout_verdict(gate_settings, scored.version, lambda runtime: score_version(
            gate_settings.replace(runtime=runtime), scored.version.name, eval_rows, per_row=True))
        if verdict is not None:
            self.report["runtime"] = verdict
        champion_report["model_version"] = champion.name
        decision = decide(champion_report, candidate_report, self.config)
        self.report.update({"champion_metrics": champion_report, "candidate_metrics": candidate_report,
                            "decision": {"promote": decision.promote, "checks": decision.checks,
                                         "reasons": decision.reasons}})
        self._timed("gate", step)
        a, b = champion_report.get("accuracy"), candidate_report.get("accuracy")
        scores = f"held-out accuracy {a:.3f} → {b:.3f}" if a is not None and b is not None else "no held-out score"
        metrics = {"heldout": _summary(candidate_report), "champion_heldout": _summary(champion_report),
                   "gate": "passed" if decision.promote else "rejected"}
        candidate = None
        if decision.promote:
            composer = self._composer(champion)
        else:
            from training.compose_train import run_composer

            composer = run_composer(self.settings, self.config, champion, documents, self.composer_data, self.heldout,
                                    self.work, plan={**self.report["composer"]["plan"], "train": False})
            self.report["composer"].update({"status": "skipped", "reason": "the classifier's candidate was rejected: "
                                                                           "no new version to carry a composer"})
        if decision.promote or self.config.keep_rejected:
            # The served version: the whole KB (held-out questions included) + the same examples and encoder,
            # and the composer's adapter (retrained and approved, else the champion's carried over).
            candidate = self._serve(versions, champion, decision.promote, lambda: build_version(
                documents, self.build_settings, extra_examples=examples, encoder_dir=encoder_dir, parent=champion.name,
                meta={**self.version_meta, "metrics": metrics}, runtime_verdict=verdict, composer_dir=composer.adapter,
                composer_meta=composer.meta))
            if candidate is None:
                return self._finish(SUPERSEDED, EXIT_SUPERSEDED, f"not promoted: the champion changed from "
                                    f"{champion.name} to {self.report['served'] or 'none'} while this run trained "
                                    f"(an ingest, forget or `csbot models` promoted it), and a version built on "
                                    f"{champion.name} would undo that; the feedback is not consumed: the next run "
                                    "trains on the new champion", write_report=True)
        if decision.promote:
            return self._finish(PROMOTED, EXIT_PROMOTED, f"promoted {candidate} (was {champion.name}): {scores}; "
                                f"{_composer_line(self.report['composer'])}", consumed=True, write_report=True)
        self.report["candidate"] = candidate
        kept = f" (kept as {candidate}, not served)" if candidate else ""
        return self._finish(REJECTED, EXIT_REJECTED,
                            f"rejected the candidate{kept}: {'; '.join(decision.reasons)} — {champion.name} keeps serving",
                            consumed=True, write_report=True)

    def _serve(self, versions, champion, promote: bool, build) -> str | None:
        """Build the new version in the models folder (`build()`) and, with `promote`, serve it: under the
        home's writer lock (training/lock.py), which the training before ran without. Returns its name, or
        None, with nothing built, when the champion is no longer the version this run trained on (an
        ingest, forget or `csbot models` promoted another meanwhile)."""
        from training.lock import hold_writer, waiting_line

        with hold_writer(self.settings, "retrain", on_wait=lambda holder: log.warning("%s", waiting_line(holder))):
            current = versions.champion_name()
            if current != champion.name:
                self.report["served"] = current
                return None
            step = time.perf_counter()
            built = build()
            candidate = built.version.name
            self.report["candidate"] = candidate
            self._timed("build_and_index", step)
            log.info("version %s built in %.0fs", candidate, built.seconds)
            if promote:
                versions.promote(candidate, reason="retrain", expect_champion=champion.name)
                self.report["served"] = candidate
                self.report["pruned"] = versions.prune(self.settings.keep_versions)["removed"]
        return candidate


# ----- helpers ------------------------------------------------------------------------------------

def _article_text(doc, words: int) -> str:
    answer = " ".join(doc.answer.split()[:words])
    return f"{doc.title}: {answer}" if answer else doc.title


def _composer_line(composer: dict) -> str:
    """The composer's part of the run's message."""
    status = composer.get("status")
    if status in ("approved", "rejected"):
        verdict = composer.get("verdict") or {}
        a, b = (verdict.get("current_metrics") or {}).get("faithfulness"), (verdict.get("metrics") or {}).get("faithfulness")
        scores = f"faithfulness {a:.3f} → {b:.3f}" if a is not None and b is not None else "no faithfulness score"
        if status == "approved":
            return f"composer approved ({scores})"
        return f"composer rejected: {'; '.join(verdict.get('reasons') or [])}"
    if status == "error":
        return f"composer failed ({composer.get('error')}); the champion's carried over"
    reason = composer.get("reason") or (composer.get("plan") or {}).get("reason", "")
    return f"composer not retrained ({reason})"


def _composer_summary(composer: dict | None) -> dict | None:
    if not composer:
        return None
    verdict = composer.get("verdict") or {}
    return {"status": composer.get("status") or ("plan" if composer.get("plan") else None),
            "train": (composer.get("plan") or {}).get("train"), "reason": composer.get("reason")
            or (composer.get("plan") or {}).get("reason"), "approved": verdict.get("approved"),
            "metrics": {k: (verdict.get("metrics") or {}).get(k) for k in ("faithfulness", "guard_pass_rate",
                                                                             "invented_rate")} if verdict else None}


def _summary(report: dict | None) -> dict | None:
    if not report:
        return None
    return {k: report.get(k) for k in ("model_version", "n", "accuracy", "macro_f1", "in_scope_accuracy", "oos_recall")
            if k in report}


def _stderr_fd() -> int | None:
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # a captured stream without a descriptor
        return None


def _run_encoder_job(job, config, work: Path) -> dict:
    """In process, or through the configured launcher (torchrun / accelerate launch / python)."""
    from training.finetune import train_encoder

    if not config.launcher:
        return train_encoder(job)
    job_path = job.save(work / "encoder_job.json")
    launcher = shlex.split(config.launcher)
    if launcher == ["python"]:
        launcher = [sys.executable]
    cmd = launcher + ["-m", "training.finetune", str(job_path)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    log.info("launching encoder training: %s", " ".join(cmd))
    result = subprocess.run(cmd, cwd=str(REPO), env=env, stdout=_stderr_fd())  # its chatter is log, not output
    if result.returncode != 0:
        raise RuntimeError(f"encoder training ({' '.join(launcher)}) exited with status {result.returncode}")
    summary_path = Path(job.out_dir + ".summary.json")
    if not Path(job.out_dir).is_dir() or not summary_path.is_file():
        raise RuntimeError(f"encoder training ({' '.join(launcher)}) wrote no model to {job.out_dir}")
    return {**json.loads(summary_path.read_text(encoding="utf-8")), "launcher": config.launcher}


def _clean_partial_if_idle(home, versions) -> int:
    """Remove the drafts killed builds left, unless another writer (an ingest, forget) is building one now."""
    from training.lock import LockBusy, WriterLock

    try:
        with WriterLock(home, "retrain"):
            return versions.clean_partial()
    except LockBusy:
        return 0


def _remove_orphan_candidates(versions) -> int:
    """Candidates a killed run committed but never scored (no gate verdict, never served)."""
    served = {r.get("champion") for r in versions.history()} | {versions.champion_name()}
    removed = 0
    for name in versions.names():
        try:
            meta = versions.get(name).meta
        except CsbotError:
            continue
        if meta.get("reason") == "retrain" and "gate" not in (meta.get("metrics") or {}) and name not in served:
            removed += versions.discard(name)
    return removed


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
    except UserError as exc:
        print(f"retrain: error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
