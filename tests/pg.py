"""The PostgreSQL server the store's tests run against: one database per test session, created on the
server named by CSBOT_TEST_DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/postgres, the
maintenance database) as csbot_test_<random>, and dropped when the session ends.

A test that needs it is skipped, with the reason, only when no server answers; when the environment
variable CI is set (CI has a server) it fails instead.
"""

from __future__ import annotations

import atexit
import os
import secrets
import threading

import pytest

BACKENDS = ("sqlite", "postgresql")
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
_lock = threading.Lock()
_state: dict = {}


def server_url() -> str:
    return os.environ.get("CSBOT_TEST_DATABASE_URL") or DEFAULT_SERVER


def database_url(server: str, name: str) -> str:
    base, _, rest = server.rpartition("/")
    query = ("?" + rest.split("?", 1)[1]) if "?" in rest else ""
    return f"{base}/{name}{query}"


def _connect_admin(server: str):
    import psycopg

    return psycopg.connect(server, autocommit=True, connect_timeout=5)


def session_database() -> str:
    """The session's database URL (created the first time), or pytest.skip / pytest.fail."""
    with _lock:
        if "url" in _state:
            return _state["url"]
        if "error" in _state:
            _unavailable(_state["error"])
        server = server_url()
        try:
            admin = _connect_admin(server)
        except Exception as exc:  # no server: say why
            _state["error"] = f"no PostgreSQL server at {server} ({str(exc).strip().splitlines()[0]})"
            _unavailable(_state["error"])
        name = f"csbot_test_{secrets.token_hex(6)}"
        with admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        url = database_url(server, name)
        atexit.register(_drop, server, name)
        from store.backends import upgrade_database

        upgrade_database(url)
        _state["url"] = url
        return url


def _drop(server: str, name: str) -> None:
    try:
        with _connect_admin(server) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except Exception:
        pass


def _unavailable(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run the PostgreSQL tests (set CSBOT_TEST_DATABASE_URL)", pytrace=False)
    pytest.skip(reason)


def empty_database(url: str) -> None:
    """Delete every row of csbot's tables (the schema stays): a fresh store for the next test."""
    import psycopg

    from store.tables import TABLES

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")


def fresh_postgres_store_target(request) -> str:
    url = session_database()
    empty_database(url)
    return url


def new_database() -> tuple[str, callable]:
    """A database of its own on the test server, empty (no schema), and the function that drops it."""
    session_database()  # skips or fails when no server answers
    server = server_url()
    name = f"csbot_test_{secrets.token_hex(6)}"
    with _connect_admin(server) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return database_url(server, name), lambda: _drop(server, name)
