"""Keys as either API's SDKs send them, and errors before the app in the shape of the API
the path belongs to."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.modelstore.store import ResolvedModel
from app.server import create_app
from app.settings import Settings
from tests.unit.fakes import FakeEngine

CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def keyed(tiny_model_dir: Path, engine: FakeEngine) -> Iterator[TestClient]:
    settings = Settings(
        model=str(tiny_model_dir), served_model_name="tiny", api_key=["sk-a"], max_body_bytes=4096
    )

    def factory(_: Settings, __: ResolvedModel) -> FakeEngine:
        return engine

    with TestClient(create_app(settings, engine_factory=factory)) as test_client:
        yield test_client


def test_x_api_key_is_a_key_as_bearer_is(keyed: TestClient) -> None:
    assert keyed.post("/v1/chat/completions", json=CHAT).status_code == 401
    assert (
        keyed.post("/v1/chat/completions", json=CHAT, headers={"x-api-key": "no"}).status_code
        == 401
    )
    assert (
        keyed.post("/v1/chat/completions", json=CHAT, headers={"x-api-key": "sk-a"}).status_code
        == 200
    )
    bearer = {"authorization": "Bearer sk-a"}
    assert keyed.post("/v1/chat/completions", json=CHAT, headers=bearer).status_code == 200


def test_errors_before_the_app_take_the_paths_shape(keyed: TestClient) -> None:
    openai = keyed.post("/v1/chat/completions", json=CHAT)
    assert openai.json()["error"]["code"] == "invalid_api_key"
    anthropic = keyed.post("/v1/messages?beta=true", json={}, headers={"x-request-id": "r-1"})
    assert anthropic.status_code == 401
    assert anthropic.json() == {
        "type": "error",
        "error": {"type": "authentication_error", "message": openai.json()["error"]["message"]},
        "request_id": "r-1",
    }
    big = keyed.post("/v1/messages", content=b"x" * 5000, headers={"x-api-key": "sk-a"})
    assert big.status_code == 413
    assert big.json()["error"]["type"] == "request_too_large"
