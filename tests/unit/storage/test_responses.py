"""The response stores, SQLite and PostgreSQL alike (tests/unit/storage/conftest.py): what
they keep, for whom, for how long, and the chain a previous_response_id stands for."""

from __future__ import annotations

import asyncio
import time

import pytest

from app.storage.responses import ChainBroken, StoredResponse
from tests.unit.storage.conftest import OpenStore


def record(
    rid: str,
    previous: str | None = None,
    owner: str | None = None,
    status: str = "completed",
    age: float = 0.0,
) -> StoredResponse:
    return StoredResponse(
        id=rid,
        owner=owner,
        created_at=time.time() - age,
        status=status,
        previous_id=previous,
        response={"id": rid, "status": status, "output": [{"id": f"out-{rid}"}]},
        input=[{"id": f"in-{rid}"}],
    )


def test_a_chain_is_every_item_oldest_first(open_store: OpenStore) -> None:
    store = open_store()
    for rid, previous in (("a", None), ("b", "a"), ("c", "b")):
        asyncio.run(store.put(record(rid, previous)))
    chain = asyncio.run(store.chain("c", None))
    assert [item["id"] for item in chain] == ["in-a", "out-a", "in-b", "out-b", "in-c", "out-c"]
    asyncio.run(store.delete("a", None))
    with pytest.raises(ChainBroken) as broken:
        asyncio.run(store.chain("c", None))
    assert broken.value.args[0] == "a"


def test_responses_are_their_owners(open_store: OpenStore) -> None:
    store = open_store()
    asyncio.run(store.put(record("a", owner="key1")))
    assert asyncio.run(store.get("a", "key1")) is not None
    assert asyncio.run(store.get("a", "key2")) is None
    assert asyncio.run(store.get("a", None)) is None
    assert not asyncio.run(store.delete("a", "key2"))
    assert asyncio.run(store.delete("a", "key1"))


def test_the_oldest_go_first_by_count_and_age(open_store: OpenStore) -> None:
    store = open_store(max_stored=2)
    asyncio.run(store.put(record("old", age=120)))
    assert asyncio.run(store.get("old", None)) is None  # past its age, never served
    for rid, age in (("a", 3), ("b", 2), ("c", 1)):
        asyncio.run(store.put(record(rid, age=age)))
    assert [asyncio.run(store.get(r, None)) is not None for r in "abc"] == [False, True, True]


def test_a_restart_fails_what_was_running(open_store: OpenStore) -> None:
    store = open_store()
    asyncio.run(store.put(record("bg", status="in_progress")))
    asyncio.run(store.put(record("done")))
    asyncio.run(store.close())
    reopened = open_store()
    failed = asyncio.run(reopened.get("bg", None))
    assert failed is not None and failed.status == "failed"
    assert (
        failed.response["status"] == "failed" and failed.response["error"]["code"] == "server_error"
    )
    done = asyncio.run(reopened.get("done", None))
    assert done is not None and done.status == "completed"


def test_writers_at_once_keep_the_limits(open_store: OpenStore) -> None:
    """Puts that overlap (each in its own worker thread) all land, and pruning still
    leaves exactly the newest max_stored."""
    store = open_store(max_stored=20)

    async def write_all() -> None:
        await asyncio.gather(*(store.put(record(f"r{i:02d}", age=60 - i)) for i in range(50)))

    asyncio.run(write_all())
    kept = [asyncio.run(store.get(f"r{i:02d}", None)) is not None for i in range(50)]
    assert kept == [False] * 30 + [True] * 20
