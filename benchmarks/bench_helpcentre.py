"""Help-centre knowledge bases (articles only, no example questions): answers, decisions and the
learning loop, each figure beside the bare-retrieval floor measured in the same run.

The floor: bare frozen all-MiniLM-L6-v2 (`builtin:all-MiniLM-L6-v2`), the question's cosine to every
article title and every section (`<title> — <heading>`; StackFAQ articles have no headings, so
titles only), answer with the top candidate's article when its cosine is ≥ 0.5, else decline.

(a) StackFAQ (tech-support threads from StackExchange Web Applications, Karan & Šnajder 2018) as
    Markdown, one article per thread (`# <thread question>`, then each answer as a paragraph: see
    benchmarks/helpcentre_data.py for why no `## Answer k` headings), ingested with default settings.
    Scored on rephrase_group 1 (624 paraphrased queries) + the first 200 CLINC150 `oos` test
    questions: answered-right, answered-wrong, hand-off, clarifying question (answer JSON `clarify`;
    "clarified-right" when its options include the gold article), off-topic declined. Group 0 is
    not shown to the engine here: it tunes its own threshold per version (and group 0 is the
    traffic of part (c)). Published StackFAQ results (Karan & Šnajder 2018; Sakata et al. SIGIR 2019,
    BERT re-ranking) are ranking metrics (MAP, P@k) with no decline option, so not the same figure.
(b) DSTC10 Track 2 knowledge as articles grouped by entity (title = entity name, one `## <FAQ title>`
    section per snippet; 668 articles, 12,039 sections), ingested with default settings through
    `csbot ingest` under a time bound. The 104 knowledge-seeking val turns (query = last user turn,
    earlier turns as context, newest last) → right article, right snippet (answer JSON `section`
    heading == the snippet title and doc_id == the article; "n/a" while answers carry no `section`);
    the 159 other turns → declined (not answered from the KB). DSTC10 systems (Kim et al. 2021;
    Thulke et al. 2023) train cross-encoders on ~70k DSTC9 training dialogues, which this bench does
    not use; their knowledge-selection R@1 is not comparable with an engine that must also decline.
(c) The learning loop from a doc-only start: StackFAQ group 0 (625 queries) as traffic, each asked
    once through the engine and logged in the store with its answer id; votes from 25 simulated
    users imported with `csbot feedback --file votes.jsonl --json` (👍 when right; 👎 + the right
    article as `doc_id` on 70 % of the rest — wrong answers and hand-offs —, plain 👎 otherwise;
    `random.Random`, fixed seeds); one `python training/retrain.py --json` with CSBOT_HOME set; group 1
    (+ off-topic) before/after, promoted or not, exit code. The same with one adversarial user
    casting 30 % of the votes (👎 + a wrong article on right answers and hand-offs, 👍 on wrong ones).

If ingest with default settings fails (the issue's first bullet), the failure is reported and the
KB is ingested again with `finetune_epochs=0` so that the other figures can still be measured.

Usage: python benchmarks/bench_helpcentre.py [--quick] [--only a,b,c] [--json]
       [--ingest-timeout S] [--retrain-timeout S] [--skip-poisoned] [--keep]
  --quick: parts a and b only (`--quick --only a,c` adds the clean loop: one retrain, ~5-8 min on a
           loaded 2-core VM), every 3rd group-1 query, 100 off-topic questions, a DSTC10 KB of the
           gold articles + the domain-wide ones + 100 others, no poisoned run.
Part times on the shared 2-core VM (load 6-8, so 2-3× a quiet machine): a ≈ 1.5-2.5 min; b ≈ 8 min
(4-5 min of it the 12k-section ingest, ~3.5 min the floor's first encode, cached afterwards under
$TMPDIR/csbot-bench-helpcentre-cache); c ≈ 9 min per scenario (the retrain).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from core.runtime import quiet_libraries  # noqa: E402

quiet_libraries()  # before the libraries load: no progress bars of theirs among the figures
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import helpcentre_data as hd  # noqa: E402
import numpy as np  # noqa: E402

FLOOR_MODEL = "builtin:all-MiniLM-L6-v2"
FLOOR_THRESHOLD = 0.5
USERS = 25
CORRECTION_P = 0.7
ADVERSARY_SHARE = 0.3
CACHE = Path(os.environ.get("CSBOT_BENCH_CACHE", Path(tempfile.gettempdir()) / "csbot-bench-helpcentre-cache"))
TARGETS = {
    "stackfaq_right": ">= 95 %", "stackfaq_wrong": "<= 2 %", "stackfaq_offtopic_declined": ">= 97 %",
    "stackfaq_ingest_s": "< 60 s", "dstc10_right_snippet": ">= floor + 5 points",
    "loop_right_delta": ">= +3 points", "loop_wrong": "not rising", "poisoned": "never promoted lower",
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


# ----- public interfaces: CLI subprocesses ---------------------------------------------------------

def cli_env(home: Path, **extra: str) -> dict:
    """The environment of a csbot subprocess: no CSBOT_* from the caller, CSBOT_HOME = home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSBOT_")}
    env.update({"CSBOT_HOME": str(home), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **extra})
    if "CSBOT_DATA_DIR" in os.environ:
        env["CSBOT_DATA_DIR"] = os.environ["CSBOT_DATA_DIR"]
    return env


def run_cli(args: list[str], home: Path, *, timeout: float, log_path: Path, **extra_env: str) -> dict:
    """Run a command with CSBOT_HOME=home from a scratch folder (no csbot.toml picked up); returns
    exit code, wall seconds, the last JSON line of stdout (if any) and the stderr tail."""
    start, cpu0 = time.perf_counter(), _children_cpu()
    cwd = home.parent
    try:
        proc = subprocess.run(args, cwd=cwd, env=cli_env(home, **extra_env), capture_output=True, text=True, timeout=timeout)
        code, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        code = None
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
    seconds, cpu = time.perf_counter() - start, _children_cpu() - cpu0
    log_path.write_text(f"$ {' '.join(args)}\n--- stdout\n{out}\n--- stderr\n{err}", encoding="utf-8")
    parsed = None
    for line in reversed(out.strip().splitlines()):
        try:
            parsed = json.loads(line)
            break
        except json.JSONDecodeError:
            continue
    stages = [line[11:] for line in err.splitlines() if line[:2] == "20" and (" training." in line or " retrieval." in line
                                                                            or " bot." in line or " models." in line)]
    return {"exit_code": code, "timed_out": code is None, "seconds": round(seconds, 1), "cpu_s": round(cpu, 1), "json": parsed,
            "stages": stages[:20],
            "stderr_tail": "\n".join(err.strip().splitlines()[-6:]), "log": str(log_path)}


def _children_cpu() -> float:
    """CPU seconds of finished child processes: on a shared machine, CPU-s / 2 is what a command
    would take on 2 dedicated cores (at best), as in bench_learning_loop."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# `csbot` itself (bot.cli:main), with INFO logs timestamped on stderr so that the log shows where a
# long ingest spends its time (the CLI alone logs warnings only).
_CLI = ("import logging, sys; logging.basicConfig(level=logging.INFO, format='%(asctime)s %(name)s %(message)s'); "
        "[logging.getLogger(n).setLevel(logging.WARNING) for n in ('transformers', 'sentence_transformers', 'httpx')]; "
        "from bot.cli import main; sys.argv[0] = 'csbot'; sys.exit(main())")


def csbot_cmd(*args: str) -> list[str]:
    """The `csbot` CLI of this interpreter's environment."""
    return [sys.executable, "-c", _CLI, *args]


def ingest_cli(kb: Path, home: Path, *, timeout: float, logs: Path, name: str) -> dict:
    """`csbot ingest KB --json` with default settings; if that fails, again with finetune_epochs=0."""
    first = run_cli(csbot_cmd("ingest", str(kb), "--json"), home, timeout=timeout, log_path=logs / f"{name}-ingest.log")
    result = {"default_ok": first["exit_code"] == 0, "default": _ingest_summary(first)}
    if first["exit_code"] == 0:
        result["used"] = "default"
        return result
    log(f"{name}: ingest with default settings failed (exit {first['exit_code']}"
        f"{', timed out' if first['timed_out'] else ''}): {first['stderr_tail'].splitlines()[-1] if first['stderr_tail'] else ''}")
    if first["timed_out"]:
        result["used"] = None
        return result
    shutil.rmtree(home, ignore_errors=True)
    second = run_cli(csbot_cmd("ingest", str(kb), "--json"), home, timeout=timeout,
                     log_path=logs / f"{name}-ingest-noft.log", CSBOT_FINETUNE_EPOCHS="0")
    result["fallback"] = _ingest_summary(second)
    result["used"] = "finetune_epochs=0" if second["exit_code"] == 0 else None
    return result


def _ingest_summary(run: dict) -> dict:
    report = run["json"] or {}
    return {"exit_code": run["exit_code"], "timed_out": run["timed_out"], "wall_s": run["seconds"], "cpu_s": run.get("cpu_s"),
            "build_s": report.get("seconds"), "documents": report.get("documents"), "version": report.get("version"),
            "error": None if run["exit_code"] == 0 else (run["stderr_tail"].splitlines() or [""])[-1][:300],
            "stages": run.get("stages")}


# ----- the floor: bare frozen MiniLM --------------------------------------------------------------

_floor_model = None


def floor_embed(texts: list[str]) -> np.ndarray:
    """Normalised frozen-MiniLM embeddings, cached on disk (outside the repo) by the texts' hash."""
    global _floor_model
    key = hashlib.sha256(("\x1f".join([FLOOR_MODEL, *texts])).encode()).hexdigest()[:24]
    path = CACHE / f"floor-{key}.npy"
    if path.is_file():
        return np.load(path)
    if _floor_model is None:
        from models.loading import load_sentence_transformer

        _floor_model = load_sentence_transformer(FLOOR_MODEL, "cpu")
    vectors = _floor_model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True).astype(np.float32)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


class Floor:
    """Candidates: (article id, heading or None, text); top cosine ≥ 0.5 answers, else declines."""

    def __init__(self, candidates: list[tuple[str, str | None, str]]):
        self.candidates = candidates
        self.vectors = floor_embed([text for _, _, text in candidates])

    def predict(self, queries: list[str]) -> list[dict]:
        q = floor_embed(queries)
        out = []
        for start in range(0, len(q), 512):
            sims = q[start:start + 512] @ self.vectors.T
            best = sims.argmax(1)
            for row, j in enumerate(best):
                score = float(sims[row, j])
                doc, heading, _ = self.candidates[j]
                answered = score >= FLOOR_THRESHOLD
                out.append({"handoff": not answered, "doc_id": doc if answered else None, "score": score,
                            "sources": [{"doc_id": doc, "score": score}],
                            "section": {"heading": heading} if answered and heading else None})
        return out


# ----- the engine ---------------------------------------------------------------------------------

def engine_answers(home: Path, texts: list[str], contexts: list[list[str]] | None = None, *, batch: int = 128) -> tuple[list[dict], float, str]:
    """Answers as their `--json` dicts, the seconds it took, and the served version."""
    from core.settings import Settings
    from serving.engine import Engine

    engine = Engine(Settings.load(env={}, home=home))
    contexts = contexts or [[] for _ in texts]
    start = time.perf_counter()
    out = []
    for i in range(0, len(texts), batch):
        out += [a.to_json() for a in engine.answer_batch(texts[i:i + batch], contexts[i:i + batch])]
    return out, time.perf_counter() - start, engine.model_version


def clarify_options(answer: dict) -> list[str] | None:
    """The article ids a clarifying question offers, or None when the answer asks none. Tolerant of the
    shape: a list of ids or of {doc_id|id, ...}, or {"options": [...]}."""
    clarify = answer.get("clarify")
    if not clarify:
        return None
    if isinstance(clarify, dict):
        clarify = clarify.get("options") or clarify.get("choices") or []
    ids = []
    for option in clarify if isinstance(clarify, list) else []:
        if isinstance(option, str):
            ids.append(option)
        elif isinstance(option, dict):
            ids.append(option.get("doc_id") or option.get("id"))
    return ids


def _top_source(answer: dict) -> str | None:
    if answer.get("doc_id") and not answer.get("handoff"):
        return answer["doc_id"]
    sources = answer.get("sources") or []
    return sources[0].get("doc_id") if sources else None


def outcome(answer: dict, gold: str | None) -> str:
    """right / wrong / handoff / clarified-right / clarified-other for in-scope questions (gold set);
    answered / declined / clarified for off-topic ones (gold None)."""
    options = clarify_options(answer)
    if options is not None:
        return "clarified" if gold is None else ("clarified-right" if gold in options else "clarified-other")
    if answer.get("handoff") or not answer.get("doc_id"):
        return "declined" if gold is None else "handoff"
    if gold is None:
        return "answered"
    return "right" if answer["doc_id"] == gold else "wrong"


def score_stackfaq(answers: list[dict], gold: list[str], n_offtopic: int) -> dict:
    n_in = len(gold)
    inside = Counter(outcome(a, g) for a, g in zip(answers[:n_in], gold))
    off = Counter(outcome(a, None) for a in answers[n_in:n_in + n_offtopic])
    asks = any("clarify" in a for a in answers)  # None ("n/a") while answers carry no `clarify` key
    top_right = sum(_top_source(a) == g for a, g in zip(answers[:n_in], gold)) / n_in
    clarified = (inside["clarified-right"] + inside["clarified-other"]) / n_in if asks else None
    return {
        "n": n_in, "n_offtopic": n_offtopic,
        "right": inside["right"] / n_in, "wrong": inside["wrong"] / n_in, "handoff": inside["handoff"] / n_in,
        "clarified": clarified, "clarified_right": inside["clarified-right"] / n_in if asks else None,
        "top_source_right": top_right,  # diagnostic: the first source (or answer) is the gold article
        "offtopic_declined": off["declined"] / n_offtopic if n_offtopic else None,
        "offtopic_clarified": off["clarified"] / n_offtopic if n_offtopic and asks else None,
        "offtopic_answered": off["answered"] / n_offtopic if n_offtopic else None,
    }


def _r(d: dict) -> dict:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in d.items()}


# ----- (a) StackFAQ -------------------------------------------------------------------------------

def stackfaq_eval_set(quick: bool) -> tuple[list[str], list[str], list[str]]:
    test = hd.load_stackfaq_queries(group=1)
    offtopic = hd.load_clinc_oos(n=200)
    if quick:
        test, offtopic = test[::3], offtopic[:100]
    return [q for q, _ in test], [g for _, g in test], offtopic


def stackfaq_floor(titles: dict[str, str], texts: list[str], gold: list[str], offtopic: list[str]) -> dict:
    floor = Floor([(doc_id, None, title) for doc_id, title in titles.items()])
    return _r(score_stackfaq(floor.predict(texts + offtopic), gold, len(offtopic)))


def part_a(root: Path, args, results: dict) -> Path | None:
    faqs = hd.load_stackfaq_faqs()
    kb = root / "stackfaq-kb"
    titles = hd.write_stackfaq(kb, faqs)
    texts, gold, offtopic = stackfaq_eval_set(args.quick)
    t0 = time.perf_counter()
    floor = stackfaq_floor(titles, texts, gold, offtopic)
    floor_s = time.perf_counter() - t0
    home = root / "stackfaq-home"
    log(f"(a) StackFAQ: {len(titles)} articles; ingest (default settings) …")
    ingest = ingest_cli(kb, home, timeout=args.ingest_timeout, logs=root, name="stackfaq")
    out = {"articles": len(titles), "ingest": ingest, "floor": floor, "floor_s": round(floor_s, 1)}
    results["stackfaq"] = out
    if ingest["used"] is None:
        log("(a) no KB could be ingested; skipping the engine figures")
        return None
    answers, seconds, version = engine_answers(home, texts + offtopic)
    out["engine"] = _r(score_stackfaq(answers, gold, len(offtopic)))
    out["answer_s"] = round(seconds, 1)
    out["version"] = version
    out["answer_keys"] = sorted(answers[0]) if answers else []
    e, used = out["engine"], ingest["used"]
    ing = ingest["default"] if used == "default" else ingest["fallback"]
    log(f"(a) ingest {used}: {ing['wall_s']} s wall ({ing['build_s']} s build); {len(texts)} + {len(offtopic)} questions in {seconds:.1f} s")
    log(f"(a) engine right {pct(e['right'])} wrong {pct(e['wrong'])} hand-off {pct(e['handoff'])} clarified {pct(e['clarified'])} "
        f"(right {pct(e['clarified_right'])}), off-topic declined {pct(e['offtopic_declined'])} | floor right {pct(floor['right'])} "
        f"wrong {pct(floor['wrong'])} hand-off {pct(floor['handoff'])}, off-topic declined {pct(floor['offtopic_declined'])}")
    return home


# ----- (b) DSTC10 ---------------------------------------------------------------------------------

def part_b(root: Path, args, results: dict) -> None:
    knowledge = hd.load_dstc10_knowledge()
    articles = hd.dstc10_articles(knowledge)
    turns = hd.load_dstc10_val(knowledge=knowledge)
    if args.quick:
        keep = {t.gold_doc for t in turns if t.gold_doc} | {d for d, a in articles.items() if a["entity_id"] == "*"}
        others = sorted(set(articles) - keep)
        keep |= set(random.Random(0).sample(others, min(100, len(others))))
        articles = {d: a for d, a in articles.items() if d in keep}
    kb = root / "dstc10-kb"
    hd.write_dstc10(kb, articles)
    n_sections = sum(len(a["sections"]) for a in articles.values())
    target = [t for t in turns if t.target]
    other = [t for t in turns if not t.target]
    out = {"articles": len(articles), "sections": n_sections, "target_turns": len(target), "other_turns": len(other)}
    results["dstc10"] = out

    t0 = time.perf_counter()
    candidates = [(d, None, a["title"]) for d, a in articles.items()]
    candidates += [(d, h, f"{a['title']} — {h}") for d, a in articles.items() for h, _ in a["sections"]]
    floor = Floor(candidates)
    queries = [t.query for t in target + other]
    with_context = [" ".join(t.context[-2:] + [t.query]) for t in target + other]
    out["floor"] = score_dstc10(floor.predict(queries), target, other)
    out["floor_context"] = score_dstc10(floor.predict(with_context), target, other)
    out["floor_s"] = round(time.perf_counter() - t0, 1)
    f, fc = out["floor"], out["floor_context"]
    log(f"(b) floor (query only): right article {pct(f['right_article'])}, right snippet {pct(f['right_snippet'])}, "
        f"other turns declined {pct(f['other_declined'])}; with the 2 previous turns: {pct(fc['right_article'])} / "
        f"{pct(fc['right_snippet'])} / {pct(fc['other_declined'])} ({out['floor_s']} s)")

    home = root / "dstc10-home"
    log(f"(b) DSTC10: {len(articles)} articles, {n_sections} sections; ingest (default settings, bound {args.ingest_timeout:.0f} s) …")
    ingest = ingest_cli(kb, home, timeout=args.ingest_timeout, logs=root, name="dstc10")
    out["ingest"] = ingest
    if ingest["used"] is None:
        log("(b) no KB could be ingested in the time bound; skipping the engine figures")
        return
    answers, seconds, version = engine_answers(home, queries, [t.context for t in target + other], batch=64)
    out["engine"] = score_dstc10(answers, target, other)
    out["answer_s"], out["version"] = round(seconds, 1), version
    e = out["engine"]
    ing = ingest["default"] if ingest["used"] == "default" else ingest["fallback"]
    log(f"(b) ingest {ingest['used']}: {ing['wall_s']} s wall ({ing['build_s']} s build); answers in {seconds:.1f} s")
    log(f"(b) engine right article {pct(e['right_article'])}, right snippet {pct(e['right_snippet'])}, hand-off "
        f"{pct(e['handoff'])}, clarified {pct(e['clarified'])}; other turns declined {pct(e['other_declined'])}")


def _heading(text) -> str:
    return " ".join(str(text or "").split()).casefold()


def score_dstc10(answers: list[dict], target: list, other: list) -> dict:
    n = len(target)
    has_section = any("section" in a for a in answers)  # None ("n/a") until answers carry `section`
    asks = any("clarify" in a for a in answers)
    article = snippet = handoff = clarified = clarified_right = 0
    for a, t in zip(answers[:n], target):
        kind = outcome(a, t.gold_doc)
        if kind.startswith("clarified"):
            clarified += 1
            clarified_right += kind == "clarified-right"
            continue
        if kind == "handoff":
            handoff += 1
        if kind == "right":
            article += 1
            section = a.get("section") or {}
            snippet += bool(section) and _heading(section.get("heading")) == _heading(t.gold_heading)
    rest = Counter(outcome(a, None) for a in answers[n:])
    top_right = sum(_top_source(a) == t.gold_doc for a, t in zip(answers[:n], target)) / n
    return _r({"right_article": article / n, "top_source_right": top_right, "right_snippet": snippet / n if has_section else None,
               "handoff": handoff / n, "clarified": clarified / n if asks else None,
               "clarified_right": clarified_right / n if asks else None,
               "other_declined": rest["declined"] / len(other),
               "other_clarified": rest["clarified"] / len(other) if asks else None})


# ----- (c) the learning loop ----------------------------------------------------------------------

def simulate_votes(home: Path, traffic: list[tuple[str, str]], doc_ids: list[str], *, adversarial: bool, seed: int) -> tuple[Path, dict]:
    """Ask each traffic question once (engine + store, as `csbot ask` and Slack do) and write one vote per
    answer to votes.jsonl (imported afterwards with `csbot feedback --file`)."""
    from core.settings import Settings
    from serving.engine import Engine
    from store import Store

    rng = random.Random(seed)
    settings = Settings.load(env={}, home=home)
    engine = Engine(settings)
    users = [f"agent{i:02d}" for i in range(USERS)]
    adversary = users[-1]
    counts: Counter = Counter()
    votes = []
    with Store.from_settings(settings) as store:
        for start in range(0, len(traffic), 128):
            batch = traffic[start:start + 128]
            for (text, gold), answer in zip(batch, engine.answer_batch([t for t, _ in batch])):
                user = adversary if adversarial and rng.random() < ADVERSARY_SHARE else rng.choice(users[:-1] if adversarial else users)
                store.record_answer(answer, user=user, origin="cli")
                kind = outcome(answer.to_json(), gold)
                right = kind == "right"
                counts["right" if right else ("wrong" if kind == "wrong" else "not answered")] += 1
                vote: dict = {"answer_id": answer.answer_id, "user": user}
                if user == adversary and adversarial:
                    counts["adversarial votes"] += 1
                    if kind == "wrong":
                        vote["vote"] = "up"
                    else:
                        vote.update(vote="down", doc_id=rng.choice([d for d in doc_ids if d != gold]))
                elif right:
                    vote["vote"] = "up"
                elif rng.random() < CORRECTION_P:
                    vote.update(vote="down", doc_id=gold)
                    counts["corrections"] += 1
                else:
                    vote["vote"] = "down"
                counts[vote["vote"]] += 1
                votes.append(vote)
    path = home.parent / f"{home.name}-votes.jsonl"
    path.write_text("".join(json.dumps(v) + "\n" for v in votes), encoding="utf-8")
    return path, dict(counts)


def part_c(root: Path, base: Path, args, results: dict) -> None:
    traffic = hd.load_stackfaq_queries(group=0)
    doc_ids = sorted({g for _, g in traffic})
    texts, gold, offtopic = stackfaq_eval_set(args.quick)
    before = results["stackfaq"]["engine"]
    scenarios = [("clean", False, 1)] + ([] if args.skip_poisoned or args.quick else [("poisoned", True, 2)])
    loop = results.setdefault("loop", {})
    for name, adversarial, seed in scenarios:
        home = root / f"loop-{name}"
        shutil.copytree(base, home)
        t0 = time.perf_counter()
        votes_path, counts = simulate_votes(home, traffic, doc_ids, adversarial=adversarial, seed=seed)
        ask_s = time.perf_counter() - t0
        imported = run_cli(csbot_cmd("feedback", "--file", str(votes_path), "--json"), home, timeout=300,
                           log_path=root / f"loop-{name}-feedback.log")
        log(f"(c) {name}: {len(traffic)} questions asked in {ask_s:.0f} s; votes {counts}; import {imported['json']} "
            f"(exit {imported['exit_code']}); retrain (bound {args.retrain_timeout:.0f} s) …")
        retrain = run_cli([sys.executable, str(REPO / "training" / "retrain.py"), "--json", "--quiet"], home,
                          timeout=args.retrain_timeout, log_path=root / f"loop-{name}-retrain.log")
        report = retrain["json"] or {}
        answers, _, served = engine_answers(home, texts + offtopic)
        after = _r(score_stackfaq(answers, gold, len(offtopic)))
        row = {"votes": counts, "import": imported["json"], "import_exit": imported["exit_code"],
               "retrain_exit": retrain["exit_code"], "retrain_timed_out": retrain["timed_out"],
               "retrain_s": retrain["seconds"], "retrain_cpu_s": retrain.get("cpu_s"), "status": report.get("status"), "timings": report.get("timings"),
               "counts": report.get("counts"), "decision": report.get("decision"),
               "message": (report.get("message") or retrain["stderr_tail"])[:400],
               "promoted": report.get("status") == "promoted", "served_after": served,
               "heldout": {k: {m: v for m, v in (report.get(f"{k}_metrics") or {}).items()
                               if m in ("model_version", "n", "accuracy", "in_scope_accuracy", "oos_recall")}
                           for k in ("champion", "candidate")},
               "before": {k: before[k] for k in ("right", "wrong", "handoff", "offtopic_declined")},
               "after": {k: after[k] for k in ("right", "wrong", "handoff", "offtopic_declined")}}
        row["right_delta_points"] = round(100 * (after["right"] - before["right"]), 2)
        row["wrong_delta_points"] = round(100 * (after["wrong"] - before["wrong"]), 2)
        loop[name] = row
        log(f"(c) {name}: retrain exit {retrain['exit_code']} ({row['status']}) in {retrain['seconds']:.0f} s: {row['message'][:200]}")
        log(f"(c) {name}: group 1 right {pct(before['right'])} → {pct(after['right'])} ({row['right_delta_points']:+.1f}), "
            f"wrong {pct(before['wrong'])} → {pct(after['wrong'])}, off-topic declined {pct(before['offtopic_declined'])} → "
            f"{pct(after['offtopic_declined'])}")


# ----- summary ------------------------------------------------------------------------------------

def _half(cpu) -> str:
    return "?" if cpu is None else f"{cpu / 2:.0f}"


def summary(results: dict) -> list[tuple[str, str, str, str, str]]:
    rows = []
    s = results.get("stackfaq")
    if s:
        e, f = s.get("engine") or {}, s["floor"]
        ing = s["ingest"]
        used = ing["default"] if ing.get("used") == "default" else ing.get("fallback") or ing["default"]
        ok = lambda c: "n/a" if not e else ("yes" if c else "NO")  # noqa: E731
        rows += [
            ("(a) StackFAQ g1 answered right", pct(e.get("right")), pct(f["right"]), TARGETS["stackfaq_right"], ok(e and e["right"] >= 0.95)),
            ("(a) StackFAQ g1 answered wrong", pct(e.get("wrong")), pct(f["wrong"]), TARGETS["stackfaq_wrong"], ok(e and e["wrong"] <= 0.02)),
            ("(a) StackFAQ g1 hand-off", pct(e.get("handoff")), pct(f["handoff"]), "", ""),
            ("(a) diagnostic: g1 first source = gold", pct(e.get("top_source_right")), pct(f["top_source_right"]), "", ""),
            ("(a) StackFAQ g1 clarified (right)", f"{pct(e.get('clarified'))} ({pct(e.get('clarified_right'))})", "—", "", ""),
            ("(a) off-topic declined", pct(e.get("offtopic_declined")), pct(f["offtopic_declined"]), TARGETS["stackfaq_offtopic_declined"],
             ok(e and e["offtopic_declined"] >= 0.97)),
            ("(a) StackFAQ ingest, default settings", "ok" if ing["default_ok"] else "FAILED", "", "", "yes" if ing["default_ok"] else "NO"),
            (f"(a) StackFAQ ingest wall time ({ing.get('used')})", f"{used['wall_s']} s (build {used['build_s']} s; CPU-s/2 {_half(used.get('cpu_s'))} s)", "",
             TARGETS["stackfaq_ingest_s"], "yes" if ing["default_ok"] and used["wall_s"] < 60 else "NO"),
        ]
    d = results.get("dstc10")
    if d:
        e, f, fc = d.get("engine") or {}, d["floor"], d["floor_context"]
        best = max(f["right_snippet"], fc["right_snippet"])
        snippet = e.get("right_snippet")
        rows += [
            ("(b) DSTC10 104 turns: right article", pct(e.get("right_article")),
             f"{pct(f['right_article'])} / ctx {pct(fc['right_article'])}", "", ""),
            ("(b) DSTC10 104 turns: right snippet", pct(snippet), f"{pct(f['right_snippet'])} / ctx {pct(fc['right_snippet'])}",
             TARGETS["dstc10_right_snippet"], "n/a" if snippet is None else ("yes" if snippet >= best + 0.05 else "NO")),
            ("(b) diagnostic: first source = gold article", pct(e.get("top_source_right")),
             f"{pct(f['top_source_right'])} / ctx {pct(fc['top_source_right'])}", "", ""),
            ("(b) DSTC10 104 turns: hand-off / clarified", f"{pct(e.get('handoff'))} / {pct(e.get('clarified'))}", "", "", ""),
            ("(b) DSTC10 159 other turns declined", pct(e.get("other_declined")),
             f"{pct(f['other_declined'])} / ctx {pct(fc['other_declined'])}", "report", ""),
        ]
        ing = d["ingest"]
        used = ing["default"] if ing.get("used") == "default" else ing.get("fallback") or ing["default"]
        rows.append((f"(b) DSTC10 ingest ({d['articles']} articles, {d['sections']} sections; {ing.get('used')})",
                     f"{used['wall_s']} s (build {used['build_s']} s; CPU-s/2 {_half(used.get('cpu_s'))} s)", "", "bounded", "" if ing.get("used") else "NO"))
    for name, r in (results.get("loop") or {}).items():
        b, a = r["before"], r["after"]
        promoted = (f"{'promoted' if r['promoted'] else r['status']} (exit {r['retrain_exit']}, {r['retrain_s']:.0f} s; "
                    f"CPU-s/2 {_half(r.get('retrain_cpu_s'))} s)")
        held = r["heldout"]
        gate = (f"n = {held['champion'].get('n')}: champion {held['champion'].get('accuracy')} vs candidate "
                f"{held['candidate'].get('accuracy')}") if held.get("champion") else "—"
        if name == "clean":
            rows += [
                ("(c) clean loop: retrain", promoted, "", "", ""),
                ("(c) clean loop: gate held-out accuracy", gate, "", "", ""),
                ("(c) clean loop: g1 right before → after", f"{pct(b['right'])} → {pct(a['right'])} ({r['right_delta_points']:+.1f})",
                 pct(results["stackfaq"]["floor"]["right"]), TARGETS["loop_right_delta"], "yes" if r["right_delta_points"] >= 3 else "NO"),
                ("(c) clean loop: g1 wrong before → after", f"{pct(b['wrong'])} → {pct(a['wrong'])}",
                 pct(results["stackfaq"]["floor"]["wrong"]), TARGETS["loop_wrong"], "yes" if a["wrong"] <= b["wrong"] else "NO"),
                ("(c) clean loop: off-topic declined", f"{pct(b['offtopic_declined'])} → {pct(a['offtopic_declined'])}", "", "", ""),
            ]
        else:
            never_lower = not r["promoted"] or a["right"] >= b["right"]
            rows += [
                ("(c) poisoned 30 %: retrain", promoted, "", "", ""),
                ("(c) poisoned 30 %: gate held-out accuracy", gate, "", "", ""),
                ("(c) poisoned 30 %: g1 right before → after", f"{pct(b['right'])} → {pct(a['right'])} ({r['right_delta_points']:+.1f})",
                 "", TARGETS["poisoned"], "yes" if never_lower else "NO"),
            ]
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (see the module doc)")
    parser.add_argument("--only", default=None, help="parts to run: a (StackFAQ), b (DSTC10), c (learning loop, runs a "
                        "first); default a,b,c, with --quick a,b")
    parser.add_argument("--ingest-timeout", type=float, default=900, help="seconds one `csbot ingest` may take")
    parser.add_argument("--retrain-timeout", type=float, default=1200, help="seconds one retrain may take")
    parser.add_argument("--skip-poisoned", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (KBs, homes, logs)")
    parser.add_argument("--json", action="store_true", help="also print one JSON line of all figures")
    args = parser.parse_args(argv)
    parts = set((args.only or ("a,b" if args.quick else "a,b,c")).split(","))
    data = hd.data_dir()
    for folder in ("stackfaq", "clinc150", "dstc10_knowledge_faq"):
        if not (data / folder).is_dir():
            print(f"{folder} not found under {data} (set CSBOT_DATA_DIR)", file=sys.stderr)
            return 2
    root = Path(tempfile.mkdtemp(prefix="csbot-bench-helpcentre-"))
    results: dict = {"quick": args.quick, "commit": _commit(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    timings = results.setdefault("timings_s", {})
    try:
        base = None
        if parts & {"a", "c"}:
            t0 = time.perf_counter()
            base = part_a(root, args, results)
            timings["a"] = round(time.perf_counter() - t0, 1)
        if "b" in parts:
            t0 = time.perf_counter()
            part_b(root, args, results)
            timings["b"] = round(time.perf_counter() - t0, 1)
        if "c" in parts and base is not None:
            t0 = time.perf_counter()
            part_c(root, base, args, results)
            timings["c"] = round(time.perf_counter() - t0, 1)
    finally:
        if args.keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    print()
    print(f"commit {results['commit']}; {'quick run' if args.quick else 'full run'}; part timings {timings}")
    print("| figure | engine | floor (bare MiniLM, cos ≥ 0.5) | target | met |")
    print("|---|---|---|---|---|")
    try:
        for row in summary(results):
            print("| " + " | ".join(row) + " |")
    except Exception as exc:  # noqa: BLE001 - the figures above and the JSON line still stand
        print(f"(summary table failed: {type(exc).__name__}: {exc})")
    if args.json:
        print(json.dumps(results, default=str))
    return 0


def _commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%h %s"], capture_output=True,
                              text=True, timeout=10).stdout.strip()[:80]
    except (OSError, subprocess.SubprocessError):
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
