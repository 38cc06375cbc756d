"""Fixtures of the Postgres World's tests: one PostgreSQL server per session, a fresh schema per test.

The server is `WF_TEST_PG_URL` when set (CI starts one with `.ci/postgres`; with
`WF_TEST_PG_DIR` too, tests may restart it), else a throwaway one started here
(`tests/pg_server.py`) and stopped at the end of the session.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from wf.world_testing.fixtures import *  # noqa: F403
from wf.world_testing.stores import Store, with_query

from ..pg_server import PgServer


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer | None]:
    """The session's server, or None when `WF_TEST_PG_URL` names one we cannot restart."""
    url = os.environ.get("WF_TEST_PG_URL", "").strip()
    if url:
        root = os.environ.get("WF_TEST_PG_DIR", "").strip()
        yield PgServer.attach(Path(root), url) if root else None
        return
    server = PgServer()
    server.start()
    os.environ["WF_TEST_PG_URL"] = server.url  # child processes find it too
    try:
        yield server
    finally:
        os.environ.pop("WF_TEST_PG_URL", None)
        server.stop()


@pytest.fixture(scope="session")
def pg_url(pg_server: PgServer | None) -> str:
    return os.environ["WF_TEST_PG_URL"] if pg_server is None else pg_server.url


def fresh_schema() -> str:
    return f"t_{secrets.token_hex(6)}"


@pytest.fixture
def world_store(pg_url: str) -> Store:
    """A fresh schema of the session's server (dropped by `make_world` at the end)."""
    return Store(with_query(pg_url, schema=fresh_schema()))
