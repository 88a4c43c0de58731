from __future__ import annotations

from fastapi.testclient import TestClient

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
    assert client.get("/health").json() == {
        "status": "ok",
        "model": "tiny",
        "engine": "fake",
        "in_flight": 0,
        "engine_running": 0,
        "draining": False,
    }
    engine.ready = False
    assert client.get("/health").status_code == 503
    assert client.get("/health/live").status_code == 200


def test_unknown_route_is_openai_shaped_404(client: TestClient) -> None:
    response = client.get("/v1/nothing")
    assert response.status_code == 404
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_openapi_describes_endpoints(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/chat/completions", "/v1/models", "/health"} <= set(paths)
