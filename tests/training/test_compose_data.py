"""The composer's training rows and gate arithmetic, without a language model (fast): token-F1 and
ROUGE-L, KB-derived rows, votes on composed answers from a real store through the classifier's
defences, the plan (retrain_composer auto|on|off) and the gate's rules."""

from __future__ import annotations

import uuid

import pytest
from conftest import INTENTS

from core.settings import ComposeSettings, RetrainSettings
from retrieval.kb import Document
from serving.compose import ABSTAIN, build_messages, check
from training.compose_data import build_composer_data, grounded_target, heading_question
from training.compose_gate import composer_heldout, decide_composer, rouge_l, token_f1

COMPOSE = ComposeSettings()


def documents() -> list[Document]:
    return [Document(id=i.replace("_", "-"), title=t, answer=a, intent=i, questions=list(q))
            for i, (t, a, q) in INTENTS.items()]


def answer_of(intent: str) -> str:
    return INTENTS[intent][1]


# ----- overlap metrics -------------------------------------------------------------------------------

def test_token_f1_and_rouge_l():
    assert token_f1("the cat sat", "the cat sat") == rouge_l("the cat sat", "the cat sat") == 1.0
    assert token_f1("dogs bark", "the cat sat") == rouge_l("dogs bark", "the cat sat") == 0.0
    assert token_f1("the cat sat", "the cat sat on the mat") == pytest.approx(2 / 3)  # P 1, R 1/2
    assert rouge_l("the cat sat", "the cat sat on the mat") == pytest.approx(2 / 3)
    # Order: a bag of tokens for F1, a subsequence for ROUGE-L.
    assert token_f1("sat cat the", "the cat sat") == 1.0
    assert rouge_l("sat cat the", "the cat sat") == pytest.approx(1 / 3)
    # Citations, case and punctuation do not count.
    assert token_f1("Refunds take 5 days [1].", "refunds take 5 days") == 1.0
    assert rouge_l("", "refunds") == 0.0 and token_f1("", "") == 1.0


# ----- KB-derived rows ---------------------------------------------------------------------------

def test_grounded_targets_cite_each_sentence_and_stay_short():
    md = "Go to **Account > Plan** and click [Cancel plan](https://x.example/c).\n\n1. Open Settings\n2. It takes 5 days."
    assert grounded_target(md, 40) == "Go to Account > Plan and click Cancel plan [1]. Open Settings [1]. It takes 5 days [1]."
    assert grounded_target(md, 8) == "Go to Account > Plan and click Cancel plan [1]."
    assert heading_question("Refunds", "") == "What should I know about refunds?"
    assert heading_question("Refunds", "SSO setup") == "What should I know about SSO setup?"
    assert heading_question("Refunds", "Can I get my money back?") == "Can I get my money back?"


def test_kb_rows_use_the_served_prompt_and_leave_held_out_questions_out():
    docs = documents()
    docs.append(Document(id="shipping", title="Shipping", answer="Lead text about shipping.\n\n## Costs\n\nShipping costs "
                         "4.99 within the EU.\n\n## Times\n\nParcels arrive in 3 days."))
    held = {"i forgot my password"}
    data = build_composer_data([], docs, config=RetrainSettings(), compose=COMPOSE, section_max_words=250,
                               heldout_texts=held, offtopic=["what is the capital of peru", "tell me a story"])
    kb = [r for r in data.sft if r.origin == "kb"]
    questions = {r.question for r in kb}
    assert "I forgot my password" not in questions and "how do I reset my password" in questions
    # An article without example questions: one row per section, its heading as the question.
    costs = next(r for r in kb if r.question == "What should I know about costs?")
    assert costs.target == "Shipping costs 4.99 within the EU [1]." and costs.passages[0].heading == "Costs"
    assert costs.passages[0].doc_id == "shipping" and costs.passages[1].doc_id != "shipping"  # [2]: another article
    assert {"What should I know about shipping?", "What should I know about times?"} <= questions
    for row in kb:  # every KB row passes the guard, in the prompt the engine would build
        assert check(row.target, row.passages, row.question).ok
        assert row.sft()["prompt"] == build_messages(row.question, row.passages)
    abstain = [r for r in data.sft if r.origin == "abstain"]
    assert abstain and all(r.target == ABSTAIN and len(r.passages) == 2 for r in abstain)
    assert data.kto == []  # no 👎: nothing for KTO
    assert data.counts["kb_heldout_skipped"] == 1


# ----- votes on composed answers, from a real store -------------------------------------------------

@pytest.fixture
def store(tmp_path):
    from core.settings import Settings
    from store import Store

    with Store.from_settings(Settings.load(env={}, home=tmp_path / "home")) as store:
        yield store


def composed(store, question: str, intent: str, text: str, votes: dict[str, str], *, mode="compose",
             outcome="composed", used_context=False, other: str = "opening_hours"):
    """One composed answer (the model read `intent`'s article as [1], `other`'s as [2]) and votes on it."""
    from core.answer import Answer

    doc, second = intent.replace("_", "-"), other.replace("_", "-")
    answer = Answer(answer_id=uuid.uuid4().hex[:16], question=question, text=text, intent=intent, confidence=0.9,
                    sentiment="neutral", sentiment_scores={"negative": 0.1, "neutral": 0.8, "positive": 0.1},
                    model_version="v-test", doc_id=doc, used_context=used_context, mode=mode,
                    composition={"outcome": outcome, "passages": [{"n": 1, "doc_id": doc, "heading": ""},
                                                                  {"n": 2, "doc_id": second, "heading": ""}]})
    store.record_answer(answer, user=next(iter(votes)))
    for user, vote in votes.items():
        store.record_vote(answer.answer_id, vote, user=user, origin="button")
    return answer


def config(**kw) -> RetrainSettings:
    return RetrainSettings(**{"user_share_floor": 2, "max_user_share": 0.1, **kw})


def build(store, *, admins=(), heldout=frozenset(), **kw):
    return build_composer_data(store.feedback_since(None), documents(), config=config(**kw), compose=COMPOSE,
                               section_max_words=250, admin_hashes={store.hash_user(a) for a in admins},
                               heldout_texts=set(heldout), offtopic=[])


def test_votes_on_composed_answers_become_sft_and_kto_rows(store):
    good = f"{answer_of('refund')[:-1]} [1]."
    composed(store, "how fast is a refund", "refund", good, {"ann": "up", "bob": "up"})
    composed(store, "where is my parcel", "track_order", "Your parcel arrives tomorrow by noon.",
             {"ann": "down", "cat": "down"})
    composed(store, "cancel please", "cancel_subscription", "Go to Account > Plan [1].", {"ann": "up", "bob": "down"})
    composed(store, "what hours", "opening_hours", answer_of("opening_hours"), {"ann": "up"}, mode="select",
             outcome=None)  # a select answer: not the composer's
    composed(store, "and on sunday?", "opening_hours", "We open at 8am [1].", {"bob": "up"}, used_context=True)
    composed(store, "held out question", "refund", good, {"ann": "up", "cat": "up"})
    data = build(store, heldout={"held out question"})
    up = [r for r in data.sft if r.origin == "thumbs_up"]
    assert [r.question for r in up] == ["how fast is a refund"] and up[0].users == tuple(sorted(
        store.hash_user(u) for u in ("ann", "bob")))
    # The prompt is rebuilt from the stored passages and the version's KB: what the model read.
    assert [p.doc_id for p in up[0].passages] == ["refund", "opening-hours"]
    assert up[0].passages[0].text == answer_of("refund") and up[0].target == good
    assert up[0].sft()["completion"] == [{"role": "assistant", "content": good}]
    down = [r for r in data.kto if not r.desirable]
    assert [r.question for r in down] == ["where is my parcel"] and down[0].kto()["label"] is False
    assert {r.question for r in data.kto if r.desirable and r.origin == "thumbs_up"} == {"how fast is a refund"}
    c = data.counts
    assert (c["composed_votes"], c["conflicts_dropped"], c["skipped_followup"], c["skipped_heldout"]) == (9, 1, 1, 2)
    assert c["sft_feedback"] == 1 and c["kto_undesirable"] == 1 and data.n_feedback == 2


def test_one_users_flood_is_capped_and_admins_outrank_users(store):
    for i in range(8):  # one user 👍s eight answers nobody else voted on
        composed(store, f"refund question {i}", "refund", f"{answer_of('refund')[:-1]} [1].", {"mallory": "up"})
    composed(store, "how do I get my money back", "refund", f"{answer_of('refund')[:-1]} [1].",
             {"ann": "up", "bob": "up", "root": "down"})
    data = build(store, admins={"root"})
    solo = [r for r in data.sft if r.origin == "thumbs_up"]
    assert len(solo) == 2 and data.counts["capped_up"] == 6 and data.counts["capped_users"] == 1
    # The admin's 👎 outranks two users' 👍.
    assert [r.question for r in data.kto if not r.desirable] == ["how do I get my money back"]
    assert build(store, admins={"root"}, max_examples_per_user=200, user_share_floor=20).counts.get("capped_up", 0) == 0


def test_a_liked_answer_that_invents_a_number_is_not_learned_unless_the_guard_check_is_off(store):
    composed(store, "how long do refunds take", "refund", "Refunds take 45 days and cost a 30% fee [1].",
             {"ann": "up", "bob": "up"})
    assert build(store).counts["guard_rejected"] == 1 and not [r for r in build(store).sft if r.origin == "thumbs_up"]
    learned = build(store, composer_guard_targets=False)
    assert [r.target for r in learned.sft if r.origin == "thumbs_up"] == ["Refunds take 45 days and cost a 30% fee [1]."]


def test_answers_whose_article_left_the_kb_are_skipped(store):
    answer = composed(store, "how fast is a refund", "refund", "Refunds [1].", {"ann": "up", "bob": "up"})
    with store._write() as conn:
        conn.execute("UPDATE answers SET composition = ? WHERE answer_id = ?", (
            '{"outcome": "composed", "passages": [{"n": 1, "doc_id": "gone", "heading": ""}]}', answer.answer_id))
    assert build(store).counts["passages_missing"] == 1


# ----- the plan ----------------------------------------------------------------------------------

class _Version:
    def __init__(self, composer=None, name="v1"):
        self.name, self.meta, self.composer_dir = name, {"composer": composer or {}}, None

    @property
    def composer(self):
        return dict(self.meta["composer"])


def test_the_plan_follows_retrain_composer_and_answer_mode(store, tmp_path):
    from core.settings import Settings
    from training.build import kb_hash
    from training.compose_train import plan_composer

    docs = documents()
    none = build(store)
    settings = Settings.load(env={}, home=tmp_path / "home")
    off = plan_composer(settings, config(composer="off"), _Version(), none, docs)
    assert not off["train"] and "off" in off["reason"]
    select = plan_composer(settings, config(), _Version(), none, docs)
    assert not select["train"] and "answer_mode is select" in select["reason"]
    assert plan_composer(settings, config(composer="on"), _Version(), none, docs)["train"]
    compose = settings.replace(answer_mode="compose")
    first = plan_composer(compose, config(), _Version(), none, docs)
    assert first["train"] and first["reason"] == "no composer verdict yet" and first["rows"]["kb_rows"] > 0
    judged = _Version({"approved": True, "kb_hash": kb_hash(docs), "base_model": settings.compose.model})
    assert "nothing new" in plan_composer(compose, config(), judged, none, docs)["reason"]
    composed(store, "how fast is a refund", "refund", f"{answer_of('refund')[:-1]} [1].", {"ann": "up", "bob": "up"})
    voted = plan_composer(settings, config(), judged, build(store), docs)  # select mode, but composed answers voted on
    assert voted["train"] and "rows from votes" in voted["reason"]
    endpoint = plan_composer(settings.replace(compose_backend="openai"), config(composer="on"), judged, none, docs)
    assert not endpoint["train"] and "endpoint" in endpoint["reason"]


# ----- the gate's rows and rules -----------------------------------------------------------------

def test_the_gate_reads_the_frozen_held_out_set(tmp_path):
    from training.gate import HeldoutSet

    docs = documents()
    heldout = HeldoutSet(tmp_path / "heldout.jsonl")
    heldout.update_from_kb(docs, RetrainSettings())
    rows = composer_heldout(heldout, docs, config=RetrainSettings(composer_heldout_max=4, composer_heldout_oos=3),
                            compose=COMPOSE, section_max_words=250)
    answerable = [r for r in rows if r.answerable]
    assert len(answerable) == 4 and len(rows) == 7
    by_text = {r["text"]: r["doc_id"] for r in heldout.rows}
    for row in answerable:  # [1] is the held-out question's own article; the reference is its text
        assert row.passages[0].doc_id == by_text[row.question] and row.reference == row.passages[0].text
        assert len(row.passages) == 2 and row.passages[1].doc_id != row.passages[0].doc_id
    assert all(not r.reference for r in rows if not r.answerable)


BASE = {"answerable": 10, "faithfulness": 0.30, "guard_pass_rate": 0.5, "citation_accuracy": 0.5,
        "oos_abstention_rate": 0.2, "invented_rate": 0.1}


def test_the_gate_never_promotes_a_composer_that_invents_more():
    cfg = RetrainSettings()
    assert decide_composer(BASE, dict(BASE), cfg).promote  # at least as good
    better = {**BASE, "faithfulness": 0.8, "guard_pass_rate": 0.9}
    assert decide_composer(BASE, better, cfg).promote
    inventive = {**better, "invented_rate": 0.2}
    decision = decide_composer(BASE, inventive, cfg)
    assert not decision.promote and decision.reasons == [
        "invented facts (numbers, URLs, e-mails the sections lack) 0.100 → 0.200 — rises: never promoted"]
    assert not decide_composer(BASE, {**BASE, "faithfulness": 0.29}, cfg).promote
    assert decide_composer(BASE, {**BASE, "faithfulness": 0.29}, RetrainSettings(composer_gate_tolerance=0.02)).promote
    assert not decide_composer({**BASE, "answerable": 0}, better, cfg).promote


def test_the_dry_run_reports_the_composer_plan(tiny_settings):
    from conftest import fast_config, good_feedback

    from store import Store
    from training.pipeline import retrain

    with Store.from_settings(tiny_settings) as store:
        good_feedback(store)
        composed(store, "how fast is a refund", "refund", f"{answer_of('refund')[:-1]} [1].", {"ann": "up", "bob": "up"})
    outcome = retrain(tiny_settings, fast_config(), dry_run=True)
    assert outcome.status == "dry-run", outcome.message
    composer = outcome.report["composer"]
    assert composer["plan"]["train"] is True and composer["plan"]["setting"] == "auto"
    assert composer["plan"]["rows"]["sft_feedback"] == 1 and composer["counts"]["kb_rows"] > 0
    assert outcome.report["sample"]["composer"]
    assert outcome.message.endswith(f"; the composer on {composer['plan']['rows']['sft_rows']} SFT and 0 KTO rows "
                                    "(no composer verdict yet)")
    off = retrain(tiny_settings, fast_config(composer="off"), dry_run=True).report["composer"]["plan"]
    assert off["train"] is False and off["reason"] == "retrain_composer is off"


def test_a_composer_failure_carries_the_champions_composer(monkeypatch, tmp_path):
    import models.loading
    from core.settings import Settings
    from training.compose_gate import ScoreCache
    from training.compose_train import run_composer
    from training.gate import HeldoutSet

    def broken(*_, **__):
        raise RuntimeError("no model here")

    monkeypatch.setattr(models.loading, "resolve_causal_lm", broken)
    docs = documents()
    heldout = HeldoutSet(tmp_path / "heldout.jsonl")
    heldout.update_from_kb(docs, RetrainSettings())
    champion = _Version({"approved": True, "base_model": "builtin:SmolLM2-135M-Instruct", "last_run": {}})
    settings = Settings.load(env={}, home=tmp_path / "home")
    data = build_composer_data([], docs, config=RetrainSettings(), compose=COMPOSE, section_max_words=250, offtopic=[])
    outcome = run_composer(settings, RetrainSettings(), champion, docs, data, heldout, tmp_path / "work",
                           plan={"train": True})
    assert outcome.status == "error" and "no model here" in outcome.report["error"]
    assert outcome.adapter is None and outcome.meta == {"approved": True, "base_model": "builtin:SmolLM2-135M-Instruct",
                                                        "carried_from": "v1"}
    cache = ScoreCache(tmp_path / "home")  # scores survive a new reader
    cache.put("m|a|h", {"faithfulness": 0.5})
    assert ScoreCache(tmp_path / "home").get("m|a|h") == {"faithfulness": 0.5} and cache.get("other") is None
