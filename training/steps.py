"""The retrain's steps, each over the run's state (training/run_state.py), in this order
(training/pipeline.py runs them):

    read_data       the champion, and what is new since the watermark (one rule for every model)
    freeze_heldout  the one frozen held-out set: KB share, admins' and agreed feedback, sentiment corrections
    make_datasets   the training data without the held-out texts, the gate's rows, the composer's rows
    check_enough    too little new data or held-out data ends the run; a dry run ends here
    train_encoder   the encoder's top layers (intent + retrieval stages)
    train_sentiment the sentiment model's head (or the head over the encoder), judged on the held-out set
    build_for_gate  the candidate without held-out questions, and the champion's reference rebuild
    gate            both scored on the held-out rows; the runtime chosen; promote or not
    train_composer  the composer stage, only for a candidate that passed (its adapter rides on it)
    publish         the served build from the whole KB and the promotion, under the writer lock

A step returns None to go on, or the run's Outcome (through training/report.conclude) to end it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from core.answer import OUT_OF_SCOPE
from training.report import composer_line, conclude, summary
from training.run_state import (DRY_RUN, EXIT_EMPTY, EXIT_NOTHING, EXIT_WAITING, WAITING, EXIT_PROMOTED, EXIT_REJECTED, EXIT_SUPERSEDED, NOTHING,
                                PROMOTED, REJECTED, SUPERSEDED, Outcome, RunState)

REPO = Path(__file__).resolve().parent.parent

log = logging.getLogger("csbot.retrain")


# ----- data -------------------------------------------------------------------------------------------

def read_data(state: RunState) -> Outcome | None:
    """The champion and the feedback new since the watermark (or --since): votes and sentiment corrections."""
    from serving.versions import VersionError
    from training.feedback_data import new_feedback

    store, config = state.store, state.config
    state.data_started = time.perf_counter()
    if store.counts()["feedback"] == 0:
        return conclude(state, NOTHING, EXIT_EMPTY, "nothing to do: the feedback table is empty")
    try:
        state.champion = state.versions.champion()
    except VersionError:
        return conclude(state, NOTHING, EXIT_NOTHING, "nothing to do: no model version yet (run `csbot ingest PATH`)")
    state.report.update({"champion": state.champion.name, "served": state.champion.name})
    state.new = new_feedback(store, state.since, max_votes=config.max_feedback_rows, corrections=config.sentiment_update)
    state.report["since"] = state.new.since
    log.info("champion %s; %d feedback rows since %s", state.champion.name, len(state.rows),
             state.new.since or "the beginning")
    if not state.rows and not state.force:
        return conclude(state, NOTHING, EXIT_NOTHING, f"nothing to do: no new feedback since {state.new.since}")
    state.documents = state.champion.documents()
    state.admins = {store.hash_user(u) for u in state.settings.slack.admin_users.split(",") if u.strip()}
    return None


# ----- held-out -----------------------------------------------------------------------------------------

def freeze_heldout(state: RunState) -> None:
    """Grow the frozen held-out set (training/gate.py) with this run's shares, and resolve the votes
    without its texts. Saved unless a dry run."""
    from training.feedback_data import build_feedback_data
    from training.gate import HeldoutSet
    from training.sentiment_update import resolve_corrections

    config = state.config
    heldout = HeldoutSet.load(state.settings.home)
    added_kb = heldout.update_from_kb(state.documents, config)
    state.data = build_feedback_data(state.rows, state.documents, config=config, admin_hashes=state.admins,
                                     heldout_texts=heldout.texts())
    added_admin = heldout.add_admin(state.data.admin_heldout)
    added_feedback = heldout.add_feedback(state.data.labelled, config)
    added_sentiment = 0
    if state.new.corrections:
        pairs, _ = resolve_corrections(state.new.corrections, max_per_user=config.max_examples_per_user)
        added_sentiment = heldout.add_sentiment(pairs)
    state.heldout_added = {"heldout_added_kb": added_kb, "heldout_added_admin": added_admin,
                           "heldout_added_feedback": added_feedback, "heldout_added_sentiment": added_sentiment}
    if any(state.heldout_added.values()) and not state.dry_run:
        heldout.save()
    state.heldout, state.exclude = heldout, heldout.texts()
    state.sentiment_heldout = heldout.sentiment_pairs()


# ----- datasets ---------------------------------------------------------------------------------------

def make_datasets(state: RunState) -> None:
    """The KB without the held-out questions, replay + new examples, the gate's rows, the composer's rows."""
    from training.feedback_data import merge_with_replay
    from training.gate import training_documents

    config, data = state.config, state.data
    state.train_docs = training_documents(state.documents, state.exclude)
    state.replay = state.champion.examples()
    state.examples, replay_counts = merge_with_replay(data.examples(), state.replay, replay_max=config.replay_max,
                                                      exclude=state.exclude)
    state.eval_rows = state.heldout.eval_rows(state.documents, builtin_oos=config.builtin_oos)
    state.eval_rows += _kb_fill(state)
    counts = {**data.counts, **replay_counts, "feedback_rows": len(state.rows), "new_training_items": data.n_new,
              "kb_articles": len(state.documents), "kb_questions_trained": sum(len(d.questions) for d in state.train_docs),
              "heldout_rows": len(state.eval_rows), "heldout_from_kb": state.heldout_from_kb, **state.heldout_added,
              "sentiment_corrections": len(state.new.corrections or []), "training_examples": len(state.examples)}
    state.counts = counts
    state.report.update({"counts": counts, "data_until": data.data_until})
    state.composer_data = _composer_data(state)
    state.timed("datasets", state.data_started)
    log.info("datasets: %d labelled (%d 👍, %d corrections), %d hard negatives, %d replayed; %d conflicts dropped, "
             "%d capped; held-out set %d rows", counts.get("labelled", 0), counts.get("positives", 0),
             counts.get("corrections", 0), counts.get("hard_negatives", 0), replay_counts["replayed"],
             counts.get("conflicts_dropped", 0), counts.get("capped_examples", 0), len(state.eval_rows))


def _kb_fill(state: RunState) -> list[dict]:
    """A small team's first votes hold out too few questions for the gate to judge alone: then every
    section heading of the KB ("Title › Heading", labelled with its article) joins the gate's rows for
    this run, so the candidate must still place the whole KB where the champion did while it learns
    the votes. Not saved: the next run, with more feedback, may not need them."""
    from training.gate import kb_heading_rows

    in_scope = sum(1 for r in state.eval_rows if r["intent"] != OUT_OF_SCOPE)
    if in_scope >= state.config.gate_min_heldout:
        return []
    rows = kb_heading_rows(state.documents, exclude=state.exclude)
    state.heldout_from_kb = len(rows)
    if rows:
        log.info("held-out set: %d in-scope rows from feedback, fewer than gate_min_heldout=%d; the gate also "
                 "scores the KB's %d section headings", in_scope, state.config.gate_min_heldout, len(rows))
    return rows


def _composer_data(state: RunState):
    """The composer's rows and this run's plan for it (training/compose_data.py, compose_train.py)."""
    from training.compose_data import build_composer_data
    from training.compose_train import plan_composer

    settings, config = state.settings, state.config
    data = build_composer_data(state.rows, state.documents, config=config, compose=settings.compose,
                               section_max_words=settings.section_max_words, admin_hashes=state.admins,
                               heldout_texts=state.exclude)
    plan = plan_composer(settings, config, state.champion, data, state.documents)
    state.report["composer"] = {"plan": plan, "counts": data.counts}
    log.info("composer: %s (%s); %d SFT rows (%d from 👍), %d KTO rows (%d 👎)", "trains" if plan["train"] else
             "not trained", plan["reason"], len(data.sft), data.counts.get("sft_feedback", 0), len(data.kto),
             data.counts.get("kto_undesirable", 0))
    return data


def check_enough(state: RunState) -> Outcome | None:
    """Too little new data, or too little held-out data to judge, ends the run (the feedback waits);
    a dry run ends here with what it would train on."""
    config, counts, n_new = state.config, state.counts, state.data.n_new
    if n_new < config.min_new_examples and not state.force:
        return conclude(state, WAITING, EXIT_WAITING,
                        f"nothing learned yet: {n_new} new training items (labelled votes + hard negatives) from "
                        f"{len(state.rows)} feedback rows, fewer than min_new_examples={config.min_new_examples}; "
                        f"they wait for the next run — {config.min_new_examples - n_new} more labelled votes "
                        "(👍 on answers, or 👎 with the right article) are needed (or use --force)")
    in_scope = sum(1 for r in state.eval_rows if r["intent"] != OUT_OF_SCOPE)
    if in_scope < config.gate_min_heldout:
        return conclude(state, WAITING, EXIT_WAITING,
                        f"nothing learned yet: {in_scope} in-scope held-out rows (feedback and the KB's own), fewer "
                        f"than gate_min_heldout={config.gate_min_heldout}, so the gate cannot tell a better model; "
                        "the feedback waits for the next run (it is not consumed)")
    if not state.dry_run:
        return None
    data = state.data
    state.report["sample"] = {"labelled": [dataclasses.asdict(q) for q in data.labelled[:5]],
                              "hard_negatives": [dataclasses.asdict(h) for h in data.hard_negatives[:5]],
                              "composer": [r.summary() for r in state.composer_data.sft[:3]]}
    plan = state.report["composer"]["plan"]
    return conclude(state, DRY_RUN, 0, "dry run: would train on " + ", ".join(
        f"{k} {counts.get(k, 0)}" for k in ("labelled", "positives", "corrections", "hard_negatives", "replayed",
                                            "kb_questions_trained", "heldout_rows"))
        + (f"; the composer on {plan['rows']['sft_rows']} SFT and {plan['rows']['kto_rows']} KTO rows ("
           if plan["train"] else "; not the composer (") + plan["reason"] + ")")


# ----- training ---------------------------------------------------------------------------------------

def train_encoder(state: RunState) -> None:
    """The encoder's top layers: the intent stage, then the retrieval stage (training/finetune.py)."""
    state.work.mkdir(parents=True, exist_ok=True)
    step = time.perf_counter()
    job = encoder_job(state)
    state.report["training"] = run_encoder_job(job, state.config, state.work)
    state.encoder_dir = Path(job.out_dir)
    state.timed("encoder_training", step)


def encoder_job(state: RunState):
    """The encoder's training job: KB questions and titles, replayed and new examples (all without
    held-out texts), their articles, the hard negatives, a deterministic validation split."""
    from training.feedback_data import normalize, stable_fraction
    from training.finetune import EncoderJob

    config, train_docs, data = state.config, state.train_docs, state.data
    article = {d.id: _article_text(d, config.article_words) for d in train_docs}
    first_doc: dict[str, str] = {}
    for d in train_docs:
        first_doc.setdefault(d.label, d.id)
    doc_of_example = {q.text: q.doc_id for q in data.labelled}
    labelled = [(q, d.label, d.id) for d in train_docs for q in d.questions]
    labelled += [(ex.text, ex.intent, doc_of_example.get(ex.text) or first_doc.get(ex.intent)) for ex in state.examples
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
    for neg in data.hard_negatives:
        if neg.negative_doc not in article or normalize(neg.text) in state.exclude:
            continue
        positive = article.get(neg.positive_doc) if neg.positive_doc else None
        triplets.append([neg.text, positive or neg.text, article[neg.negative_doc]])
    base = state.champion.encoder_name if config.start_from == "champion" else state.settings.encoder
    cfg = config.to_dict()
    cfg["device"] = config.device or state.settings.device
    state.report["encoder_data"] = {"intent_rows": len(texts), "pairs": len(pairs), "triplets": len(triplets),
                                    "validation": len(val), "base": base}
    return EncoderJob(base=base, out_dir=str(state.work / "encoder"), texts=texts, labels=labels, pairs=pairs,
                      triplets=triplets, val_texts=[t for t, _, _ in val], val_labels=[label for _, label, _ in val],
                      articles=[[d.label, article[d.id]] for d in train_docs], config=cfg,
                      serve_max_seq_length=_serving_length(state))


def _serving_length(state: RunState) -> int:
    """How many tokens of a text the new encoder reads when it serves: the base encoder's own length,
    whatever the champion it starts from says (a champion saved with the training length heals)."""
    from models.loading import load_sentence_transformer

    return int(load_sentence_transformer(state.champion.base_encoder or state.settings.encoder, "cpu").max_seq_length or 0)


def _article_text(doc, words: int) -> str:
    answer = " ".join(doc.answer.split()[:words])
    return f"{doc.title}: {answer}" if answer else doc.title


def run_encoder_job(job, config, work: Path) -> dict:
    """In process, or through the configured launcher (torchrun / accelerate launch / python)."""
    from training.finetune import train_encoder as train

    if not config.launcher:
        return train(job)
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


def _stderr_fd() -> int | None:
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # a captured stream without a descriptor
        return None


def train_sentiment(state: RunState) -> None:
    """What labels sentiment learns from the corrections: the fine-tuned model when the champion serves
    one (its head; the LoRA adapter stays), else the head over the encoder pass. The builds carry the
    result (or the champion's, unchanged)."""
    from training.build import carry_sentiment

    step = time.perf_counter()
    state.build_settings = carry_sentiment(state.settings, state.champion)
    result = _update_sentiment(state)
    state.report["sentiment"] = result
    if result.get("status") == "updated":
        kind = "sentiment_model" if result["model"] == "fine-tuned" else "sentiment_head"
        state.build_settings = state.build_settings.replace(**{kind: result["path"]})
    state.timed("sentiment", step)


def _update_sentiment(state: RunState) -> dict:
    """training/sentiment_update.py on this run's new corrections, judged on the run's held-out set."""
    from training.sentiment_update import update_sentiment_head, update_sentiment_model

    settings, config, champion, new = state.settings, state.config, state.champion, state.new
    model = "fine-tuned" if settings.uses_sentiment_model and champion.sentiment_model_path else "head"
    if not config.sentiment_update:
        return {"status": "skipped", "reason": "sentiment_update is off", "model": model}
    if new.corrections is None:
        log.warning("sentiment corrections unreadable: %s", new.corrections_error)
        result = {"status": "unavailable", "reason": f"unreadable: {new.corrections_error}"}
    else:
        replay = [q for d in state.train_docs for q in d.questions] + [r.get("question") or "" for r in state.rows[-2000:]]
        heldout = dict(corrections=new.corrections, heldout=state.sentiment_heldout, exclude=state.exclude)
        device = config.device or settings.device
        if model == "fine-tuned":
            result = update_sentiment_model(state.store, champion.sentiment_model_path, replay,
                                            state.work / "sentiment_model.npz", config, device=device, **heldout)
        else:
            from models.encoder import Encoder

            encoder = Encoder(str(state.encoder_dir), device, cached=False)
            result = update_sentiment_head(state.store, champion.sentiment_head_path, encoder, replay,
                                           state.work / "sentiment_head.npz", config, **heldout)
    log.info("sentiment %s: %s%s", model, result.get("status"), f" ({result['reason']})" if result.get("reason") else "")
    return {**result, "model": model}


# ----- builds and the gate ------------------------------------------------------------------------------

def build_for_gate(state: RunState) -> None:
    """Two temporary builds without any held-out text: the candidate (new encoder, KB minus held-out
    questions, the examples) and the champion's reference rebuild (its encoder, head refitted)."""
    from training.build import build_version
    from training.feedback_data import normalize
    from training.gate import reference_build

    config, champion = state.config, state.champion
    state.version_meta = {"reason": "retrain", "data_until": state.data.data_until, "feedback_counts": state.counts,
                          "retrain": {"method": config.method, "stages": config.stages, "start_from": config.start_from,
                                      "sentiment_updated": state.report["sentiment"].get("status") == "updated"}}
    step = time.perf_counter()
    gate_home = Path(tempfile.mkdtemp(prefix="candidate-", dir=state.work))
    state.gate_settings = state.build_settings.replace(home=gate_home)
    state.gated = build_version(state.train_docs, state.gate_settings, extra_examples=state.examples,
                                encoder_dir=state.encoder_dir, parent=champion.name, meta={"reason": "gate candidate"})
    state.timed("candidate_build", step)
    step = time.perf_counter()
    replay = [ex for ex in state.replay if normalize(ex.text) not in state.exclude]
    state.reference_settings, state.reference_name = reference_build(state.settings, champion, state.train_docs,
                                                                     replay, state.work)
    state.report["champion_scored_as"] = f"{champion.name} rebuilt without the held-out questions"
    state.timed("reference_build", step)


def gate(state: RunState) -> None:
    """Champion (reference) and candidate scored on the held-out rows, the serving runtime chosen on
    them (fp32 ONNX against int8), and the decision (training/gate.py)."""
    from training.export import heldout_verdict
    from training.gate import decide, score_version

    step = time.perf_counter()
    rows, gate_settings, candidate = state.eval_rows, state.gate_settings, state.gated.version
    champion_report = score_version(state.reference_settings, state.reference_name, rows)
    candidate_report = score_version(gate_settings, candidate.name, rows)
    state.runtime_verdict = heldout_verdict(gate_settings, candidate, lambda runtime: score_version(
        gate_settings.replace(runtime=runtime), candidate.name, rows, per_row=True))
    if state.runtime_verdict is not None:
        state.report["runtime"] = state.runtime_verdict
    champion_report["model_version"] = state.champion.name
    passages = _score_passages(state)
    state.decision = decision = decide(champion_report, candidate_report, state.config, passages)
    state.report.update({"champion_metrics": champion_report, "candidate_metrics": candidate_report,
                         "decision": {"promote": decision.promote, "checks": decision.checks,
                                      "reasons": decision.reasons}})
    if passages is not None:
        state.report["passages"] = {"champion": _brief(passages[0]), "candidate": _brief(passages[1])}
    state.timed("gate", step)


def _score_passages(state: RunState) -> tuple[dict, dict] | None:
    """The champion (reference) and the candidate on the KB's own sentences (training/gate.py
    `kb_passage_rows`), or None when `gate_passages` is 0 or the KB has no sentences."""
    from training.gate import kb_passage_rows, score_version

    rows = kb_passage_rows(state.documents, state.config.gate_passages) if state.config.gate_passages else []
    if not rows:
        return None
    return (score_version(state.reference_settings, state.reference_name, rows),
            score_version(state.gate_settings, state.gated.version.name, rows))


def _brief(report: dict) -> dict:
    return {k: report.get(k) for k in ("n", "accuracy", "section_accuracy")}


def train_composer(state: RunState) -> None:
    """The composer stage, for a candidate that passed; otherwise the champion's composer is what a
    kept candidate would carry (training/compose_train.py)."""
    from training.compose_train import run_composer

    plan = state.report["composer"]["plan"]
    if not state.decision.promote:
        state.composer = run_composer(state.settings, state.config, state.champion, state.documents,
                                      state.composer_data, state.heldout, state.work, plan={**plan, "train": False})
        state.report["composer"].update({"status": "skipped", "reason": "the classifier's candidate was rejected: "
                                                                        "no new version to carry a composer"})
        return
    step = time.perf_counter()
    outcome = run_composer(state.settings, state.config, state.champion, state.documents, state.composer_data,
                           state.heldout, state.work, plan=plan)
    state.composer = outcome
    state.report["composer"] = {**state.report["composer"], **outcome.report, "status": outcome.status,
                                "carried_from": (outcome.meta or {}).get("carried_from") if outcome.status != "approved"
                                else None}
    state.timed("composer", step)


# ----- publish ------------------------------------------------------------------------------------------

def publish(state: RunState) -> Outcome:
    """The served version (a passed candidate, or a rejected one with keep_rejected) built from the
    whole KB, held-out questions included, with the same examples and encoder and the composer's
    adapter; promoted if it passed. The run's outcome."""
    from training.build import build_version

    champion, decision, report = state.champion, state.decision, state.report
    a, b = report["champion_metrics"].get("accuracy"), report["candidate_metrics"].get("accuracy")
    scores = f"held-out accuracy {a:.3f} → {b:.3f}" if a is not None and b is not None else "no held-out score"
    metrics = {"heldout": summary(report["candidate_metrics"]), "champion_heldout": summary(report["champion_metrics"]),
               "gate": "passed" if decision.promote else "rejected"}
    candidate = None
    if decision.promote or state.config.keep_rejected:
        composer = state.composer
        candidate = _serve(state, decision.promote, lambda: build_version(
            state.documents, state.build_settings, extra_examples=state.examples, encoder_dir=state.encoder_dir,
            parent=champion.name, meta={**state.version_meta, "metrics": metrics}, runtime_verdict=state.runtime_verdict,
            composer_dir=composer.adapter, composer_meta=composer.meta))
        if candidate is None:
            return conclude(state, SUPERSEDED, EXIT_SUPERSEDED, f"not promoted: the champion changed from "
                            f"{champion.name} to {report['served'] or 'none'} while this run trained "
                            f"(an ingest, forget or `csbot models` promoted it), and a version built on "
                            f"{champion.name} would undo that; the feedback is not consumed: the next run "
                            "trains on the new champion", write=True)
    if decision.promote:
        return conclude(state, PROMOTED, EXIT_PROMOTED, f"promoted {candidate} (was {champion.name}): {scores}; "
                        f"{composer_line(report['composer'])}", consumed=True, write=True)
    report["candidate"] = candidate
    kept = f" (kept as {candidate}, not served)" if candidate else ""
    return conclude(state, REJECTED, EXIT_REJECTED,
                    f"rejected the candidate{kept}: {'; '.join(decision.reasons)} — {champion.name} keeps serving",
                    consumed=True, write=True)


def _serve(state: RunState, promote: bool, build: Callable) -> str | None:
    """Build the new version in the models folder (`build()`) and, with `promote`, serve it: under the
    home's writer lock (training/lock.py), which the training before ran without. Returns its name, or
    None, with nothing built, when the champion is no longer the version this run trained on (an
    ingest, forget or `csbot models` promoted another meanwhile)."""
    from training.lock import hold_writer, waiting_line

    versions, champion = state.versions, state.champion
    with hold_writer(state.settings, "retrain", on_wait=lambda holder: log.warning("%s", waiting_line(holder))):
        current = versions.champion_name()
        if current != champion.name:
            state.report["served"] = current
            return None
        step = time.perf_counter()
        built = build()
        candidate = built.version.name
        state.report["candidate"] = candidate
        state.timed("build_and_index", step)
        log.info("version %s built in %.0fs", candidate, built.seconds)
        if promote:
            versions.promote(candidate, reason="retrain", expect_champion=champion.name)
            state.report["served"] = candidate
            state.report["pruned"] = versions.prune(state.settings.keep_versions)["removed"]
    return candidate


# The order the steps run in (training/pipeline.py).
STEPS: tuple[Callable[[RunState], Outcome | None], ...] = (
    read_data, freeze_heldout, make_datasets, check_enough, train_encoder, train_sentiment, build_for_gate, gate,
    train_composer, publish)
