"""Stored Responses API responses (`store: true`): the response object, the input items it
was made from, and the link to the response it continues, so `previous_response_id` can
rebuild a conversation and GET /v1/responses/{id} can return it after a restart.

The store is behind a small protocol so a shared database can take SQLite's place for
replicas: SQLite (the standard library's) is the embedded default, PostgreSQL
(app/storage/postgres.py, `state_url`) the shared one. Every call runs in a worker thread:
the event loop never waits on the disk or the network."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

UNFINISHED = ("queued", "in_progress")


@dataclass
class StoredResponse:
    id: str
    owner: str | None  # the API key's fingerprint that created it; None without keys
    created_at: float
    status: str
    previous_id: str | None
    response: dict[str, Any]  # the response object as the API returns it
    input: list[dict[str, Any]]  # this request's own input items, each with an id

    def to_row(self) -> tuple[Any, ...]:
        """The columns, in from_row's order, as both stores insert them."""
        return (
            self.id,
            self.owner,
            self.created_at,
            self.status,
            self.previous_id,
            json.dumps(self.response, ensure_ascii=False),
            json.dumps(self.input, ensure_ascii=False),
        )

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> StoredResponse:
        """From a row of id, owner, created_at, status, previous_id, response, input (the
        last two JSON text), as both stores select them."""
        return cls(
            id=row[0],
            owner=row[1],
            created_at=row[2],
            status=row[3],
            previous_id=row[4],
            response=json.loads(row[5]),
            input=json.loads(row[6]),
        )


class ChainBroken(LookupError):
    """A response of the chain is not (or no longer) stored; args[0] is its id."""


class ResponseStore(Protocol):
    async def put(self, record: StoredResponse) -> None: ...

    async def get(self, response_id: str, owner: str | None) -> StoredResponse | None: ...

    async def delete(self, response_id: str, owner: str | None) -> bool: ...

    async def chain(self, response_id: str, owner: str | None) -> list[dict[str, Any]]:
        """The conversation a response ends: every input and output item of it and of the
        responses it continues, oldest first."""
        ...

    async def close(self) -> None: ...


def walk_chain(
    get: Callable[[str], StoredResponse | None], response_id: str
) -> list[dict[str, Any]]:
    """Every input and output item of a response and of those it continues, oldest first,
    each link read with `get`."""
    parts: list[list[dict[str, Any]]] = []
    seen: set[str] = set()
    current: str | None = response_id
    while current is not None:
        if current in seen:  # a cycle cannot be made through the API; refuse one anyway
            raise ChainBroken(current)
        seen.add(current)
        record = get(current)
        if record is None:
            raise ChainBroken(current)
        parts.append(record.input + list(record.response.get("output", [])))
        current = record.previous_id
    return [item for part in reversed(parts) for item in part]


_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    owner TEXT,
    created_at REAL NOT NULL,
    status TEXT NOT NULL,
    previous_id TEXT,
    response TEXT NOT NULL,
    input TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS responses_created ON responses (created_at);
"""


class SqliteResponseStore:
    """One connection guarded by a lock (writes are small; SQLite serializes them anyway),
    in WAL mode so a reader never waits on a writer."""

    def __init__(self, path: Path, max_stored: int, max_age_s: float) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_stored = max_stored
        self.max_age_s = max_age_s
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._fail_unfinished()

    def _fail_unfinished(self) -> None:
        """A background response the last server was running cannot resume: it failed."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, response FROM responses WHERE status IN (?, ?)", UNFINISHED
            ).fetchall()
            for response_id, text in rows:
                response = failed_by_restart(json.loads(text))
                self._db.execute(
                    "UPDATE responses SET status = 'failed', response = ? WHERE id = ?",
                    (json.dumps(response), response_id),
                )

    # ------------------------------------------------------------------ sync bodies

    def _put(self, record: StoredResponse) -> None:
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.execute(
                    "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?, ?)",
                    record.to_row(),
                )
                self._db.execute(
                    "DELETE FROM responses WHERE created_at < ?", (time.time() - self.max_age_s,)
                )
                self._db.execute(
                    "DELETE FROM responses WHERE id IN (SELECT id FROM responses "
                    "ORDER BY created_at DESC LIMIT -1 OFFSET ?)",
                    (self.max_stored,),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _get(self, response_id: str, owner: str | None) -> StoredResponse | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id, owner, created_at, status, previous_id, response, input "
                "FROM responses WHERE id = ? AND owner IS ? AND created_at >= ?",
                (response_id, owner, time.time() - self.max_age_s),
            ).fetchone()
        if row is None:
            return None
        return StoredResponse.from_row(row)

    def _delete(self, response_id: str, owner: str | None) -> bool:
        with self._lock:
            cursor = self._db.execute(
                "DELETE FROM responses WHERE id = ? AND owner IS ?", (response_id, owner)
            )
        return cursor.rowcount > 0

    def _chain(self, response_id: str, owner: str | None) -> list[dict[str, Any]]:
        return walk_chain(lambda rid: self._get(rid, owner), response_id)

    # ------------------------------------------------------------------ async API

    async def put(self, record: StoredResponse) -> None:
        await asyncio.to_thread(self._put, record)

    async def get(self, response_id: str, owner: str | None) -> StoredResponse | None:
        return await asyncio.to_thread(self._get, response_id, owner)

    async def delete(self, response_id: str, owner: str | None) -> bool:
        return await asyncio.to_thread(self._delete, response_id, owner)

    async def chain(self, response_id: str, owner: str | None) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self._chain, response_id, owner)

    async def close(self) -> None:
        with self._lock:
            self._db.close()


def open_store(
    state_dir: Path, max_stored: int, max_age_s: float, url: str | None = None
) -> ResponseStore:
    """PostgreSQL when a URL is given (replicas share it), else SQLite in state_dir."""
    if url:
        from app.storage.postgres import PostgresResponseStore

        return PostgresResponseStore(url, max_stored, max_age_s)
    return SqliteResponseStore(state_dir / "responses.sqlite3", max_stored, max_age_s)


def failed_by_restart(response: dict[str, Any]) -> dict[str, Any]:
    """A background response whose server stopped before it finished: it cannot resume."""
    return {
        **response,
        "status": "failed",
        "error": {
            "code": "server_error",
            "message": "The server restarted before this response finished.",
        },
    }
