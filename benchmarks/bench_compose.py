"""Composed answers: speed of the embedded composer and faithfulness, select vs compose.

    python benchmarks/bench_compose.py [--questions 30] [--stackfaq 40] [--offtopic 30] [--backends llama-cpp,transformers]
                                       [--round [--round-sets demo,stackfaq] [--round-questions 40]
                                        [--composer-steps N] [--no-poison | --poison-sets demo] [--vote-f1 0.3]]
                                       [--json OUT]

(a) Speed, on the demo KB's questions, one thread (torch_threads = 1, as `csbot serve` runs): per
    backend, time to the first token, tokens per second after it (pieces as the backend streams
    them; llama.cpp streams one token per piece) and a whole composition, medians and p90; the floor
    is the select-mode answer of the same question in the same run (the ratio says what composing
    costs on top).
(b) Faithfulness on held-out questions — the demo KB's example questions and StackFAQ queries
    (rephrase group 1) against a StackFAQ help centre built from its threads, plus CLINC150
    out-of-scope questions. For select and compose mode: token-F1 and ROUGE-L of the answer shown
    against the gold article's text; for compose, how often it composed (the guard's pass rate of
    the compositions tried), the fall-back reasons, citation correctness (a composed answer cites the
    gold article's section), invented numbers or URLs in posted answers (re-checked against every
    section the model was given: 0 by construction when the guard is on), and the off-topic decline
    rate of each mode.
(c) With --round: one simulated round of thumbs per set (--round-sets; demo KB and StackFAQ), a
    retrain, and (b)'s figures again, on the same held-out rows with the same `faithfulness()`; and
    a poisoned round (--poison-sets, the demo KB by default; --no-poison for none). Every set's round
    works on copies of its ingested home (the retrain changes a home; the poisoned round starts from
    a copy taken before anything was asked).
    - Questions (--round-questions per set: 40 on the demo KB, 100 on StackFAQ), none of (b)'s: the
      demo KB's example questions after the first ((b) asks the first), every article's 2nd, then
      every 3rd, …, leaving out those the retrain freezes into its gate's held-out set (it never
      learns from votes on them); StackFAQ queries of rephrase group 0 ((b) holds out group 1),
      evenly spaced, none equal to a group-1 one. StackFAQ has no example questions, so the
      classifier's gate has only what the retrain freezes from the round's 👍'd questions (20 % by a
      hash of the text) and needs gate_min_heldout = 10 of them: 40 questions freeze about 7 (the
      retrain ends "not enough held-out data", exit 3), 80 about 14, hence 100.
    - Asked as `csbot ask --mode compose` asks (select answer, then `Engine.compose`; budgets loosened
      to 30 / 60 s as in (b), so a busy core does not force fall-backs), each shown answer recorded in
      the home's store (`record_answer`, the asker: the answer's first voter).
    - Honest votes, on what was posted: a composed answer 👍 iff it cites the gold article (the guard's
      cited [n] mapped through the report's passages) and its token F1 (training/compose_gate.py)
      reaches --vote-f1 against the gold article's text or the part of it the model read and cited (a
      StackFAQ article is ~330 words: the whole of it dwarfs any short answer's F1); a fall-back (the
      select answer shown) 👍 iff it is the gold article; hand-offs and abstentions get no vote.
    - Two distinct simulated users cast each vote (a pool of 8; the i-th answer's voters are users i
      and i + 3 mod 8, so each votes on a quarter of the answers with changing partners). That is how
      the round passes the retrain's defences (training/feedback_data.py, compose_data.py): every
      example rests on two users' agreeing word, so the per-user caps (max_examples_per_user,
      max_user_share, user_share_floor) never apply to it, the distinct-user majority is 2 to 0, and
      gate.py's feedback held-out share (intents confirmed by ≥ heldout_feedback_min_users = 2 users)
      takes its 20 %; each user casts about a quarter of the votes with the round's own 👎 rate, so
      the outlier-voter rule (≥ suspicious_min_votes votes, a 👎 rate far above the median user's)
      has nothing to flag unless chance makes one user's 👎 share an outlier (the table shows it).
    - Retrain: `training.retrain.retrain(force=True)`, settings loaded as the retrain CLI loads them
      plus retrain_composer = on, composer_max_steps = --composer-steps, --train-threads (1) torch
      threads for the encoder and the composer. The composer stage runs only when the classifier's
      candidate passed its gate; a rejected classifier is reported as such (nothing is promoted).
    - Then (b) again against the promoted champion (a fresh Engine; a retrained adapter is served by
      llama.cpp in its GGUF form, as the bot serves it: models/composer_gguf.py); the target line says whether faithfulness (mean of compose F1 and
      ROUGE-L, as the composer's gate averages them) rose and the fall-back rate (1 − guard pass rate)
      fell. On the demo KB those held-out rows are the articles' first example questions, which the
      composer's KB rows also teach (training/compose_data.py builds them from every example question
      the retrain's own held-out set does not freeze), so the demo's after-figures are partly
      in-sample; StackFAQ's (no example questions; its KB rows ask the headings) are held out.
    - Poisoned round: the same answers (the same champion in the untouched copy; greedy, so the same
      texts) recorded in the copy's store, every vote inverted (👍 on unfaithful composed answers and
      on wrong articles, 👎 on the right ones) by two colluding users who vote on everything. Two
      users are too few for the outlier rule (it ranks at least 3 voters), so the gates are the
      defence; if anything is promoted, (b) is measured again: "not promoted lower" holds when
      nothing was promoted or faithfulness is not below the figure before the round.
    Cost on the shared 2-core VM, one thread, measured 2026-12-02 with the demo KB and StackFAQ run as
    two jobs side by side (`--round-sets demo` and `--round-sets stackfaq --no-poison`): asking 6–7 s a
    question (llama.cpp); a retrain with the composer at the default 30 SFT steps 20–32 min (SFT
    16–24 min; each composer's scoring on the gate's 40 + 10 rows 1.5–4 min through llama.cpp; the
    encoder's fine-tuning and the builds under a minute); (b) after it as fast as before (llama.cpp
    serves the retrained adapter). The demo KB with its poisoned round took 71 min, StackFAQ 56 min.
    A smoke (~7 min): `--skip-speed --stackfaq 0 --questions 4 --offtopic 2 --round --round-sets demo
    --round-questions 6 --composer-steps 2 --composer-fast --retrain-max-steps 2`.

The targets (2 cores, embedded default): first token ≤ 1.5 s, ≥ 20 tokens/s, a whole answer ≤ 6 s;
guard pass rate ≥ 95 % on answerable held-out questions; 0 invented numbers or URLs posted;
off-topic abstention ≥ select mode's decline rate; (c) after one round of thumbs the held-out
faithfulness rises and the guard's fall-back rate falls, and the poisoned round is not promoted lower.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from core.runtime import quiet_libraries  # noqa: E402

quiet_libraries()


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def med(values):
    return statistics.median(values) if values else None


def fmt(x, spec=".2f", none="-"):
    return none if x is None else format(x, spec)


# ----- (a) speed ------------------------------------------------------------------------------------
def speed(home: Path, questions: list[str], backend: str, max_new_tokens: int) -> dict:
    from core.settings import Settings
    from serving.compose import STOP, build_messages
    from serving.engine import Engine

    engine = Engine(Settings.load(env={}, home=home, compose_backend=backend, torch_threads=1))
    composer = engine.composer()
    engine.compose(engine.answer(questions[0]))  # warm-up: load, first prompt
    firsts, rates, wholes, selects, tokens = [], [], [], [], []
    for question in questions:
        t0 = time.perf_counter()
        answer = engine.answer(question)
        selects.append(time.perf_counter() - t0)
        if answer.handoff:
            continue
        messages = build_messages(question, engine.passages(answer), [])
        t0, first, n = time.perf_counter(), None, 0
        for _ in composer.model.stream(messages, max_new_tokens=max_new_tokens, stop=STOP):
            n += 1
            if first is None:
                first = time.perf_counter() - t0
        whole = time.perf_counter() - t0
        firsts.append(first or whole)
        wholes.append(whole)
        tokens.append(n)
        if n > 1 and whole > first:
            rates.append((n - 1) / (whole - first))
    return {"backend": backend, "questions": len(wholes), "first_token_p50": med(firsts), "first_token_p90": pct(firsts, 0.9),
            "tokens_per_s_p50": med(rates), "whole_p50": med(wholes), "whole_p90": pct(wholes, 0.9),
            "tokens_p50": med(tokens), "select_p50": med(selects),
            "ratio_whole_to_select": (med(wholes) / med(selects)) if wholes and selects else None}


# ----- (b) faithfulness -----------------------------------------------------------------------------
def faithfulness(home: Path, rows: list[tuple[str, str | None]], name: str) -> dict:
    """rows: (question, gold doc id or None for off-topic)."""
    from core.settings import Settings
    from serving.compose import _unsupported
    from serving.engine import Engine
    from training.compose_gate import rouge_l, token_f1

    engine = Engine(Settings.load(env={}, home=home, torch_threads=1, compose_first_token_budget_seconds=30,
                                  compose_latency_budget_seconds=60))
    docs = engine.catalogue().articles
    out = {"set": name, "answerable": 0, "offtopic": 0, "select_f1": [], "compose_f1": [], "select_rouge": [],
           "compose_rouge": [], "tried": 0, "composed": 0, "abstained": 0, "fallback_reasons": {},
           "cites_gold": 0, "invented_posted": 0, "select_declined_offtopic": 0, "compose_declined_offtopic": 0,
           "seconds": []}
    for question, gold in rows:
        select = engine.answer(question)
        t0 = time.perf_counter()
        composed = engine.compose(select)
        out["seconds"].append(time.perf_counter() - t0)
        if gold is None:
            out["offtopic"] += 1
            out["select_declined_offtopic"] += select.handoff
            out["compose_declined_offtopic"] += composed.handoff
            continue
        out["answerable"] += 1
        reference = docs[gold].answer if gold in docs else ""
        out["select_f1"].append(token_f1(select.text if not select.handoff else "", reference))
        out["select_rouge"].append(rouge_l(select.text if not select.handoff else "", reference))
        shown = composed.text if not composed.handoff else ""
        out["compose_f1"].append(token_f1(shown, reference))
        out["compose_rouge"].append(rouge_l(shown, reference))
        report = composed.composition
        if report is None:
            continue
        out["tried"] += 1
        outcome = report["outcome"]
        if outcome == "composed":
            out["composed"] += 1
            cited = report["guard"]["cited"] if report.get("guard") else []
            passages = {p["n"]: p["doc_id"] for p in report["passages"]}
            out["cites_gold"] += any(passages.get(n) == gold for n in cited)
            sections = engine.passages(select)
            haystack = [p.header() + "\n" + p.text for p in sections] + [question]
            invented = [p for p in _unsupported(composed.text, haystack) if p.startswith(("number", "URL", "e-mail"))]
            out["invented_posted"] += bool(invented)
        elif outcome == "abstained":
            out["abstained"] += 1
        else:
            reason = report["reason"].split(":")[0] if report["reason"].startswith("guard") else report["reason"].split(" after")[0]
            key = report["reason"].split(" is not")[0].split(" ")[1] if report["reason"].startswith("guard: ") else reason
            out["fallback_reasons"][key] = out["fallback_reasons"].get(key, 0) + 1
    summary = {k: v for k, v in out.items() if not isinstance(v, list)}
    for key in ("select_f1", "compose_f1", "select_rouge", "compose_rouge"):
        summary[key] = statistics.fmean(out[key]) if out[key] else None
    summary["compose_seconds_p50"] = med(out["seconds"])
    summary["guard_pass_rate"] = out["composed"] / out["tried"] if out["tried"] else None
    summary["citation_correct"] = out["cites_gold"] / out["composed"] if out["composed"] else None
    summary["select_decline_offtopic"] = out["select_declined_offtopic"] / out["offtopic"] if out["offtopic"] else None
    summary["compose_decline_offtopic"] = out["compose_declined_offtopic"] / out["offtopic"] if out["offtopic"] else None
    return summary


def print_faithfulness(rows: list[dict]) -> None:
    print("\n(b) faithfulness on held-out questions (F1 / ROUGE-L of the answer shown vs the gold article)")
    print(f"{'set':<12} {'n':>4} {'select F1':>9} {'compose F1':>10} {'select RL':>9} {'compose RL':>10} "
          f"{'guard pass':>10} {'cites gold':>10} {'invented':>8} {'off-topic declined sel/comp':>28}  fall-backs")
    for r in rows:
        print(f"{r['set']:<12} {r['answerable']:>4} {fmt(r['select_f1'], '.3f'):>9} {fmt(r['compose_f1'], '.3f'):>10} "
              f"{fmt(r['select_rouge'], '.3f'):>9} {fmt(r['compose_rouge'], '.3f'):>10} "
              f"{fmt(r['guard_pass_rate'], '.0%'):>10} {fmt(r['citation_correct'], '.0%'):>10} {r['invented_posted']:>8} "
              f"{fmt(r['select_decline_offtopic'], '.0%'):>13} / {fmt(r['compose_decline_offtopic'], '.0%'):<12}  "
              f"{json.dumps(r['fallback_reasons'])}")


def build_stackfaq_home(tmp: Path) -> Path:
    from helpcentre_data import load_stackfaq_faqs, write_stackfaq

    from core.settings import Settings
    from training.ingest import ingest

    kb = tmp / "stackfaq-kb"
    write_stackfaq(kb, load_stackfaq_faqs())
    home = tmp / "stackfaq-home"
    print("ingesting StackFAQ (not timed)...", file=sys.stderr)
    ingest([kb], Settings.load(env={}, home=home))
    return home


# ----- (c) one simulated round of thumbs → retrain → (b) again ----------------------------------------
ROUND_QUESTIONS = {"demo": 40, "stackfaq": 100}  # a set's default; StackFAQ's: see the module doc
VOTERS = [f"sim-user-{i}" for i in range(8)]  # the honest round's pool of simulated users
COLLUDERS = ("colluder-a", "colluder-b")  # the poisoned round's two users


def voters_of(i: int) -> tuple[str, str]:
    """The two distinct users who vote on the round's i-th answer: i and i + 3 (mod 8), so that every
    user votes on a quarter of the answers, each time with another partner."""
    return VOTERS[i % len(VOTERS)], VOTERS[(i + 3) % len(VOTERS)]


def demo_round_questions(docs: dict, n: int, taken: set[str], frozen: set[str]) -> list[tuple[str, str]]:
    """(question, gold doc id): each article's example questions after the first ((b) asks the first),
    interleaved across articles (every article's 2nd, then every 3rd, …) so that a small `n` covers many
    articles; held-out texts (`taken`: (b)'s; `frozen`: the retrain's gate set, whose votes it never
    learns) left out."""
    from training.feedback_data import normalize

    out, depth = [], max((len(d.questions) for d in docs.values()), default=0)
    for k in range(1, depth):
        for doc in docs.values():
            if len(doc.questions) > k and normalize(doc.questions[k]) not in taken | frozen:
                out.append((doc.questions[k], doc.id))
    return out[:n]


def stackfaq_round_questions(n: int) -> list[tuple[str, str]]:
    """StackFAQ queries of rephrase group 0 ((b) holds out group 1), evenly spaced over the file (so
    over the threads), none equal to a group-1 query."""
    from helpcentre_data import load_stackfaq_queries

    from training.feedback_data import normalize

    held = {normalize(q) for q, _ in load_stackfaq_queries(group=1)}
    pool = [(q, d) for q, d in load_stackfaq_queries(group=0) if normalize(q) not in held]
    return pool[:: max(1, len(pool) // max(1, n))][:n]


def kb_heldout_texts(docs: dict, home: Path) -> set[str]:
    """The questions the retrain's first run freezes into its gate's held-out set (training/gate.py
    HeldoutSet.update_from_kb: deterministic), computed without writing anything."""
    from core.settings import Settings
    from training.gate import HeldoutSet

    heldout = HeldoutSet(Path(home) / "unused-heldout.jsonl")
    heldout.update_from_kb(list(docs.values()), Settings.load(env={}, home=home).retrain)
    return heldout.texts()


def ask_round(home: Path, questions: list[tuple[str, str]], vote_f1: float) -> list[dict]:
    """Ask each question in compose mode and record the shown answer in the home's store, as `csbot ask`
    does; returns the answers with the honest verdict of each (see `honest_vote`)."""
    from core.settings import Settings
    from serving.engine import Engine
    from training.compose_gate import token_f1

    settings = Settings.load(env={}, home=home, torch_threads=1, answer_mode="compose",
                             compose_first_token_budget_seconds=30, compose_latency_budget_seconds=60)
    engine = Engine(settings)
    docs = engine.catalogue().articles
    asked = []
    for i, (question, gold) in enumerate(questions):
        t0 = time.perf_counter()
        select = engine.answer(question)  # the engine selects; composing is the caller's
        shown = engine.compose(select)
        seconds = time.perf_counter() - t0
        report = shown.composition
        record = {"question": question, "gold": gold, "select_doc": select.doc_id, "shown_doc": shown.doc_id,
                  "seconds": round(seconds, 2), "cites_gold": None, "f1": None}
        if shown.handoff:
            record["outcome"] = "abstained" if report and report["outcome"] == "abstained" else "handoff"
        elif report is None:
            record["outcome"] = "select"  # not composed (cannot happen for an answer with an article)
        elif report["outcome"] == "composed":
            record["outcome"] = "composed"
            cited = (report.get("guard") or {}).get("cited") or []
            by_n = {p["n"]: p["doc_id"] for p in report["passages"]}
            record["cites_gold"] = any(by_n.get(n) == gold for n in cited)
            # Faithful to the gold article: F1 against its text, or against the part of it the model
            # read and cited (a long article's section: the whole of it dwarfs any short answer).
            references = [docs[gold].answer] if gold in docs else []
            references += [p.text for p in engine.passages(select) if p.doc_id == gold and p.n in cited]
            record["f1"] = round(max((token_f1(shown.text, r) for r in references), default=0.0), 4)
        else:
            record["outcome"] = "fallback"
            record["reason"] = report.get("reason", "")
        record["vote"] = honest_vote(record, vote_f1)
        record["voters"] = list(voters_of(i))
        asked.append({"answer": shown, **record})
    return asked


def honest_vote(record: dict, vote_f1: float) -> str | None:
    """On what was posted: a composed answer 👍 iff it cites the gold article and its token F1 against it
    is at least `vote_f1`; the select answer (a fall-back) 👍 iff it is the gold article; no vote on a
    hand-off or an abstention."""
    if record["outcome"] == "composed":
        return "up" if record["cites_gold"] and record["f1"] >= vote_f1 else "down"
    if record["outcome"] in ("fallback", "select"):
        return "up" if record["shown_doc"] == record["gold"] else "down"
    return None


def record_round(home: Path, asked: list[dict], *, poisoned: bool) -> dict:
    """Store the answers (user: the first voter, as the asker) and the votes: the honest ones by the
    answer's two voters, or — `poisoned` — every vote inverted, by the two colluders."""
    from core.settings import Settings
    from store import Store

    counts = {"answers": 0, "up": 0, "down": 0, "stored": 0, "not_stored": 0}
    with Store.from_settings(Settings.load(env={}, home=home)) as store:
        for item in asked:
            voters = COLLUDERS if poisoned else tuple(item["voters"])
            store.record_answer(item["answer"], origin="cli", user=voters[0])
            counts["answers"] += 1
            vote = item["vote"]
            if vote is None:
                continue
            if poisoned:
                vote = "down" if vote == "up" else "up"
            for user in voters:
                result = store.record_vote(item["answer"].answer_id, vote, user=user, origin="button")
                counts[vote] += 1
                counts["stored" if result.stored else "not_stored"] += 1
    return counts


def link_base_model(home: Path, shared: Path) -> None:
    """Convert the builtin composer once for every home of the round (the retrain would convert it
    into each home's base_models, 20–45 s and 540 MB each)."""
    from core.settings import Settings
    from models.loading import BUILTIN_PREFIX, resolve_causal_lm

    model = Settings.load(env={}, home=home).compose.model
    if not model.startswith(BUILTIN_PREFIX):
        return
    key = model[len(BUILTIN_PREFIX):]
    resolve_causal_lm(model, shared)
    (home / "base_models").mkdir(exist_ok=True)
    if not (home / "base_models" / key).exists():
        (home / "base_models" / key).symlink_to(shared / key)


def round_retrain(home: Path, args) -> dict:
    """`training.retrain.retrain(force=True)` on the home, its settings loaded as the retrain CLI loads
    them, with the composer stage on; a summary of the outcome."""
    import gc

    from core.settings import Settings
    from training.retrain import retrain

    gc.collect()  # the round's composer model, before training's 5–6 GB
    overrides = dict(retrain_composer="on", retrain_composer_max_steps=args.composer_steps,
                     retrain_composer_threads=args.train_threads, retrain_progress="off",
                     retrain_max_steps=args.retrain_max_steps)
    if args.composer_fast:
        overrides.update(COMPOSER_FAST)
    settings = Settings.load(env={}, home=home, torch_threads=args.train_threads, **overrides)
    config = settings.retrain
    import torch

    torch.set_num_threads(args.train_threads)  # the encoder's fine-tuning runs in this process
    t0 = time.perf_counter()
    outcome = retrain(settings, config, force=True)
    report = outcome.report
    composer = report.get("composer") or {}
    verdict = composer.get("verdict") or {}
    return {"status": outcome.status, "exit_code": outcome.exit_code, "message": outcome.message,
            "seconds": round(time.perf_counter() - t0, 1), "timings": report.get("timings"),
            "champion": report.get("champion"), "served": report.get("served"), "counts": report.get("counts"),
            "decision": report.get("decision"),
            "composer": {"status": composer.get("status"), "reason": composer.get("reason")
                         or (composer.get("plan") or {}).get("reason"), "error": composer.get("error"),
                         "rows": (composer.get("plan") or {}).get("rows"), "counts": composer.get("counts"),
                         "timings": composer.get("timings"),
                         "verdict": {k: verdict.get(k) for k in ("approved", "metrics", "current_metrics", "checks",
                                                                 "reasons", "heldout_rows", "trained")}
                         if verdict else None},
            "config": {k: v for k, v in config.to_dict().items() if k.startswith("composer") or k in (
                "max_steps", "epochs", "threads")}}


# A smoke's composer stage (--composer-fast): small KB sample, few gate rows, short generations.
COMPOSER_FAST = dict(retrain_composer_kb_max=16, retrain_composer_heldout_max=4, retrain_composer_heldout_oos=2,
                     retrain_composer_max_new_tokens=32, retrain_composer_batch_size=2)


def faith(summary: dict | None) -> float | None:
    """One held-out faithfulness figure: the mean of compose F1 and ROUGE-L (as the composer's gate
    averages its token F1 and ROUGE-L)."""
    if not summary or summary.get("compose_f1") is None or summary.get("compose_rouge") is None:
        return None
    return (summary["compose_f1"] + summary["compose_rouge"]) / 2


def fallback_rate(summary: dict | None) -> float | None:
    rate = (summary or {}).get("guard_pass_rate")
    return None if rate is None else 1 - rate


def one_round(name: str, home: Path, heldout_rows: list, questions: list, before: dict | None, tmp: Path,
              poison: bool, args) -> dict:
    """The honest round (and the poisoned one) of one set: copies of `home`, asked, voted, retrained,
    measured again."""
    honest_home, poison_home = tmp / f"round-{name}", tmp / f"round-{name}-poisoned"
    shutil.copytree(home, honest_home, symlinks=True)
    if poison:
        shutil.copytree(home, poison_home, symlinks=True)  # untouched: before anything is asked or voted
    shared = tmp / "base_models"
    out: dict = {"set": name, "questions": len(questions), "vote_f1": args.vote_f1}
    if before is None:
        print(f"(c) {name}: held-out figures before the round...", file=sys.stderr, flush=True)
        before = faithfulness(honest_home, heldout_rows, name)
    out["before"] = before
    print(f"(c) {name}: asking {len(questions)} round questions...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    asked = ask_round(honest_home, questions, args.vote_f1)
    out["ask_seconds"] = round(time.perf_counter() - t0, 1)
    out["asked"] = [{k: v for k, v in item.items() if k != "answer"} for item in asked]
    outcomes: dict = {}
    for item in asked:
        outcomes[item["outcome"]] = outcomes.get(item["outcome"], 0) + 1
    out["outcomes"] = outcomes
    out["honest"] = {"votes": record_round(honest_home, asked, poisoned=False)}
    print(f"(c) {name}: retraining after the honest round...", file=sys.stderr, flush=True)
    link_base_model(honest_home, shared)
    out["honest"]["retrain"] = retrain_result = round_retrain(honest_home, args)
    if retrain_result["status"] == "promoted":
        print(f"(c) {name}: held-out figures after the honest round...", file=sys.stderr, flush=True)
        out["honest"]["after"] = faithfulness(honest_home, heldout_rows, name)
    else:
        out["honest"]["after"] = None  # nothing promoted: the champion serves as before
    after = out["honest"]["after"]
    fb, fa = faith(before), faith(after)
    rb, ra = fallback_rate(before), fallback_rate(after)
    out["honest"]["target"] = bool(after) and None not in (fb, fa, rb, ra) and fa > fb and ra < rb
    if poison:
        out["poisoned"] = {"votes": record_round(poison_home, asked, poisoned=True)}
        print(f"(c) {name}: retraining after the poisoned round...", file=sys.stderr, flush=True)
        link_base_model(poison_home, shared)
        out["poisoned"]["retrain"] = poisoned = round_retrain(poison_home, args)
        out["poisoned"]["after"] = None
        if poisoned["status"] == "promoted":
            print(f"(c) {name}: held-out figures after the poisoned round...", file=sys.stderr, flush=True)
            out["poisoned"]["after"] = faithfulness(poison_home, heldout_rows, name)
        pa = faith(out["poisoned"]["after"])
        out["poisoned"]["target"] = poisoned["status"] != "promoted" or (pa is not None and fb is not None
                                                                          and pa >= fb - 1e-9)
    for folder in (honest_home, poison_home):  # a home with a retrained composer is a GB or more
        shutil.rmtree(folder, ignore_errors=True)
    return out


def print_round(rounds: list[dict]) -> None:
    print("\n(c) one simulated round of thumbs → retrain → (b) again (held-out rows of (b); the round asks other "
          "questions)")
    print(f"{'set':<12} {'asked':>5} {'composed':>8} {'fell back':>9} {'handed off':>10} {'👍':>4} {'👎':>4} "
          f"{'votes':>5} {'ask s':>6}  composed 👍 / 👎")
    for r in rounds:
        o, asked = r["outcomes"], r["asked"]
        up = sum(a["vote"] == "up" for a in asked)
        down = sum(a["vote"] == "down" for a in asked)
        cup = sum(a["vote"] == "up" for a in asked if a["outcome"] == "composed")
        cdown = sum(a["vote"] == "down" for a in asked if a["outcome"] == "composed")
        print(f"{r['set']:<12} {r['questions']:>5} {o.get('composed', 0):>8} {o.get('fallback', 0):>9} "
              f"{o.get('handoff', 0) + o.get('abstained', 0):>10} {up:>4} {down:>4} "
              f"{r['honest']['votes']['stored']:>5} {r['ask_seconds']:>6.0f}  {cup} / {cdown}")
        wrong = sum(a["vote"] == "up" and a["shown_doc"] != a["gold"] for a in asked)
        if wrong:
            print(f"{'':<12} {wrong} 👍 on composed answers that cite the gold article but are recorded under another "
                  "article (the select answer's): the classifier learns that article for the question")
    print(f"\n{'set':<12} {'round':<9} {'retrain':<13} {'exit':>4} {'s':>6}  {'composer':<10} "
          f"{'faith cur→new':>13} {'guard cur→new':>13} {'cite cur→new':>12} {'oos cur→new':>11} "
          f"{'invent cur→new':>14}  message")
    for r in rounds:
        for kind in ("honest", "poisoned"):
            if kind not in r:
                continue
            t = r[kind]["retrain"]
            c = t["composer"]
            v = c.get("verdict") or {}
            cur, new = v.get("current_metrics") or {}, v.get("metrics") or {}

            def pair(key, spec=".3f"):
                return f"{fmt(cur.get(key), spec)}→{fmt(new.get(key), spec)}"

            print(f"{r['set']:<12} {kind:<9} {t['status']:<13} {t['exit_code']:>4} {t['seconds']:>6.0f}  "
                  f"{c.get('status') or '-':<10} {pair('faithfulness'):>13} {pair('guard_pass_rate', '.2f'):>13} "
                  f"{pair('citation_accuracy', '.2f'):>12} {pair('oos_abstention_rate', '.2f'):>11} "
                  f"{pair('invented_rate', '.2f'):>14}  {t['message']}")
            failed = [ch["detail"] for ch in v.get("checks") or [] if not ch.get("passed")]
            if failed:
                print(f"{'':<12} {'':<9} composer gate failed: {'; '.join(failed)}")
            decision = t.get("decision") or {}
            if decision and not decision.get("promote"):
                print(f"{'':<12} {'':<9} classifier gate failed: {'; '.join(decision.get('reasons') or [])}")
            counts, ccounts = t.get("counts") or {}, c.get("counts") or {}
            print(f"{'':<12} {'':<9} data: {counts.get('labelled', 0)} labelled, {counts.get('hard_negatives', 0)} hard "
                  f"negatives, {counts.get('already_in_kb', 0)} already in the KB, {counts.get('contradicts_kb', 0)} "
                  f"contradict it, {counts.get('suspicious_users', 0)} suspicious users, "
                  f"{counts.get('capped_examples', 0)} capped, {counts.get('heldout_added_feedback', 0)} frozen into "
                  f"the held-out set; composer: {ccounts.get('sft_feedback', 0)} 👍 SFT rows, "
                  f"{ccounts.get('kto_undesirable', 0)} 👎 KTO rows, {ccounts.get('guard_rejected', 0)} 👍 refused "
                  f"by the guard, {ccounts.get('capped_up', 0) + ccounts.get('capped_down', 0)} capped, "
                  f"{ccounts.get('kb_rows', 0)} KB rows")
    print(f"\n{'set':<12} {'after':<9} {'faith':>6} {'compose F1':>10} {'compose RL':>10} {'guard pass':>10} "
          f"{'fall-back':>9} {'cites gold':>10} {'invented':>8} {'off-topic declined':>18}")
    for r in rounds:
        rows = [("before", r["before"]), ("honest", r["honest"]["after"])]
        if "poisoned" in r:
            rows.append(("poisoned", r["poisoned"]["after"]))
        for label, s in rows:
            if s is None:
                print(f"{r['set']:<12} {label:<9} (nothing promoted: the champion of before serves)")
                continue
            print(f"{r['set']:<12} {label:<9} {fmt(faith(s), '.3f'):>6} {fmt(s['compose_f1'], '.3f'):>10} "
                  f"{fmt(s['compose_rouge'], '.3f'):>10} {fmt(s['guard_pass_rate'], '.0%'):>10} "
                  f"{fmt(fallback_rate(s), '.0%'):>9} {fmt(s['citation_correct'], '.0%'):>10} "
                  f"{s['invented_posted']:>8} {fmt(s['compose_decline_offtopic'], '.0%'):>18}")
    for r in rounds:
        before, after = r["before"], r["honest"]["after"]
        held = "held" if r["honest"]["target"] else "NOT held"
        detail = ("nothing promoted" if after is None else
                  f"faithfulness {fmt(faith(before), '.3f')} → {fmt(faith(after), '.3f')}, fall-back rate "
                  f"{fmt(fallback_rate(before), '.0%')} → {fmt(fallback_rate(after), '.0%')}")
        print(f"target ({r['set']}, honest round: faithfulness rises and the fall-back rate falls): {held} ({detail})")
        if "poisoned" in r:
            p = r["poisoned"]
            held = "held" if p["target"] else "NOT held"
            approved = ((p["retrain"]["composer"].get("verdict") or {}).get("approved"))
            detail = (f"{p['retrain']['status']}, composer {p['retrain']['composer'].get('status')}"
                      f"{' (approved)' if approved else ''}")
            if p["after"] is not None:
                detail += f"; faithfulness {fmt(faith(before), '.3f')} → {fmt(faith(p['after']), '.3f')}"
            print(f"target ({r['set']}, poisoned round: not promoted lower): {held} ({detail})")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--home", help="a demo CSBOT_HOME to use (else one is built; (c) works on copies of it)")
    p.add_argument("--questions", type=int, default=30, help="demo KB questions for (a) and (b)")
    p.add_argument("--stackfaq", type=int, default=40, help="StackFAQ queries for (b) (0: skip)")
    p.add_argument("--offtopic", type=int, default=30, help="CLINC150 out-of-scope questions per set for (b)")
    p.add_argument("--backends", default="llama-cpp,transformers")
    p.add_argument("--max-new-tokens", type=int, default=160)
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--skip-faithfulness", action="store_true", help="skip (b) (with --round, (c) still measures "
                   "its held-out figures before the round)")
    p.add_argument("--round", action="store_true", help="run (c): a simulated round of thumbs, retrain, (b) again")
    p.add_argument("--round-sets", default="demo,stackfaq", help="(c): the sets with a round (demo, stackfaq)")
    p.add_argument("--round-questions", default="demo=40,stackfaq=100",
                   help="(c): questions asked per set, N or demo=N,stackfaq=M (StackFAQ: see the module doc)")
    p.add_argument("--composer-steps", type=int, help="(c): the retrain's composer_max_steps (default: the setting's)")
    p.add_argument("--poison", action=argparse.BooleanOptionalAction, default=True,
                   help="(c): also a poisoned round (every vote inverted, two colluding users)")
    p.add_argument("--poison-sets", default="demo", help="(c): the sets with a poisoned round")
    p.add_argument("--vote-f1", type=float, default=0.3, help="(c): token F1 a composed answer needs for a 👍")
    p.add_argument("--train-threads", type=int, default=1, help="(c): torch threads of the retrain (encoder and "
                   "composer)")
    p.add_argument("--retrain-max-steps", type=int, help="(c): the retrain's encoder max_steps per stage "
                   "(default: the setting's; a smoke: 2)")
    p.add_argument("--composer-fast", action="store_true", help="(c): a smoke's composer stage: " + ", ".join(
        f"{k.removeprefix('retrain_')}={v}" for k, v in COMPOSER_FAST.items()))
    p.add_argument("--json", help="write the figures to this file")
    args = p.parse_args()
    round_sets = [s for s in args.round_sets.split(",") if s] if args.round else []
    if set(round_sets) - {"demo", "stackfaq"}:
        p.error("--round-sets: demo and/or stackfaq")
    if "stackfaq" in round_sets and not args.stackfaq:
        p.error("the StackFAQ round measures (b)'s StackFAQ rows: give --stackfaq N > 0, or --round-sets demo")
    poison_sets = [s for s in args.poison_sets.split(",") if s in round_sets] if args.poison else []
    try:
        per_set = {s: int(args.round_questions) for s in round_sets} if "=" not in args.round_questions else {
            k: int(v) for k, v in (item.split("=") for item in args.round_questions.split(",") if item)}
    except ValueError:
        p.error("--round-questions: N or demo=N,stackfaq=M")

    from demo_home import bench_home
    from helpcentre_data import load_clinc_oos, load_stackfaq_queries

    tmp = Path(tempfile.mkdtemp(prefix="csbot-bench-compose-"))
    results: dict = {}
    try:
        home = bench_home(args.home, tmp)
        from core.settings import Settings
        from serving.engine import Engine

        docs = Engine(Settings.load(env={}, home=home)).catalogue().articles
        demo_rows = [(doc.questions[0], doc.id) for doc in docs.values() if doc.questions][: args.questions]
        if not args.skip_speed:
            print("(a) speed: one thread; medians over the demo questions; select = the select answer of the same "
                  "question in the same run")
            print(f"{'backend':<13} {'n':>3} {'first token p50/p90':>20} {'tokens/s':>9} {'whole p50/p90':>15} "
                  f"{'tokens':>6} {'select p50':>10} {'whole / select':>14}")
            results["speed"] = []
            for backend in [b for b in args.backends.split(",") if b]:
                r = speed(home, [q for q, _ in demo_rows], backend, args.max_new_tokens)
                results["speed"].append(r)
                print(f"{backend:<13} {r['questions']:>3} {fmt(r['first_token_p50']):>9}s/{fmt(r['first_token_p90'])}s "
                      f"{fmt(r['tokens_per_s_p50'], '.1f'):>9} {fmt(r['whole_p50']):>7}s/{fmt(r['whole_p90'])}s "
                      f"{fmt(r['tokens_p50'], '.0f'):>6} {fmt(r['select_p50'] * 1000 if r['select_p50'] else None, '.1f'):>8}ms "
                      f"{fmt(r['ratio_whole_to_select'], '.0f'):>13}×", flush=True)
        sets = {}
        if not args.skip_faithfulness or round_sets:
            offtopic = load_clinc_oos(n=args.offtopic)
            sets["demo"] = (home, demo_rows + [(q, None) for q in offtopic])
            if args.stackfaq and (not args.skip_faithfulness or "stackfaq" in round_sets):
                queries = load_stackfaq_queries(group=1)[:: max(1, len(load_stackfaq_queries(group=1)) // args.stackfaq)]
                sets["stackfaq"] = (build_stackfaq_home(tmp), queries[: args.stackfaq] + [(q, None) for q in offtopic])
        if not args.skip_faithfulness:
            results["faithfulness"] = [faithfulness(h, rows, name) for name, (h, rows) in sets.items()]
            print_faithfulness(results["faithfulness"])
        if round_sets:
            from training.feedback_data import normalize

            before = {r["set"]: r for r in results.get("faithfulness", [])}
            rounds = []
            for name in round_sets:
                set_home, rows = sets[name]
                n = per_set.get(name, ROUND_QUESTIONS[name])
                if name == "demo":
                    questions = demo_round_questions(docs, n, {normalize(q) for q, _ in rows},
                                                     kb_heldout_texts(docs, set_home))
                else:
                    questions = stackfaq_round_questions(n)
                rounds.append(one_round(name, set_home, rows, questions, before.get(name), tmp, name in poison_sets,
                                        args))
                results["round"] = {"sets": rounds, "vote_f1": args.vote_f1, "composer_steps": args.composer_steps,
                                    "composer_fast": args.composer_fast, "retrain_max_steps": args.retrain_max_steps,
                                    "train_threads": args.train_threads, "voters": VOTERS, "colluders": COLLUDERS}
            print_round(rounds)
    finally:
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1, default=str))
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
