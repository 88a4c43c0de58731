"""Every store test runs on both backends: SQLite in a temporary folder, and PostgreSQL on
a real server this session starts (tests/conftest.py's postgres_server), a fresh database
per test."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.storage.responses import ResponseStore, SqliteResponseStore
from bench import postgres

OpenStore = Callable[..., ResponseStore]
_databases = itertools.count()


@pytest.fixture(params=["sqlite", "postgresql"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenStore]:
    """open_store(max_stored=, max_age_s=): a store on this test's own database; called
    again, it opens the same database anew (a restart). Stores left open are closed."""
    opened: list[ResponseStore] = []
    if request.param == "sqlite":

        def open_one(max_stored: int = 10, max_age_s: float = 60) -> ResponseStore:
            opened.append(SqliteResponseStore(tmp_path / "r.db", max_stored, max_age_s))
            return opened[-1]

    else:
        from app.storage.postgres import PostgresResponseStore

        server: postgres.PostgresServer = request.getfixturevalue("postgres_server")
        url = server.create_database(f"store_{next(_databases)}")

        def open_one(max_stored: int = 10, max_age_s: float = 60) -> ResponseStore:
            opened.append(PostgresResponseStore(url, max_stored, max_age_s))
            return opened[-1]

    yield open_one
    import asyncio

    for store in opened:
        asyncio.run(store.close())
