"""The team's week in Slack: the weekly digest posted once (with its chart) to the configured channel,
whichever process gets there first, and the admins' App Home view — real slack-bolt app, real engine
(demo help centre), real store, the Slack Web API mocked on loopback."""

from __future__ import annotations

import datetime as dt

from bot.slack.digest import scheduled_moment

UNANSWERED = ["how do I earn loyalty points on my orders", "where can I see my loyalty points balance",
              "do my loyalty points expire", "can I spend loyalty points on delivery"]


def seed_week(store, engine):
    """A few answers this week: four unmet loyalty questions, two answered and voted 👍."""
    for answer in engine.answer_batch(UNANSWERED):
        store.record_answer(answer, user="U9", origin="slack")
        if not answer.handoff:
            store.record_vote(answer.answer_id, "down", user="U8", origin="button")
    for answer in engine.answer_batch(["how do I reset my password", "how long does delivery take"]):
        store.record_answer(answer, user="U9", origin="slack")
        store.record_vote(answer.answer_id, "up", user="U8", origin="button")


def test_scheduled_moment_is_the_latest_weekday_hour_before_now():
    monday_9 = dt.datetime(2026, 3, 16, 9, tzinfo=dt.timezone.utc)
    assert scheduled_moment(monday_9, 0, 9) == monday_9
    assert scheduled_moment(monday_9 - dt.timedelta(seconds=1), 0, 9) == monday_9 - dt.timedelta(days=7)
    assert scheduled_moment(dt.datetime(2026, 3, 19, 3, tzinfo=dt.timezone.utc), 2, 17) == dt.datetime(
        2026, 3, 18, 17, tzinfo=dt.timezone.utc)


def test_the_weekly_digest_is_posted_once_with_its_chart_by_whichever_process_is_first(make_bot, recorded_engine,
                                                                                       tmp_path, monkeypatch):
    from core.settings import Settings
    from store import Store

    now = dt.datetime.now(dt.timezone.utc)
    # The digest covers the seven days up to its scheduled moment (today 00:00 UTC here): the week's
    # answers were stored before it, and before any serving process was up.
    store = Store.from_settings(Settings.load(env={}, home=tmp_path / "home"))
    monkeypatch.setattr("core.clock.utcnow", lambda: scheduled_moment(now, now.weekday(), 0) - dt.timedelta(hours=1))
    seed_week(store, recorded_engine)
    monkeypatch.undo()
    bot = make_bot(recorded_engine, store=store, digest_channel="CDIGEST", digest_weekday=now.weekday(), digest_hour=0)
    [post] = [c for c in bot.mock.wait_for("chat.postMessage", timeout=60) if c.args["channel"] == "CDIGEST"]
    text = str(post.args["blocks"])
    assert "What to write next" in text and "loyalty points" in text.lower()
    assert post.args["text"].startswith("csbot weekly: 6 questions")
    bot.mock.wait_for("files.completeUploadExternal", timeout=30)
    assert len(bot.mock.uploads) == 1 and next(iter(bot.mock.uploads.values()))[:4] == b"\x89PNG"
    # A second serving process on the same store finds this week's digest claimed.
    other = make_bot(recorded_engine, store=bot.store, digest_channel="CDIGEST", digest_weekday=now.weekday(),
                     digest_hour=0)
    assert other.app.digest.maybe_post() is False and bot.app.digest.maybe_post() is False
    assert [c.args["channel"] for c in bot.mock.calls_to("chat.postMessage")].count("CDIGEST") == 1


def test_no_digest_channel_means_no_digest(make_bot, recorded_engine):
    bot = make_bot(recorded_engine)
    assert bot.app.digest is None and bot.app.workers.periodic == []


def test_admins_see_the_week_and_its_gaps_on_the_home_tab(make_bot, recorded_engine):
    bot = make_bot(recorded_engine, admin_users="UADMIN")
    seed_week(bot.store, recorded_engine)
    for user in ("UADMIN", "UAGENT"):
        assert bot.sender.event({"type": "app_home_opened", "user": user, "channel": "D1", "tab": "home"})[0] == 200
    bot.idle()
    views = {c.args["user_id"]: str(c.args["view"]) for c in bot.mock.calls_to("views.publish")}
    assert "week ending" in views["UADMIN"] and "What to write next" in views["UADMIN"]
    assert "week ending" not in views["UAGENT"]
