from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.modelstore.store import ResolvedModel
from app.server import create_app
from app.settings import Settings
from tests.unit.fakes import FakeEngine


def test_models_lists_the_served_model(client: TestClient) -> None:
    body = client.get("/v1/models").json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["tiny"]
    assert body["data"][0]["object"] == "model"
    assert client.get("/v1/models/tiny").json()["id"] == "tiny"


def test_other_model_is_404(client: TestClient) -> None:
    response = client.get("/v1/models/gpt-4")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


def test_health_follows_engine(client: TestClient, engine: FakeEngine) -> None:
    body = client.get("/health").json()
    # The fake engine has no process of its own: what its weights take on disk, and more.
    assert body["models"]["tiny"].pop("memory_bytes") > 256 * 1024**2
    assert body == {
        "status": "ok",
        "in_flight": 0,
        "draining": False,
        "models": {
            "tiny": {
                "status": "loaded",
                "kind": "generation",
                "ready": True,
                "engine": "fake",
                "in_flight": 0,
                "engine_running": 0,
                "pid": None,
                "last_error": None,
            }
        },
    }
    engine.ready = False
    assert client.get("/health").status_code == 503
    assert client.get("/health").json()["models"]["tiny"]["ready"] is False
    assert client.get("/health/live").status_code == 200


def test_unknown_route_is_openai_shaped_404(client: TestClient) -> None:
    response = client.get("/v1/nothing")
    assert response.status_code == 404
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_openapi_describes_endpoints(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/chat/completions", "/v1/models", "/health"} <= set(paths)


@pytest.fixture
def two_models(tiny_model_dir: Path, window_model_dir: Path) -> Iterator[TestClient]:
    """Two chat models, the second loaded on its first request; an admin key and a user
    key; every load gets a new scripted engine."""
    settings = Settings(
        model=[str(tiny_model_dir), str(window_model_dir)],
        preload="first",
        api_key=["sk-user"],
        admin_key=["sk-admin"],
    )
    engines: list[FakeEngine] = []

    def factory(_: Settings, __: ResolvedModel) -> FakeEngine:
        engines.append(FakeEngine(reply_ids=[5, 6, 7], eos_id=2))
        return engines[-1]

    with TestClient(create_app(settings, engine_factory=factory)) as client:
        client.engines = engines  # type: ignore[attr-defined]
        yield client


USER = {"Authorization": "Bearer sk-user"}
ADMIN = {"Authorization": "Bearer sk-admin"}


def test_models_says_what_each_serves_and_whether_it_is_loaded(two_models: TestClient) -> None:
    cards = two_models.get("/v1/models", headers=USER).json()["data"]
    assert [(c["id"], c["status"], c["kind"]) for c in cards] == [
        ("tiny-phi3", "loaded", "generation"),
        ("tiny-phi3-window", "unloaded", "generation"),
    ]
    assert cards[0]["endpoints"] == [
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/responses",
        "/v1/messages",
    ]
    assert cards[0]["context_length"] == 4096
    assert two_models.get("/v1/models/tiny-phi3-window", headers=USER).json() == cards[1]


def test_a_request_loads_its_model_and_is_routed_by_name(two_models: TestClient) -> None:
    body = {"model": "tiny-phi3-window", "messages": [{"role": "user", "content": "hi"}]}
    response = two_models.post("/v1/chat/completions", json=body, headers=USER)
    assert response.status_code == 200
    assert response.json()["model"] == "tiny-phi3-window"
    engines: list[FakeEngine] = two_models.engines  # type: ignore[attr-defined]
    assert [len(e.calls) for e in engines] == [0, 1]
    assert two_models.get("/v1/models/tiny-phi3-window", headers=USER).json()["status"] == "loaded"
    health = two_models.get("/health").json()["models"]
    assert [m["status"] for m in health.values()] == ["loaded", "loaded"]


def test_the_admin_endpoints_take_only_the_admin_key(two_models: TestClient) -> None:
    body = {"model": "tiny-phi3"}
    refused = two_models.post("/models/unload", json=body, headers=USER)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_api_key"
    unloaded = two_models.post("/models/unload", json=body, headers=ADMIN)
    assert unloaded.status_code == 200
    assert unloaded.json()["status"] == "unloaded"
    engines: list[FakeEngine] = two_models.engines  # type: ignore[attr-defined]
    assert not engines[0].ready  # closed
    loaded = two_models.post("/models/load", json=body, headers=ADMIN)
    assert loaded.json()["status"] == "loaded"
    # Both models' engines were built (so checked) at startup; a reload builds a new one.
    assert len(engines) == 3 and engines[2].ready
    missing = two_models.post("/models/load", json={"model": "nope"}, headers=ADMIN)
    assert missing.status_code == 404
    # The admin key opens the user's endpoints too.
    assert two_models.get("/v1/models", headers=ADMIN).status_code == 200


def test_without_an_admin_key_the_admin_endpoints_are_closed(client: TestClient) -> None:
    response = client.post("/models/unload", json={"model": "tiny"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "admin_disabled"
    assert client.get("/v1/models").json()["data"][0]["status"] == "loaded"
