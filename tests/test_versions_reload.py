"""Hot reload: a running engine switches to a newly promoted champion without a restart."""

from __future__ import annotations

import threading

import pytest

from serving.engine import Engine
from training.ingest import ingest

pytestmark = pytest.mark.slow


def test_engine_switches_to_a_new_champion_while_answering(settings, tmp_path):
    engine = Engine(settings, reload_check_seconds=0.0)
    first = engine.model_version
    extra = tmp_path / "gift.md"
    extra.write_text("# Gift wrapping\n\nWe wrap any order for 2 euro; tick 'gift wrap' at checkout.\n")
    errors, answered = [], []
    stop = threading.Event()

    def ask_forever():
        while not stop.is_set():
            try:
                answered.append(engine.answer("can you gift wrap my order?").model_version)
            except Exception as exc:  # any failure while the champion flips is a bug
                errors.append(exc)

    worker = threading.Thread(target=ask_forever)
    worker.start()
    try:
        report = ingest([extra], settings)
    finally:
        engine.answer("warm up")  # the next request after the flip serves the new version
        stop.set()
        worker.join()
    assert not errors
    assert engine.model_version == report["version"] != first
    answer = engine.answer("can you gift wrap my order?")
    assert answer.doc_id == "gift"  # the id of a Markdown article is its file name and answer.model_version == report["version"]
    assert answered and set(answered) <= {first, report["version"]}
