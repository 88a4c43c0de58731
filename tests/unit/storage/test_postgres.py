"""What the PostgreSQL store does that SQLite's need not: several servers share it, so one
replica's start, or its death, touches only its own unfinished responses."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from app.storage.postgres import PostgresResponseStore
from bench.postgres import PostgresServer
from tests.unit.storage.test_responses import record


@pytest.fixture
def url(postgres_server: PostgresServer, request: pytest.FixtureRequest) -> str:
    return postgres_server.create_database(f"shared_{request.node.name.lower()}")


def test_a_replica_starting_leaves_its_peers_running_responses(url: str) -> None:
    first = PostgresResponseStore(url, 10, 60)
    asyncio.run(first.put(record("bg", status="in_progress")))
    second = PostgresResponseStore(url, 10, 60)  # another replica starts on the same store
    running = asyncio.run(second.get("bg", None))
    assert running is not None and running.status == "in_progress"
    asyncio.run(first.put(record("bg", status="completed")))
    done = asyncio.run(second.get("bg", None))
    assert done is not None and done.status == "completed"
    asyncio.run(first.close())
    asyncio.run(second.close())


def test_a_killed_replicas_running_response_fails_where_it_is_read(url: str) -> None:
    """A replica killed outright never closes its store; its connection drops, and the
    response it was running reads as failed on its peer, as after a restart."""
    import psycopg

    victim = PostgresResponseStore(url, 10, 60)
    asyncio.run(victim.put(record("bg", status="in_progress")))
    peer = PostgresResponseStore(url, 10, 60)
    pid = int(victim.runner.split(":")[0])
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        # Terminating is asynchronous: the session is gone once the server says so.
        deadline = time.monotonic() + 10
        while (
            time.monotonic() < deadline
            and admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
        ):
            time.sleep(0.01)
    failed = asyncio.run(peer.get("bg", None))
    assert failed is not None and failed.status == "failed"
    assert failed.response["error"]["code"] == "server_error"
    asyncio.run(peer.close())


def test_two_replicas_writing_and_pruning_at_once(url: str) -> None:
    """Two stores on one database, each writing from several threads while pruning to
    the same limit: no deadlock, no lost write beyond what the limit removes."""
    stores = [PostgresResponseStore(url, 25, 60) for _ in range(2)]
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            for i in range(10):
                asyncio.run(stores[n % 2].put(record(f"w{n}-{i}")))
        except BaseException as exc:  # collected: a thread's exception is otherwise lost
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    kept = sum(
        asyncio.run(stores[0].get(f"w{n}-{i}", None)) is not None
        for n in range(6)
        for i in range(10)
    )
    assert kept == 25
    for store in stores:
        asyncio.run(store.close())
