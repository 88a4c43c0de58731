"""The model pool's decisions, driven with models that load instantly (or when told)."""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from app.admission import Admission
from app.engine.base import EngineStats
from app.errors import ApiError
from app.modelstore import store
from app.modelstore.store import ResolvedModel
from app.pool import GIB, Loaded, ModelPool, weights_bytes
from app.settings import Settings

# anyio's pytest plugin (anyio comes with Starlette) runs the coroutine tests.
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Model:
    id: str
    memory: int = GIB
    admission: Admission = field(default_factory=lambda: Admission(4, 4))
    closed: bool = False
    draining: bool = False

    @property
    def engine_name(self) -> str:
        return "fake"

    def in_flight(self) -> int:
        return self.admission.in_flight

    def is_ready(self) -> bool:
        return not self.closed

    def stats(self) -> EngineStats:
        return EngineStats()

    def pid(self) -> int | None:
        return None

    def memory_bytes(self) -> int | None:
        return self.memory

    def drain(self) -> None:
        self.draining = True

    async def close(self) -> None:
        self.closed = True


@dataclass
class Loader:
    """Loads instantly, unless `gate` is set: then each load waits for it."""

    made: list[Model] = field(default_factory=list)
    gate: asyncio.Event | None = None
    fail: str | None = None

    async def __call__(self, source: ResolvedModel, served_id: str) -> Loaded:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise RuntimeError(self.fail)
        model = Model(served_id)
        self.made.append(model)
        return model


@pytest.fixture
def sources(tmp_path: Path, tiny_model_dir: Path) -> list[ResolvedModel]:
    found = []
    for name in ("a", "b", "c"):
        folder = store.model_dir(tmp_path, name)
        shutil.copytree(tiny_model_dir, folder)
        found.append(ResolvedModel(name, folder, "test"))
    return found


def pool_of(sources: list[ResolvedModel], loader: Loader, **settings: object) -> ModelPool:
    return ModelPool(Settings(**settings), sources, {"generation": loader})  # type: ignore[arg-type]


async def use(pool: ModelPool, name: str) -> Model:
    async with pool.use(name, "generation") as (loaded, _):
        assert isinstance(loaded, Model)
        return loaded


async def test_preload_first_loads_the_rest_on_demand(sources: list[ResolvedModel]) -> None:
    loader = Loader()
    pool = pool_of(sources, loader, preload="first")
    await pool.start()
    assert [m.status for m in pool.models.values()] == ["loaded", "unloaded", "unloaded"]
    assert (await use(pool, "b")).id == "b"
    assert [m.id for m in loader.made] == ["a", "b"]
    assert pool.get("b").status == "loaded"
    assert (await use(pool, "b")) is loader.made[1]  # loaded once
    await pool.close()
    assert all(m.closed for m in loader.made)


async def test_unknown_model_and_wrong_kind(sources: list[ResolvedModel]) -> None:
    pool = pool_of(sources, Loader(), preload="none")
    with pytest.raises(ApiError) as unknown:
        await use(pool, "nope")
    assert (unknown.value.status, unknown.value.body.code) == (404, "model_not_found")
    assert "'a', 'b', 'c'" in unknown.value.body.message
    with pytest.raises(ApiError) as wrong:
        async with pool.use("a", "embedding"):
            pass
    assert (wrong.value.status, wrong.value.body.code) == (400, "model_not_supported")


async def test_the_cap_unloads_the_least_recently_used_idle_model(
    sources: list[ResolvedModel],
) -> None:
    loader = Loader()
    pool = pool_of(sources, loader, preload="all", max_loaded_models=2)
    await pool.start()
    assert [m.status for m in pool.models.values()] == ["loaded", "loaded", "unloaded"]
    await use(pool, "a")  # b is now the least recently used
    await use(pool, "c")
    assert [m.status for m in pool.models.values()] == ["loaded", "unloaded", "loaded"]
    assert loader.made[1].closed and not loader.made[0].closed
    await pool.close()


async def test_a_model_never_unloads_under_a_request(sources: list[ResolvedModel]) -> None:
    loader = Loader()
    pool = pool_of(sources, loader, preload="none", max_loaded_models=1)
    async with pool.use("a", "generation") as (a, lease):
        # The stream outlives the route: its admission ticket holds the model.
        ticket = a.admission.admit(1)  # type: ignore[attr-defined]
        lease.keep_until(ticket)
    with pytest.raises(ApiError) as busy:
        await use(pool, "b")
    assert (busy.value.status, busy.value.body.code) == (503, "model_capacity")
    assert busy.value.headers == {"Retry-After": "5"}
    with pytest.raises(ApiError) as refused:
        await pool.unload("a")
    assert (refused.value.status, refused.value.body.code) == (409, "model_busy")
    ticket.release()
    await use(pool, "b")
    assert pool.get("a").status == "unloaded"
    await pool.close()


async def test_the_memory_budget_counts_what_each_model_takes(
    sources: list[ResolvedModel],
) -> None:
    loader = Loader()
    # Each fake model measures 1 GiB once loaded; before, it is reckoned at its weights
    # plus 256 MiB. Two loaded ones leave no room for that in 2.1 GiB.
    pool = pool_of(sources, loader, preload="none", models_memory_gb=2.1)
    await use(pool, "a")
    await use(pool, "b")
    assert pool.used_bytes() == 2 * GIB
    await use(pool, "c")
    assert [m.status for m in pool.models.values()] == ["unloaded", "loaded", "loaded"]
    assert pool.get("a").footprint() == weights_bytes(pool.get("a").source) + 256 * 1024**2
    await pool.close()


async def test_keep_alive_unloads_an_idle_model(sources: list[ResolvedModel]) -> None:
    loader = Loader()
    pool = pool_of(sources, loader, preload="first", keep_alive=-1)
    await pool.start()
    async with pool.use("b", "generation", keep_alive_s=0.0):
        pass
    await asyncio.sleep(0.8)  # the reaper looks twice a second
    assert pool.get("b").status == "unloaded" and loader.made[1].closed
    assert pool.get("a").status == "loaded"  # the server's default: never for idleness
    await pool.close()


async def test_a_slow_load_answers_503_and_goes_on(sources: list[ResolvedModel]) -> None:
    loader = Loader(gate=asyncio.Event())
    pool = pool_of(sources, loader, preload="none", load_timeout_s=0.2)
    with pytest.raises(ApiError) as slow:
        await use(pool, "a")
    assert (slow.value.status, slow.value.body.code) == (503, "model_loading")
    assert slow.value.headers == {"Retry-After": "5"}
    assert pool.get("a").status == "loading"
    loader.gate.set()  # type: ignore[union-attr]
    assert (await use(pool, "a")).id == "a"
    assert len(loader.made) == 1  # the second request joined the same load
    await pool.close()


async def test_a_failed_load_is_503_and_the_next_request_retries(
    sources: list[ResolvedModel],
) -> None:
    loader = Loader(fail="no such device")
    pool = pool_of(sources, loader, preload="none")
    with pytest.raises(ApiError) as failed:
        await use(pool, "a")
    assert (failed.value.status, failed.value.body.code) == (503, "model_load_failed")
    assert "no such device" in failed.value.body.message
    assert pool.get("a").status == "unloaded"
    assert pool.get("a").last_error == "no such device"
    loader.fail = None
    await use(pool, "a")
    assert pool.get("a").last_error is None
    await pool.close()


async def test_admin_load_and_unload(sources: list[ResolvedModel]) -> None:
    loader = Loader()
    pool = pool_of(sources, loader, preload="none")
    assert (await pool.load("c")).status == "loaded"
    assert (await pool.unload("c")).status == "unloaded"
    assert loader.made[0].closed
    await pool.close()


async def test_draining_refuses_new_work_and_drains_loaded_models(
    sources: list[ResolvedModel],
) -> None:
    loader = Loader()
    pool = pool_of(sources, loader, preload="first")
    await pool.start()
    assert pool.drain() == 0
    assert loader.made[0].draining
    with pytest.raises(ApiError) as refused:
        await use(pool, "b")
    assert (refused.value.status, refused.value.body.code) == (503, "server_shutting_down")
    await pool.close()


def test_one_served_name_for_one_model(sources: list[ResolvedModel]) -> None:
    with pytest.raises(ValueError, match="one model"):
        pool_of(sources, Loader(), served_model_name="x")
    assert list(pool_of(sources[:1], Loader(), served_model_name="x").models) == ["x"]
