"""No raw Slack payload outlives its processing on disk: DMs carrying a card number, an email address
and an IBAN go through the real bot (signed requests, the real server, the real engine); once the inbox
is idle, not one byte of the database, its WAL or its shared-memory file holds them - also after a
kill -9 and a restart. The stored answers keep only the redacted text."""

from __future__ import annotations

import re

import pytest

from core.settings import Settings
from store import Store

pytestmark = pytest.mark.slow

CARD, EMAIL, IBAN = "4111 1111 1111 1111", "jane.roe@example.org", "GB82 WEST 1234 5698 7654 32"
RAW = (CARD, EMAIL, IBAN)


def dm_text(i: int) -> str:
    return f"refund {i} please: my card {CARD} was charged twice, mail me at {EMAIL}, IBAN {IBAN}"


def occurrences(home) -> dict[str, int]:
    """How often each raw value appears in the raw bytes of the database, its -wal and its -shm file."""
    data = b"".join((home / f"csbot.sqlite3{suffix}").read_bytes()
                    for suffix in ("", "-wal", "-shm") if (home / f"csbot.sqlite3{suffix}").exists())
    return {value: data.count(value.encode()) for value in RAW}


NONE_LEFT = {value: 0 for value in RAW}


def stored_questions(home) -> list[str]:
    store = Store.from_settings(Settings.load(env={}, home=home))
    try:
        return [row["question"] for row in store.export(kinds=["answers"])]
    finally:
        store.close()


def assert_redacted(questions: list[str], n: int) -> None:
    """Every DM has its stored answer, and every stored question holds the placeholders, no raw value."""
    assert {int(re.search(r"refund (\d+) please", q)[1]) for q in questions} == set(range(n)), questions
    assert all("[CARD]" in q and "[EMAIL]" in q and "[IBAN]" in q for q in questions), questions
    assert not any(value in q for q in questions for value in RAW)


def send_dms(sender, mock, n: int) -> None:
    for i in range(n):
        message = mock.add_message("D1", dm_text(i), user=f"UDM{i}")
        event = {"type": "message", "channel_type": "im", "channel": "D1", "event_ts": message["ts"], **message}
        status, _ = sender.event(event)
        assert status == 200


def test_dm_payloads_leave_no_trace_on_disk_once_the_inbox_is_idle(make_bot, recorded_engine):
    bot = make_bot(recorded_engine)
    send_dms(bot.sender, bot.mock, 10)
    bot.idle()
    assert len(bot.mock.calls_to("chat.stopStream")) == 10  # every DM was answered (streamed)
    assert occurrences(bot.settings.home) == NONE_LEFT
    assert_redacted(stored_questions(bot.settings.home), 10)


def test_no_payload_is_left_on_disk_after_kill_9_and_a_restart(serve, home, slack_mock):
    slack_mock.delay("chat.startStream", 0.3)  # a slow Slack: the DMs queue up behind the acks
    first = serve(slack_workers=1, slack_busy_after_seconds=600)
    send_dms(first.sender, slack_mock, 10)
    slack_mock.wait_for("chat.stopStream", 3)  # some answered (their rows deleted), the rest queued
    first.kill()
    # The queued payloads are on disk, as they must be until they are done: the grep finds what it looks for.
    assert all(n > 0 for n in occurrences(home).values()), occurrences(home)
    second = serve(slack_workers=1, slack_busy_after_seconds=600)
    second.wait_drained()
    assert occurrences(home) == NONE_LEFT
    assert_redacted(stored_questions(home), 10)
