"""Claimed event ids (the processed_events table): the one place that claims one.

A claim is what makes a Slack delivery run once however often it comes: the first claim of an id
wins, every later one finds it taken. It is made inside the caller's write transaction, together
with the rows it guards (a vote, a sentiment correction, the inbox items of a request), so a crash
can neither keep the claim without the rows nor the rows without the claim.
"""

from __future__ import annotations

from typing import Any

CLAIMED_SQL = "SELECT 1 AS x FROM processed_events WHERE event_id = ?"


def claim_event(conn: Any, event_id: str, time: str) -> bool:
    """Claim `event_id` at `time` (core.clock's ISO form) in `conn`'s open transaction: True the
    first time, False when it was claimed already.

    Safe across processes on either database: on PostgreSQL a second claim of the same id waits for
    the first one's transaction, then finds the id taken (or claims it, if the first rolled back)."""
    return conn.execute("INSERT INTO processed_events (event_id, time) VALUES (?, ?) ON CONFLICT (event_id) DO NOTHING",
                        (event_id, time)).rowcount == 1
