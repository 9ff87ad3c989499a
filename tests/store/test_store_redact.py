"""PII is replaced by typed placeholders before anything is written."""

from __future__ import annotations

import sqlite3

import pytest

from store import REDACTION_KINDS, Redactor, Store, redact
from store.redact import iban_ok, luhn_ok

REDACTED = [
    # (text, expected)
    ("my card is 4111 1111 1111 1111, exp 12/25", "my card is [CARD], exp 12/25"),
    ("charge 4111-1111-1111-1111 again", "charge [CARD] again"),
    ("visa 4111111111111111.", "visa [CARD]."),
    ("amex 3782 822463 10005 declined", "amex [CARD] declined"),
    ("mastercard 5555555555554444 and qty 3 4012888888881881", "mastercard [CARD] and qty 3 [CARD]"),
    ("write to John.Doe+billing@example.co.uk please", "write to [EMAIL] please"),
    ("<mailto:ana@corp.example|ana@corp.example>", "<mailto:[EMAIL]|[EMAIL]>"),
    ("call me on +44 20 7946 0958 tomorrow", "call me on [PHONE] tomorrow"),
    ("my number is (415) 555-2671", "my number is [PHONE]"),
    ("or 415-555-2671 / 415.555.2671", "or [PHONE] / [PHONE]"),
    ("US office +1 (415) 555-2671", "US office [PHONE]"),
    ("toll free 1-800-555-0199", "toll free [PHONE]"),
    ("Paris +33 1 23 45 67 89", "Paris [PHONE]"),
    ("London 020 7946 0958, mobile 07700 900123", "London [PHONE], mobile [PHONE]"),
    ("IBAN GB82WEST12345698765432 please", "IBAN [IBAN] please"),
    ("IBAN GB82 WEST 1234 5698 7654 32.", "IBAN [IBAN]."),
    ("pay to DE89 3704 0044 0532 0130 00 today", "pay to [IBAN] today"),
    ("lowercase gb82west12345698765432", "lowercase [IBAN]"),
    ("from 192.168.1.10 and 10.0.0.1:8080", "from [IP] and [IP]:8080"),
    ("v6 2001:db8::8a2e:370:7334 or ::1", "v6 [IP] or [IP]"),
    ("hey <@U024BE7LH> can you help", "hey [USER] can you help"),
    ("cc <@W0123ABCD|maria> and <@U999ZZZ>", "cc [USER] and [USER]"),
    ("https://x.example/cb?token=abc123&x=1", "https://x.example/cb?token=[SECRET]&x=1"),
    (
        "link <https://app.example/reset?user=7&access_token=eyJabc.def&lang=en|reset>",
        "link <https://app.example/reset?user=7&access_token=[SECRET]&lang=en|reset>",
    ),
    (
        "https://s3.example/f?X-Amz-Signature=deadbeef&X-Amz-Credential=AKID/2025&page=2",
        "https://s3.example/f?X-Amz-Signature=[SECRET]&X-Amz-Credential=[SECRET]&page=2",
    ),
    ("https://api.example/v1?apiKey=sk123&q=refund", "https://api.example/v1?apiKey=[SECRET]&q=refund"),
    ("https://svc.example/cb#code=4/0AX&state=xyz", "https://svc.example/cb#code=[SECRET]&state=xyz"),
    ("ftp://admin:hunter2@files.example/x", "ftp://[SECRET]@files.example/x"),
    ("token xoxb-123456789012-abcdefghijklmnop leaked", "token [SECRET] leaked"),
    ("Authorization: Bearer abcdefghijklmnopqrstuvwxyz012345", "Authorization: Bearer [SECRET]"),
    ("key AKIAIOSFODNN7EXAMPLE here", "key [SECRET] here"),
]

KEPT = [
    "order 4111 1111 1111 1112 is late",  # fails Luhn: an order number, not a card
    "order #100234556 shipped",
    "tracking 1Z999AA10123456784",
    "invoice 2024-01-15 for $1,299.99 (or 1.299,99 EUR) due 15/02/2025",
    "meeting at 10:30:45 or 9:00",
    "ticket 555-2671",  # too short to be a phone number
    "bad address 999.1.1.1 and 256.0.0.1",  # not valid IPs
    "release v1.2.3.4, build 2.14.1, ip-like 1.2.3.4.5",
    "IBAN-like GB82WEST12345698765433 with a bad checksum",
    "DE89 3704 0044 0532 0130 02",  # bad IBAN checksum (and its digits fail Luhn)
    "see <#C024BE91L|general> and <!here> and <!subteam^S123|@support>",
    "https://help.example.com/kb/12?page=2&zipcode=10115&author=jane&sort=asc",
    "email at example dot com, @channel, user@localhost",
    "100% sure, 3 items @ 5 each, room 404",
    "US zip 94103-1234 and ISBN 978-3-16-148410-0",
    "Note:: the ratio is 3:2",
]


@pytest.mark.parametrize("text, expected", REDACTED)
def test_pii_is_replaced_by_typed_placeholders(text, expected):
    assert redact(text) == expected


@pytest.mark.parametrize("text", KEPT)
def test_near_misses_are_kept(text):
    assert redact(text) == text


def test_checksums():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("GB82WEST12345698765432") and not iban_ok("GB82WEST12345698765433")
    assert not iban_ok("GB82WEST1234569876543")  # wrong length for GB


def test_counts_per_kind():
    text, counts = Redactor().redact_with_counts("a@b.io, b@c.io, 4111 1111 1111 1111 from 10.1.2.3 <@U123ABC>")
    assert counts == {"email": 2, "card": 1, "ip": 1, "user": 1}
    assert text == "[EMAIL], [EMAIL], [CARD] from [IP] [USER]"


def test_kinds_are_configurable():
    only_email = Redactor(["email"])
    assert only_email("bob@x.io 10.0.0.1") == "[EMAIL] 10.0.0.1"
    assert Redactor([])("bob@x.io") == "bob@x.io"
    assert set(REDACTION_KINDS) == {"email", "phone", "card", "iban", "ip", "secret", "user"}
    with pytest.raises(ValueError, match="unknown redaction kind"):
        Redactor(["emails"])


def test_none_and_empty_pass_through():
    assert redact(None) is None and redact("") == ""


@pytest.mark.parametrize(
    "text",
    ["x." * 20000, "a:" * 20000, "1 " * 10000, "a@" + "a" * 20000, "https://" + "a:" * 10000, "GB82 " * 8000],
)
def test_pathological_input_is_left_as_it_is(text):
    """Inputs that make a backtracking pattern explode hold no PII: they come back unchanged (their
    speed against an ordinary message of the same length is `bench_store.py --only redact`)."""
    assert redact(text) == text


PII_MESSAGE = (
    "I'm <@U024BE7LH>, card 4111 1111 1111 1111, mail jane.roe@example.com, call +44 20 7946 0958, "
    "IBAN GB82WEST12345698765432 from 203.0.113.9 via https://x.example/cb?token=abc123&x=1"
)
RAW_PII = ["U024BE7LH", "4111 1111 1111 1111", "jane.roe@example.com", "7946 0958", "GB82WEST", "203.0.113.9", "abc123"]


def _db_text(path) -> str:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    dump = "\n".join(conn.iterdump())
    conn.close()
    return dump


def test_store_redacts_everything_it_writes(tmp_path, answer_factory):
    path = tmp_path / "csbot.sqlite3"
    with Store(path, salt="s", store_message_text=True) as s:
        a = answer_factory(question=PII_MESSAGE, text="We emailed jane.roe@example.com")
        s.record_answer(a, user="U024BE7LH")
        s.record_vote(a.answer_id, "down", user="U024BE7LH", origin="modal", answer_text="Refund to 4111 1111 1111 1111")
        s.record_monitored_message(
            channel="C1", ts="1700000000.000100", user="U024BE7LH", sentiment="negative",
            scores={"negative": 0.9}, intent=None, confidence=None, text=PII_MESSAGE,
        )
        stored = s.get_answer(a.answer_id)
        assert stored["question"].startswith("I'm [USER], card [CARD], mail [EMAIL], call [PHONE], IBAN [IBAN]")
        assert stored["answer_text"] == "We emailed [EMAIL]"
    dump = _db_text(path)
    for raw in RAW_PII:
        assert raw not in dump, raw


def test_redaction_can_be_turned_off(tmp_path, answer_factory):
    with Store(tmp_path / "db.sqlite3", salt="s", redact=False) as s:
        a = answer_factory(question="mail jane.roe@example.com")
        s.record_answer(a)
        assert s.get_answer(a.answer_id)["question"] == "mail jane.roe@example.com"
    with Store(tmp_path / "db2.sqlite3", salt="s", redact=["card"]) as s:
        a = answer_factory(question="mail jane.roe@example.com card 4111111111111111")
        s.record_answer(a)
        assert s.get_answer(a.answer_id)["question"] == "mail jane.roe@example.com card [CARD]"


def test_user_ids_are_stored_only_as_salted_hashes(tmp_path, answer_factory):
    path = tmp_path / "db.sqlite3"
    with Store(path, salt="salt-one") as s:
        a = answer_factory()
        s.record_answer(a, user="U0SECRETUSER")
        s.record_vote(a.answer_id, "up", user="U0SECRETUSER", origin="button")
        h1 = s.hash_user("U0SECRETUSER")
    assert "U0SECRETUSER" not in _db_text(path)
    with Store(tmp_path / "other.sqlite3", salt="salt-two") as s2:
        assert s2.hash_user("U0SECRETUSER") != h1
    assert len(h1) == 32 and h1 == Store(path, salt="salt-one").hash_user("U0SECRETUSER")


def test_every_card_of_a_pasted_list_is_redacted():
    """Cards one after another form one run of digit groups: each of them goes, not only the first."""
    assert redact("cards 4111 1111 1111 1111 5555 5555 5555 4444 ok") == "cards [CARD] [CARD] ok"
    assert redact("4111111111111111 5555555555554444 378282246310005") == "[CARD] [CARD] [CARD]"
    assert redact("order 12345 6789 then 4111 1111 1111 1111") == "order 12345 6789 then [CARD]"
