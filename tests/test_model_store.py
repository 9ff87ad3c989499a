"""The model store (`model_store = "s3://bucket/prefix"`): versions published to an S3-compatible store
(moto's real server on loopback, tests/conftest.py) and served by replicas whose CSBOT_HOME is only a
cache of it."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import boto3
import pytest

from bot.cli import main
from core.errors import ConfigError
from core.settings import Settings, model_store_location
from serving.engine import Engine
from serving.model_store import BlobMismatch, ModelBucket, folder_manifest
from serving.versions import VersionError, VersionStore
from tests.conftest import HELPCENTRE_MD, _free_port, aws_env, copy_home
from training.ingest import ingest

pytestmark = pytest.mark.slow

# Small versions (about 2 MB, built in seconds): the base encoder, no ONNX export.
SMALL = {"finetune_epochs": 0, "runtime": "torch"}
QUESTIONS = ["how do I cancel my order?", "when will I get my refund?", "where is my invoice?",
             "can I exchange a shirt for a bigger size?", "how do I delete my account?"]
GIFT = "# Gift wrapping\n\nWe wrap any order for 2 euro; tick 'gift wrap' at checkout.\n"
VOUCHERS = "# Gift vouchers\n\nBuy a voucher under **Account → Vouchers**; it is valid for two years.\n"


@pytest.fixture(scope="session")
def small_home(tmp_path_factory) -> Path:
    """A home whose champion was ingested from the Markdown help centre with the SMALL settings, no
    model store (tests copy it)."""
    home = tmp_path_factory.mktemp("small-home")
    ingest([HELPCENTRE_MD], Settings.load(env={}, home=home, **SMALL))
    return home


def settings_for(home: Path, store: str | None) -> Settings:
    return Settings.load(env={}, home=home, model_store=store, **SMALL)


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def article(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / "new" / f"{name}.md"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def keys(store: str, folder: str) -> set[str]:
    bucket, prefix = model_store_location(store)
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/{folder}/")
    return {obj["Key"] for page in pages for obj in page.get("Contents", [])}


def read(store: str, key: str) -> bytes:
    bucket, prefix = model_store_location(store)
    return boto3.client("s3").get_object(Bucket=bucket, Key=f"{prefix}/{key}")["Body"].read()


def manifest(store: str, name: str) -> dict:
    return json.loads(read(store, f"versions/{name}.json"))


def shas(manifest_: dict) -> set[str]:
    return {entry["sha256"] for entry in manifest_["files"].values()}


def published_home(small_home: Path, store: str, tmp_path: Path) -> tuple[Settings, str]:
    """Home A: a copy of the small home, its champion pushed to the store. (settings, champion)."""
    settings = settings_for(copy_home(small_home, tmp_path / "a"), store)
    report = VersionStore.from_settings(settings).push()
    return settings, report["champion"]


def test_a_version_published_from_one_home_serves_the_same_answers_from_an_empty_one(small_home, model_store,
                                                                                    tmp_path):
    settings_a, champion = published_home(small_home, model_store, tmp_path)
    assert read(model_store, "CHAMPION").decode().strip() == champion
    b = tmp_path / "b"  # a replica with an empty CSBOT_HOME
    replica = Engine(settings_for(b, model_store))
    original = Engine(settings_for(settings_a.home, None))
    assert replica.model_version == original.model_version == champion
    for question in QUESTIONS:
        here, there = original.answer(question), replica.answer(question)
        assert (there.doc_id, there.section, there.intent, there.sentiment) == \
            (here.doc_id, here.section, here.intent, here.sentiment)
        assert there.confidence == pytest.approx(here.confidence, abs=1e-6)
    assert folder_manifest(b / "models" / champion) == folder_manifest(settings_a.models_dir / champion)
    assert set(manifest(model_store, champion)["files"]) == set(folder_manifest(b / "models" / champion))


def test_a_second_version_uploads_only_the_files_that_changed(small_home, model_store, tmp_path):
    settings, first = published_home(small_home, model_store, tmp_path)
    before = keys(model_store, "blobs")
    report = ingest([article(tmp_path, "gift", GIFT)], settings)  # built here, published by its promotion
    second = report["version"]
    after = keys(model_store, "blobs")
    old, new = manifest(model_store, first), manifest(model_store, second)
    changed = shas(new) - shas(old)
    assert after - before == {f"csbot/blobs/{sha}" for sha in changed}
    assert 0 < len(changed) < len(new["files"])  # the knowledge base changed, the sentiment model did not
    assert new["files"]["sentiment_model.npz"] == old["files"]["sentiment_model.npz"]
    assert len(after) == len(shas(old) | shas(new))  # each distinct file stored once
    assert read(model_store, "CHAMPION").decode().strip() == second
    assert new["meta"]["parent"] == first and new["meta"]["version"] == second


def test_a_tampered_blob_is_refused_and_the_replica_keeps_serving(small_home, model_store, tmp_path, monkeypatch,
                                                                capsys, caplog):
    settings_a, first = published_home(small_home, model_store, tmp_path)
    settings_b = settings_for(tmp_path / "b", model_store)
    replica = Engine(settings_b, reload_check_seconds=0.0)
    second = ingest([article(tmp_path, "gift", GIFT)], settings_a)["version"]
    kb = manifest(model_store, second)["files"]["kb.jsonl"]["sha256"]
    bucket, prefix = model_store_location(model_store)
    boto3.client("s3").put_object(Bucket=bucket, Key=f"{prefix}/blobs/{kb}", Body=b'{"id": "evil"}\n')

    with caplog.at_level(logging.WARNING, logger="csbot.engine"):
        answer = replica.answer("can you gift wrap my order?")
    assert answer.model_version == first and replica.model_version == first
    assert any("refused" in record.getMessage() for record in caplog.records)
    status = replica.store_status()  # what /healthz shows: the store, and that the last check failed
    assert status["location"] == model_store and status["remote"] is True and status["ok"] is False
    assert "kb.jsonl" in status["error"]
    cache = settings_b.models_dir
    assert not (cache / second).exists() and not list(cache.glob(".fetching-*"))
    with pytest.raises(BlobMismatch) as refused:
        VersionStore.from_settings(settings_b).get(second)
    assert "kb.jsonl" in str(refused.value) and "\n" not in str(refused.value)
    assert replica.answer("how do I cancel my order?").model_version == first  # no second try, still serving

    monkeypatch.setenv("CSBOT_HOME", str(tmp_path / "c"))
    monkeypatch.setenv("CSBOT_MODEL_STORE", model_store)
    code, out, err = run(capsys, "intents")
    assert code == 2 and out == "" and "refused" in err and err.strip().count("\n") == 0
    assert not (tmp_path / "c" / "models" / second).exists()


def test_a_half_published_version_is_never_served(small_home, model_store, tmp_path, monkeypatch, capsys):
    from training.build import build_version

    settings_a, first = published_home(small_home, model_store, tmp_path)
    versions_a = VersionStore.from_settings(settings_a)
    documents = versions_a.champion().documents()
    built = build_version(documents[:-1], settings_a, parent=first, meta={"reason": "test"})
    versions_a.publish(built.version.name)  # blobs and manifest uploaded, the pointer not moved
    bucket = ModelBucket(model_store)  # and a publish that died after its blobs: no manifest
    orphan = tmp_path / "orphan"
    orphan.mkdir()
    (orphan / "kb.jsonl").write_text('{"id": "half"}\n')
    boto3.client("s3").upload_file(str(orphan / "kb.jsonl"), bucket.bucket, bucket.key("blobs", "0" * 64))

    assert read(model_store, "CHAMPION").decode().strip() == first
    assert Engine(settings_for(tmp_path / "b", model_store)).model_version == first
    monkeypatch.setenv("CSBOT_HOME", str(tmp_path / "c"))
    monkeypatch.setenv("CSBOT_MODEL_STORE", model_store)
    code, out, _ = run(capsys, "models", "list", "--json")
    listing = json.loads(out)
    assert code == 0 and listing["champion"] == first
    assert [v["version"] for v in listing["versions"]] == [first, built.version.name]
    assert [v["champion"] for v in listing["versions"]] == [True, False]


def test_an_engine_on_another_host_hot_swaps_to_a_version_promoted_from_home_a(small_home, model_store, tmp_path):
    import threading

    settings_a, first = published_home(small_home, model_store, tmp_path)
    replica = Engine(settings_for(tmp_path / "b", model_store), reload_check_seconds=0.0)
    assert replica.model_version == first
    errors, answered = [], []
    stop = threading.Event()

    def ask_forever():
        while not stop.is_set():
            try:
                answered.append(replica.answer("can you gift wrap my order?").model_version)
            except Exception as exc:  # any failure while the champion flips is a bug
                errors.append(exc)

    worker = threading.Thread(target=ask_forever)
    worker.start()
    try:
        report = ingest([article(tmp_path, "gift", GIFT)], settings_a)
    finally:
        replica.answer("warm up")  # the next request after the flip serves the new version
        stop.set()
        worker.join()
    assert not errors and answered and set(answered) <= {first, report["version"]}
    answer = replica.answer("can you gift wrap my order?")
    assert answer.model_version == report["version"] and answer.doc_id == "gift"


def test_models_list_promote_rollback_and_prune_act_on_the_store(small_home, model_store, tmp_path, monkeypatch,
                                                                 capsys):
    settings_a, v1 = published_home(small_home, model_store, tmp_path)
    v2 = ingest([article(tmp_path, "gift", GIFT)], settings_a)["version"]
    v3 = ingest([article(tmp_path, "vouchers", VOUCHERS)], settings_a)["version"]
    b = tmp_path / "b"
    monkeypatch.setenv("CSBOT_HOME", str(b))
    monkeypatch.setenv("CSBOT_MODEL_STORE", model_store)

    code, out, _ = run(capsys, "models", "list", "--json")
    listing = json.loads(out)
    assert code == 0 and listing["champion"] == v3 and listing["store"] == model_store
    assert [v["version"] for v in listing["versions"]] == [v1, v2, v3]
    assert all(v["published"] and not v["cached"] for v in listing["versions"])
    assert listing["store_bytes"] == sum(len(read(model_store, k.split("/", 1)[1])) for k in keys(model_store, "blobs"))
    assert not list(b.glob("models/v*"))  # listing fetched nothing

    assert run(capsys, "models", "rollback")[0] == 0
    assert read(model_store, "CHAMPION").decode().strip() == v2
    history = VersionStore.from_settings(settings_a).history()
    assert history[-1]["champion"] == v2 and history[-1]["reason"] == f"rollback from {v3}"
    assert run(capsys, "models", "promote", v3)[0] == 0
    assert read(model_store, "CHAMPION").decode().strip() == v3
    code, _, err = run(capsys, "models", "promote", "v-nope")
    assert code == 2 and "no model version" in err and err.strip().count("\n") == 0

    code, out, _ = run(capsys, "models", "prune", "--keep", "0", "--json")
    report = json.loads(out)
    assert code == 0 and report["removed"] == [v1] and report["kept"] == [v2, v3] and report["store_freed_bytes"] > 0
    assert keys(model_store, "versions") == {f"csbot/versions/{v2}.json", f"csbot/versions/{v3}.json"}
    kept = shas(manifest(model_store, v2)) | shas(manifest(model_store, v3))
    assert keys(model_store, "blobs") == {f"csbot/blobs/{sha}" for sha in kept}

    versions_a = VersionStore.from_settings(settings_a)  # home A's cache still holds v1, which the store dropped
    assert (settings_a.models_dir / v1).is_dir() and versions_a.names() == [v2, v3]
    assert versions_a.prune(5)["uncached"] == [v1] and not (settings_a.models_dir / v1).exists()


def test_promote_compares_against_the_stores_pointer(small_home, model_store, tmp_path):
    settings_a, v1 = published_home(small_home, model_store, tmp_path)
    v2 = ingest([article(tmp_path, "gift", GIFT)], settings_a)["version"]
    other_host = VersionStore.from_settings(settings_for(tmp_path / "b", model_store))
    with pytest.raises(VersionError, match="the champion changed"):
        other_host.promote(v1, expect_champion=v1)  # built on v1, but A promoted v2 meanwhile
    assert read(model_store, "CHAMPION").decode().strip() == v2
    bucket = ModelBucket(model_store)
    name, etag = bucket.champion()
    other_host.promote(v1, reason="manual")  # moves the pointer after `etag` was read
    assert bucket.set_champion(v2, etag=etag, expect_present=True) is False  # a conditional write loses
    assert bucket.set_champion(v2, etag=None, expect_present=False) is False  # "no champion yet" is stale too
    assert read(model_store, "CHAMPION").decode().strip() == v1


def test_models_push_moves_an_existing_home_to_the_store(home, engine, model_store, tmp_path, monkeypatch, capsys):
    local = VersionStore(home / "models")
    names, champion = local.names(), local.champion_name()
    monkeypatch.setenv("CSBOT_MODEL_STORE", model_store)
    code, out, _ = run(capsys, "models", "push", "--json")
    report = json.loads(out)
    assert code == 0 and report["pushed"] == names and report["champion_set"] and report["champion"] == champion
    stored = keys(model_store, "blobs")
    assert len(stored) == len(set().union(*(shas(manifest(model_store, n)) for n in names)))

    code, out, _ = run(capsys, "models", "push", "--json")  # again: nothing to upload, nothing moved
    again = json.loads(out)
    assert code == 0 and again["pushed"] == [] and again["already"] == names and again["uploaded_blobs"] == 0
    assert not again["champion_set"] and keys(model_store, "blobs") == stored

    replica = Engine(Settings.load(env={}, home=tmp_path / "c", model_store=model_store))
    for question in ("where is my parcel?", "I want my money back"):
        here, there = engine.answer(question), replica.answer(question)
        assert there.model_version == champion and (there.doc_id, there.intent) == (here.doc_id, here.intent)


@pytest.mark.parametrize("value", ["gs://bucket/models", "bucket/models", "s3://", "s3:///models", "file:///tmp/x"])
def test_a_bad_model_store_value_is_a_one_line_settings_error(value, tmp_path, monkeypatch, capsys):
    with pytest.raises(ConfigError) as bad:
        Settings.load(env={"CSBOT_MODEL_STORE": value})
    assert "model_store" in str(bad.value) and "\n" not in str(bad.value)
    monkeypatch.setenv("CSBOT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CSBOT_MODEL_STORE", value)
    code, out, err = run(capsys, "models")
    assert code == 2 and out == "" and "model_store" in err and err.strip().count("\n") == 0


def test_an_empty_model_store_value_means_the_local_folder():
    assert Settings.load(env={"CSBOT_MODEL_STORE": ""}).model_store is None
    assert model_store_location("s3://team-models/prod/csbot/") == ("team-models", "prod/csbot")
    assert model_store_location("s3://team-models") == ("team-models", "")


def test_an_unreachable_or_missing_store_is_a_one_line_error(moto_endpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CSBOT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CSBOT_MODEL_STORE", "s3://models/csbot")
    aws_env(monkeypatch, f"http://127.0.0.1:{_free_port()}")  # nothing listens there
    code, out, err = run(capsys, "models", "list")
    assert code == 2 and out == "" and "cannot reach the model store" in err and err.strip().count("\n") == 0
    code, _, err = run(capsys, "ask", "where is my parcel?")
    assert code == 2 and "cannot reach the model store" in err and err.strip().count("\n") == 0

    aws_env(monkeypatch, moto_endpoint)
    monkeypatch.setenv("CSBOT_MODEL_STORE", f"s3://no-such-bucket-{os.getpid()}/csbot")
    code, _, err = run(capsys, "models", "list")
    assert code == 2 and "does not exist" in err and err.strip().count("\n") == 0

    monkeypatch.delenv("CSBOT_MODEL_STORE")
    code, _, err = run(capsys, "models", "push")
    assert code == 2 and "needs a model store" in err


def test_forget_rebuilds_through_the_store_and_leaves_no_copy_of_the_users_question(small_home, model_store, tmp_path,
                                                                                   monkeypatch, capsys):
    from serving.versions import TrainingExample
    from training.build import build_version

    settings, first = published_home(small_home, model_store, tmp_path)
    monkeypatch.setenv("CSBOT_HOME", str(settings.home))
    monkeypatch.setenv("CSBOT_MODEL_STORE", model_store)
    monkeypatch.setenv("CSBOT_FINETUNE_EPOCHS", "0")
    monkeypatch.setenv("CSBOT_RUNTIME", "torch")
    mine = "my refund for order 4711 never arrived"
    assert main(["ask", mine, "--user", "U1", "--json"]) == 0
    answer_id = json.loads(capsys.readouterr().out)["answer_id"]
    assert main(["feedback", answer_id, "down", "--doc", "refunds", "--user", "U1"]) == 0
    capsys.readouterr()
    versions = VersionStore.from_settings(settings)
    base = versions.champion()
    label = next(doc.label for doc in base.documents() if doc.id == "refunds")
    built = build_version(base.documents(), settings, parent=first, meta={"reason": "retrain"},
                          extra_examples=[TrainingExample(mine, label, origin="feedback:correction")])
    versions.promote(built.version.name)  # what a retrain would have learned, published
    bucket, prefix = model_store_location(model_store)
    s3 = boto3.client("s3")

    def copies() -> int:
        return sum(mine.encode() in s3.get_object(Bucket=bucket, Key=key)["Body"].read()
                   for key in keys(model_store, "blobs"))

    assert copies() > 0
    assert main(["forget", "--user", "U1", "--json"]) == 0
    learned = json.loads(capsys.readouterr().out)["learned"]
    assert learned["versions_deleted"] == [built.version.name]
    assert read(model_store, "CHAMPION").decode().strip() == learned["new_champion"] != built.version.name
    assert f"{prefix}/versions/{built.version.name}.json" not in keys(model_store, "versions")
    assert copies() == 0  # the deleted version's blobs went with it
    assert not (settings.models_dir / built.version.name).exists()
