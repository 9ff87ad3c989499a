"""The composer's nightly stage with the real embedded model (SmolLM2-135M-Instruct, converted once per
session into a trainable copy): the retrain fine-tunes it from stored 👍/👎 on composed answers (SFT
then KTO, LoRA, a few steps on short rows), the gate's verdict and metrics land in the version and
the report, the adapter is written through the version; a poisoned round (👍 on answers that invent
numbers) is not approved; a run that does not retrain the composer carries the parent's adapter."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest
from conftest import INTENTS, fast_config, good_feedback

pytestmark = pytest.mark.slow

MODEL = "SmolLM2-135M-Instruct"
# A few steps on short rows, one thread (steadier on a shared 2-core machine), a high LoRA rate so
# that a few steps show.
COMPOSER_FAST = dict(composer_max_steps=6, composer_batch_size=2, composer_kb_max=8, composer_abstain_share=0.15,
                     composer_heldout_max=4, composer_heldout_oos=2, composer_max_new_tokens=32, composer_threads=1,
                     composer_max_length=384, composer_learning_rate=2e-3, composer_kto_learning_rate=1e-4)


@pytest.fixture
def base_models(smollm2_base) -> Path:
    return smollm2_base.parent


def link_base_model(home: Path, base_models: Path) -> None:
    (home / "base_models").mkdir(exist_ok=True)
    (home / "base_models" / MODEL).symlink_to(base_models / MODEL)


def composed(store, question: str, intent: str, text: str, users: list[str], vote: str = "up"):
    """A composed answer (the model read `intent`'s article as [1], the opening hours as [2]) and votes on it."""
    from core.answer import Answer

    doc = intent.replace("_", "-")
    answer = Answer(answer_id=uuid.uuid4().hex[:16], question=question, text=text, intent=intent, confidence=0.9,
                    sentiment="neutral", sentiment_scores={"negative": 0.1, "neutral": 0.8, "positive": 0.1},
                    model_version="v-test", doc_id=doc, mode="compose",
                    composition={"outcome": "composed", "passages": [{"n": 1, "doc_id": doc, "heading": ""},
                                                                     {"n": 2, "doc_id": "opening-hours", "heading": ""}]})
    store.record_answer(answer, user=users[0])
    for user in users:
        store.record_vote(answer.answer_id, vote, user=user, origin="button")


def trained_summary(version) -> dict:
    return json.loads((version.composer_dir / "training_summary.json").read_text())


def cited(intent: str) -> str:
    return INTENTS[intent][1].rstrip(".") + " [1]."


def test_the_retrain_trains_the_composer_from_composed_thumbs(tiny_settings, base_models):
    from models.composer import pick_backend
    from serving.engine import Engine
    from serving.versions import VersionStore
    from store import Store
    from training.pipeline import retrain
    from training.run_state import EXIT_PROMOTED

    link_base_model(tiny_settings.home, base_models)
    with Store.from_settings(tiny_settings) as store:
        good_feedback(store)
        for intent, question in (("refund", "when will my refund come"), ("track_order", "is my parcel moving"),
                                 ("cancel_subscription", "stop my plan please")):
            composed(store, question, intent, cited(intent), ["ann", "bob"])  # two users agree: 👍
        composed(store, "refund timing", "refund", "Refunds take 45 days and a 30% fee [1].", ["cat", "dan"], "down")
        composed(store, "delivery status", "track_order", "Call us at the depot for a tracking code.", ["cat", "dan"],
                 "down")
        for i, intent in enumerate(["refund", "track_order", "change_address", "opening_hours"] * 2):
            composed(store, f"question {i} about {intent}", intent, cited(intent), ["flooder"])  # one user's flood
    # Answerable held-out rows only: six steps teach this model to copy the section and cite it (so on
    # every seed and kernel set tried), not to abstain, so what it writes for an off-topic question is noise that
    # varies with the CPU's kernels, and one invented number in it keeps the composer out (a CI machine
    # drew one). The off-topic rows' scoring is pinned on scripted drafts in test_compose_gate.py.
    outcome = retrain(tiny_settings, fast_config(user_share_floor=3, **{**COMPOSER_FAST, "composer_heldout_oos": 0}))
    assert outcome.exit_code == EXIT_PROMOTED, outcome.message
    composer = outcome.report["composer"]
    assert composer["plan"]["train"] and composer["plan"]["reason"] == "no composer verdict yet"
    counts = composer["counts"]
    # The flood rests on one user's word: 3 of its answers are kept (max(user_share_floor, 25 % of them all));
    # of its 8, those the retrain froze into the held-out set are not learned at all.
    flood = counts["composed_answers"] - 3 - 2
    assert flood <= 8 and counts["capped_up"] == flood - 3 > 0
    assert counts["sft_feedback"] == 6 and counts["kto_undesirable"] == 2
    verdict = composer["verdict"]
    trained = verdict["trained"]
    assert trained["sft"]["steps"] == 6 and trained["kto"]["steps"] >= 1 and trained["device"] == "cpu"
    for metrics in (verdict["metrics"], verdict["current_metrics"]):
        assert metrics["answerable"] == 4 and metrics["offtopic"] == 0 and metrics["oos_abstention_rate"] is None
        assert all(0.0 <= metrics[k] <= 1.0 for k in ("faithfulness", "token_f1", "rouge_l", "guard_pass_rate",
                                                      "citation_accuracy", "invented_rate"))
    assert {c["rule"] for c in verdict["checks"]} >= {"faithfulness", "guard_pass_rate", "invented_rate"}
    assert composer["status"] == "approved", json.dumps([verdict["reasons"], composer["samples"]])  # a few steps teach this model the cited format
    assert verdict["metrics"]["faithfulness"] > verdict["current_metrics"]["faithfulness"]

    # The adapter was written through the version; meta["composer"] is the verdict; auto composes with it.
    version = VersionStore(tiny_settings.models_dir).get(outcome.report["candidate"])
    assert version.composer_dir is not None and (version.composer_dir / "adapter_model.safetensors").is_file()
    # ...with its GGUF form, so llama.cpp serves it on CPU; the gate judged it in transformers (the default).
    assert (version.composer_dir / "adapter.gguf").is_file() and trained_summary(version)["gguf_adapter"] is True
    assert pick_backend(tiny_settings, version.composer_dir) == "llama-cpp"
    assert verdict["metrics"]["backend"] == verdict["current_metrics"]["backend"] == "transformers"
    assert version.composer["approved"] is True and version.composer["adapter_id"] == verdict["adapter_id"]
    assert version.composer["metrics"]["faithfulness"] == verdict["metrics"]["faithfulness"]
    assert Engine(tiny_settings.replace(answer_mode="auto"), version=version.name).mode_for() == "compose"
    report = json.loads(Path(outcome.report["report_json"]).read_text())
    assert report["composer"]["verdict"]["approved"] is True and "## Composer" in Path(outcome.report["report_md"]).read_text()
    assert "composer approved" in outcome.message


def test_a_poisoned_round_is_not_approved(tiny_settings, base_models, tmp_path):
    """Two users 👍 answers that invent numbers; with the guard check on training targets off (so the
    poison reaches training), the retrained composer invents more than the base model: rejected."""
    from serving.versions import VersionStore
    from store import Store
    from training.compose_data import build_composer_data
    from training.compose_train import plan_composer, run_composer
    from training.gate import HeldoutSet

    link_base_model(tiny_settings.home, base_models)
    champion = VersionStore(tiny_settings.models_dir).champion()
    documents = champion.documents()
    config = fast_config(**{**COMPOSER_FAST, "composer_guard_targets": False, "composer_kb_max": 2,
                            "composer_abstain_share": 0.0, "composer_max_steps": 6, "composer_learning_rate": 2e-3})
    with Store.from_settings(tiny_settings) as store:
        for intent, questions in ((i, q[:2]) for i, (_, _, q) in INTENTS.items()):
            for question in questions:
                # The invented fee comes first, so the gate's short answers (32 tokens) show whether it was learned.
                composed(store, question + " please", intent, "A 30% handling fee applies after 45 days [1]. "
                         + INTENTS[intent][1].rstrip(".") + " [1].", ["eve", "fay"])
        rows = store.feedback_since(None)
    heldout = HeldoutSet.load(tiny_settings.home)
    heldout.update_from_kb(documents, config)
    guarded = build_composer_data(rows, documents, config=fast_config(**COMPOSER_FAST), compose=tiny_settings.compose,
                                  section_max_words=tiny_settings.section_max_words, heldout_texts=heldout.texts())
    assert guarded.counts["guard_rejected"] == 12 and guarded.counts.get("sft_feedback", 0) == 0  # the first defence
    data = build_composer_data(rows, documents, config=config, compose=tiny_settings.compose,
                               section_max_words=tiny_settings.section_max_words, heldout_texts=heldout.texts())
    assert data.counts["sft_feedback"] == 12
    plan = plan_composer(tiny_settings, config, champion, data, documents)
    outcome = run_composer(tiny_settings, config, champion, documents, data, heldout, tmp_path / "work", plan=plan)
    assert outcome.status == "rejected", outcome.report
    verdict = outcome.report["verdict"]
    invented = next(c for c in verdict["checks"] if c["rule"] == "invented_rate")
    assert not invented["passed"] and invented["candidate"] > invented["current"]
    # Nothing to carry (the champion has no composer): the new version gets no adapter, and the verdict.
    assert outcome.adapter is None and outcome.meta["approved"] is False and outcome.meta["reasons"]


def test_a_run_that_does_not_retrain_the_composer_carries_the_parents(tiny_settings, tmp_path):
    from serving.engine import Engine
    from serving.versions import VersionStore
    from store import Store
    from training.build import build_version, kb_hash
    from training.pipeline import retrain
    from training.run_state import EXIT_PROMOTED

    versions = VersionStore(tiny_settings.models_dir)
    parent = versions.champion()
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")
    verdict = {"approved": True, "base_model": tiny_settings.compose.model, "kb_hash": kb_hash(parent.documents()),
               "metrics": {"faithfulness": 0.5}}
    built = build_version(parent.documents(), tiny_settings.replace(finetune_epochs=0), parent=parent.name,
                          composer_dir=adapter, composer_meta=verdict)
    versions.promote(built.version.name)
    with Store.from_settings(tiny_settings) as store:
        good_feedback(store)
    outcome = retrain(tiny_settings, fast_config(composer="off"))
    assert outcome.exit_code == EXIT_PROMOTED, outcome.message
    assert outcome.report["composer"]["status"] == "skipped" and "off" in outcome.message
    new = versions.get(outcome.report["candidate"])
    assert (new.composer_dir / "adapter_model.safetensors").read_bytes() == b"weights"
    assert new.composer == {**verdict, "carried_from": built.version.name}
    assert Engine(tiny_settings.replace(answer_mode="auto"), version=new.name).mode_for() == "compose"
    with Store.from_settings(tiny_settings) as store:
        run = store.training_runs()[0]
    assert run["composer"]["status"] == "skipped" and run["composer"]["reason"] == "retrain_composer is off"
    shutil.rmtree(adapter)
