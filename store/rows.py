"""Small helpers shared by the store's table modules: rows as dicts, JSON columns decoded."""

from __future__ import annotations

import json
from typing import Any


def dicts(cursor: Any) -> list[dict]:
    """A DB-API cursor's rows (sqlite3 or psycopg) as dicts by column name."""
    keys = [d[0] for d in cursor.description]
    return [dict(zip(keys, row)) for row in cursor]


def loads(value: str | None) -> Any:
    return None if value is None else json.loads(value)
