"""The store's tables, written once as SQLAlchemy Core metadata for both dialects (SQLite, PostgreSQL).

This is the one definition of the schema: a new database (a fresh SQLite file, an empty PostgreSQL
database) is created from it, the Alembic revisions in store/migrations/ carry older databases to it,
and tests/store/test_store_migrations.py checks that a migrated database and a created one do not
differ. Imported only where DDL or a copy runs (SQLAlchemy takes ~0.2 s to import): the queries the
store runs per call are plain SQL over the driver's connection (store/backends.py).

Conventions, kept from the SQLite-only store so an existing file and a new one read the same:
* times are ISO-8601 UTC text (core/clock.py `to_iso`): they sort in time order in both dialects;
* booleans are integers 0/1, JSON is text;
* index names are `idx_<table>_<columns>` (the names sqlite-utils gave them in the legacy steps);
* integer keys are INTEGER PRIMARY KEY on SQLite (the rowid) and BIGINT identity on PostgreSQL;
* unix times (the inbox) are REAL on SQLite and DOUBLE PRECISION on PostgreSQL.
"""

from __future__ import annotations

from sqlalchemy import (
    REAL,
    BigInteger,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    text,
)

METADATA = MetaData()
ID = BigInteger().with_variant(Integer(), "sqlite")  # SQLite: INTEGER PRIMARY KEY is the rowid
FLOAT = Double().with_variant(REAL(), "sqlite")
ZERO = text("0")


def _id() -> Column:
    return Column("id", ID, primary_key=True, autoincrement=True)


def _indexes(table: Table, *columns: tuple[str, ...], unique: tuple[str, ...] = ()) -> None:
    for cols in (*columns, *unique):
        Index(f"idx_{table.name}_{'_'.join(cols)}", *(table.c[c] for c in cols), unique=cols in unique)


answers = Table(
    "answers", METADATA,
    Column("answer_id", Text, primary_key=True),
    Column("time", Text, nullable=False),
    Column("origin", Text),  # cli | slack | chat | ...
    Column("workspace", Text),
    Column("channel", Text),
    Column("thread", Text),
    Column("user_hash", Text),  # of the asker
    Column("question", Text),  # redacted
    Column("intent", Text),
    Column("confidence", FLOAT),
    Column("sentiment", Text),
    Column("sources", Text),  # JSON list of {doc_id, title, url, score}
    Column("model_version", Text),
    Column("handoff", Integer),
    Column("answer_text", Text),  # redacted
    Column("doc_id", Text),
    Column("sentiment_scores", Text),  # JSON
    Column("used_context", Integer),
    Column("answer_mode", Text),  # select | compose
    Column("composition", Text),  # JSON: the composition's report
    Column("section", Text),  # the id of the section the answer quoted
)
_indexes(answers, ("time",), ("user_hash",))

feedback = Table(
    "feedback", METADATA,
    _id(),
    Column("answer_id", Text, ForeignKey("answers.answer_id", ondelete="CASCADE"), nullable=False),
    Column("user_hash", Text),  # NULL: an anonymous CLI vote
    Column("vote", Text, nullable=False),  # up | down | retracted
    Column("origin", Text, nullable=False),  # button | reaction | modal | cli | import | clarify
    Column("event_id", Text),
    Column("time", Text, nullable=False),  # last change
    Column("correct_intent", Text),
    Column("correct_doc_id", Text),
    Column("correct_answer", Text),  # redacted
    Column("created", Text),  # first vote (the daily cap counts these)
)
_indexes(feedback, ("time",), ("user_hash", "created"), unique=(("answer_id", "user_hash"), ("event_id",)))

processed_events = Table(
    "processed_events", METADATA,
    Column("event_id", Text, primary_key=True),
    Column("time", Text, nullable=False),
)
_indexes(processed_events, ("time",))

monitored_messages = Table(
    "monitored_messages", METADATA,
    _id(),
    Column("time", Text, nullable=False),  # from the Slack ts
    Column("workspace", Text),
    Column("channel", Text, nullable=False),
    Column("ts", Text, nullable=False),
    Column("user_hash", Text),
    Column("sentiment", Text),
    Column("scores", Text),  # JSON {negative, neutral, positive}
    Column("intent", Text),
    Column("confidence", FLOAT),
    Column("text", Text),  # NULL unless store_message_text is on; redacted
)
_indexes(monitored_messages, ("time",), ("channel", "time"), ("user_hash",), unique=(("channel", "ts"),))

training_runs = Table(
    "training_runs", METADATA,
    _id(),
    Column("started_at", Text),
    Column("finished_at", Text),
    Column("status", Text, nullable=False),
    Column("model_version", Text),
    Column("data_until", Text),  # the newest feedback time the run learned from
    Column("n_feedback", Integer),
    Column("n_messages", Integer),
    Column("metrics", Text),  # JSON
    Column("notes", Text),
    Column("extra", Text),  # JSON: any other fields the caller passed
)
_indexes(training_runs, ("status", "id"))

sentiment_corrections = Table(
    "sentiment_corrections", METADATA,
    _id(),
    Column("time", Text, nullable=False),  # of the latest change
    Column("workspace", Text),
    Column("channel", Text, nullable=False),
    Column("ts", Text, nullable=False),  # the corrected message
    Column("user_hash", Text),
    Column("label", Text, nullable=False),  # negative | neutral | positive
    Column("text", Text),  # redacted; kept because the user submitted it for training
    Column("origin", Text),  # modal | cli | import
    Column("event_id", Text),
)
_indexes(sentiment_corrections, ("time",), ("user_hash",), unique=(("channel", "ts", "user_hash"),))

monitoring_alerts = Table(
    "monitoring_alerts", METADATA,
    _id(),
    Column("channel", Text, nullable=False),
    Column("time", Text, nullable=False),  # the triggering message's time
    Column("created", Text),  # wall-clock time the alert was recorded
    Column("recent_n", Integer),
    Column("recent_negative", Integer),
    Column("baseline_n", Integer),
    Column("baseline_negative", Integer),
    Column("details", Text),  # JSON: shares, bound, topics, windows
)
_indexes(monitoring_alerts, ("channel", "time"))

slack_inbox = Table(
    "slack_inbox", METADATA,
    _id(),
    Column("received", FLOAT, nullable=False),  # unix time the request was acknowledged
    Column("event_id", Text),  # the id claimed with it (NULL for interactions)
    Column("team", Text),
    Column("function", Text, nullable=False),  # the lazy listener to run
    Column("work", Text, nullable=False),  # interactive | answer | sentiment (the shedding class)
    Column("priority", Integer, nullable=False),  # lower first
    Column("mode", Text),  # http | socket_mode
    Column("content_type", Text),
    Column("body", Text),  # the raw payload; NULL once the item failed for good
    Column("state", Text, nullable=False),  # pending | running | failed
    Column("late", Integer, server_default=ZERO),  # 1: queued while the inbox was full
    Column("owner", Text),  # the serving process running it
    Column("attempts", Integer, server_default=ZERO),
    Column("not_before", FLOAT, server_default=ZERO),  # unix time of the next try
    Column("error", Text),
)
_indexes(slack_inbox, ("state", "priority", "id"), ("owner",))

slack_posts = Table(
    "slack_posts", METADATA,
    Column("key", Text, primary_key=True),  # e.g. "answer:<channel>:<question ts>": one post per key
    Column("answer_id", Text),
    Column("channel", Text),
    Column("thread_ts", Text),
    Column("question_ts", Text),
    Column("ts", Text),  # the posted message; NULL while the post is under way
    Column("message", Text),  # JSON chat.postMessage arguments of a post still owed
    Column("time", Text, nullable=False),
)
_indexes(slack_posts, ("channel", "ts"), ("channel", "thread_ts"), ("time",))

slack_workspaces = Table(
    "slack_workspaces", METADATA,
    Column("team", Text, primary_key=True),
    Column("state", Text, nullable=False),
    Column("reason", Text),
    Column("time", Text, nullable=False),
)

slack_workers = Table(
    "slack_workers", METADATA,
    Column("owner", Text, primary_key=True),
    Column("host", Text),
    Column("pid", Integer),
    Column("started", FLOAT),
    Column("heartbeat", FLOAT, nullable=False),  # the lease: items of an owner whose heartbeat lapsed are taken over
)

# Tables in the order a copy fills them (parents before children).
# Values every process of one store shares (revision 0007): "user_hash_salt", so replicas with homes of
# their own, and the retrain host, hash one user to one hash (store/store.py `shared_salt`).
store_meta = Table(
    "store_meta", METADATA,
    Column("key", Text, primary_key=True),
    Column("value", Text, nullable=False),
)

TABLES: tuple[str, ...] = tuple(t.name for t in METADATA.sorted_tables)
