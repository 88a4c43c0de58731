"""Stored responses on PostgreSQL (`state_url`), so that replicas share them: a
conversation one replica stored continues on whichever replica takes its next turn.

The semantics are the SQLite store's (app/storage/responses.py): a response is its owner's
only, a chain is read link by link, the oldest go first past the age and count limits. Two
things differ because several servers write at once:

- Pruning takes a transaction-scoped advisory lock, so replicas pruning at the same moment
  take turns instead of deadlocking on each other's rows.
- A background response that is still running belongs to the server running it. SQLite
  fails every unfinished response when its one server starts again; here a starting
  replica must not fail the ones its peers are running. Each store holds one connection
  open for its whole life and stamps the unfinished responses it writes with that
  connection's session (backend pid and start time); a response whose session PostgreSQL
  no longer has (its server stopped, or was killed and its connection dropped) is failed,
  when a store opens and when one reads it.

psycopg's calls block, so each runs in a worker thread on a connection of a small pool."""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from app.storage.responses import (
    UNFINISHED,
    StoredResponse,
    failed_by_restart,
    walk_chain,
)

if TYPE_CHECKING:
    import psycopg

logger = logging.getLogger(__name__)

T = TypeVar("T")

_POOL_SIZE = 4  # connections kept idle; more are opened while many calls overlap
# Advisory lock keys (any two bigints the deployment does not otherwise use).
_SCHEMA_LOCK = 0x6F7663_01
_PRUNE_LOCK = 0x6F7663_02
# A session as pg_stat_activity names it, the same text on every server.
_SESSION = "pid::text || ':' || extract(epoch FROM backend_start)::text"
_LIVE = f"SELECT {_SESSION} FROM pg_stat_activity WHERE backend_start IS NOT NULL"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    owner TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    status TEXT NOT NULL,
    previous_id TEXT,
    response TEXT NOT NULL,
    input TEXT NOT NULL,
    runner TEXT
);
CREATE INDEX IF NOT EXISTS responses_created ON responses (created_at);
"""
# TEXT, not JSONB: the response object goes back to clients with its keys in their order.


class PostgresResponseStore:
    def __init__(self, url: str, max_stored: int, max_age_s: float) -> None:
        import psycopg

        self.url = url
        self.max_stored = max_stored
        self.max_age_s = max_age_s
        self._idle: queue.SimpleQueue[psycopg.Connection[Any]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        # Held for the store's life: while it is open, the responses this server runs are
        # known to be running (see the module's docstring).
        self._presence = psycopg.connect(url, autocommit=True)
        row = self._presence.execute(
            f"SELECT {_SESSION} FROM pg_stat_activity WHERE pid = pg_backend_pid()"
        ).fetchone()
        assert row is not None
        self.runner: str = row[0]
        self._run(self._create_schema)
        failed = self._run(self._fail_orphans)
        if failed:
            logger.info("%d background response(s) of stopped servers marked failed", failed)

    # ------------------------------------------------------------------ connections

    def _connect(self) -> psycopg.Connection[Any]:
        import psycopg

        return psycopg.connect(self.url, autocommit=True)

    def _run(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        """`work` in one transaction on a pooled connection; a broken one is dropped."""
        try:
            db = self._idle.get_nowait()
        except queue.Empty:
            db = self._connect()
        try:
            with db.transaction():
                result = work(db)
        except BaseException:
            if db.broken or db.closed:
                db.close()
            else:
                self._give_back(db)
            raise
        self._give_back(db)
        return result

    def _give_back(self, db: psycopg.Connection[Any]) -> None:
        with self._lock:
            if self._closed or self._idle.qsize() >= _POOL_SIZE:
                db.close()
            else:
                self._idle.put(db)

    # ------------------------------------------------------------------ sync bodies

    @staticmethod
    def _create_schema(db: psycopg.Connection[Any]) -> None:
        # Replicas starting together would race on CREATE TABLE IF NOT EXISTS.
        db.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        for statement in filter(str.strip, _SCHEMA.split(";")):
            db.execute(statement)

    def _fail_orphans(self, db: psycopg.Connection[Any], only: str | None = None) -> int:
        """Unfinished responses whose server's session is gone (only `only`, if given)."""
        rows = db.execute(
            "SELECT id, response FROM responses WHERE status = ANY(%s) "
            f"AND (runner IS NULL OR runner NOT IN ({_LIVE})) "
            "AND (%s::text IS NULL OR id = %s) FOR UPDATE OF responses",
            (list(UNFINISHED), only, only),
        ).fetchall()
        for response_id, text in rows:
            db.execute(
                "UPDATE responses SET status = 'failed', response = %s, runner = NULL "
                "WHERE id = %s",
                (json.dumps(failed_by_restart(json.loads(text))), response_id),
            )
        return len(rows)

    def _put(self, db: psycopg.Connection[Any], record: StoredResponse) -> None:
        db.execute(
            "INSERT INTO responses VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (id) DO UPDATE SET owner = EXCLUDED.owner, "
            "created_at = EXCLUDED.created_at, status = EXCLUDED.status, "
            "previous_id = EXCLUDED.previous_id, response = EXCLUDED.response, "
            "input = EXCLUDED.input, runner = EXCLUDED.runner",
            (*record.to_row(), self.runner if record.status in UNFINISHED else None),
        )
        db.execute("SELECT pg_advisory_xact_lock(%s)", (_PRUNE_LOCK,))
        db.execute("DELETE FROM responses WHERE created_at < %s", (time.time() - self.max_age_s,))
        db.execute(
            "DELETE FROM responses WHERE id IN (SELECT id FROM responses "
            "ORDER BY created_at DESC OFFSET %s)",
            (self.max_stored,),
        )

    def _get(
        self, db: psycopg.Connection[Any], response_id: str, owner: str | None
    ) -> StoredResponse | None:
        query = (
            "SELECT id, owner, created_at, status, previous_id, response, input FROM responses "
            "WHERE id = %s AND owner IS NOT DISTINCT FROM %s AND created_at >= %s"
        )
        args = (response_id, owner, time.time() - self.max_age_s)
        row = db.execute(query, args).fetchone()
        if row is not None and row[3] in UNFINISHED and self._fail_orphans(db, response_id):
            row = db.execute(query, args).fetchone()
        if row is None:
            return None
        return StoredResponse.from_row(row)

    def _delete(self, db: psycopg.Connection[Any], response_id: str, owner: str | None) -> bool:
        cursor = db.execute(
            "DELETE FROM responses WHERE id = %s AND owner IS NOT DISTINCT FROM %s",
            (response_id, owner),
        )
        return cursor.rowcount > 0

    def _chain(
        self, db: psycopg.Connection[Any], response_id: str, owner: str | None
    ) -> list[dict[str, Any]]:
        return walk_chain(lambda rid: self._get(db, rid, owner), response_id)

    # ------------------------------------------------------------------ async API

    async def put(self, record: StoredResponse) -> None:
        await asyncio.to_thread(self._run, lambda db: self._put(db, record))

    async def get(self, response_id: str, owner: str | None) -> StoredResponse | None:
        return await asyncio.to_thread(self._run, lambda db: self._get(db, response_id, owner))

    async def delete(self, response_id: str, owner: str | None) -> bool:
        return await asyncio.to_thread(self._run, lambda db: self._delete(db, response_id, owner))

    async def chain(self, response_id: str, owner: str | None) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self._run, lambda db: self._chain(db, response_id, owner))

    async def close(self) -> None:
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        with self._lock:
            self._closed = True
            while True:
                try:
                    self._idle.get_nowait().close()
                except queue.Empty:
                    break
        self._presence.close()
