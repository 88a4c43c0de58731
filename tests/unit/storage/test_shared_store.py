"""Two servers given one `state_url` are replicas of one Responses API: a conversation
stored through one continues through the other, and stays its owner's."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from app.server import create_app
from app.settings import Settings
from app.textmodel import TextModel
from bench.postgres import PostgresServer
from tests.unit.fakes import FakeEngine


def test_a_conversation_continues_on_another_replica(
    postgres_server: PostgresServer,
    tiny_model_dir: Path,
    engine: FakeEngine,
    text_model: TextModel,
    tmp_path: Path,
) -> None:
    url = postgres_server.create_database("replicas")

    def replica(n: int) -> TestClient:
        settings = Settings(
            model=str(tiny_model_dir),
            served_model_name="tiny",
            state_url=url,
            state_dir=tmp_path / f"replica{n}",  # each its own folder: nothing shared there
            api_key=["sk-a", "sk-b"],
        )
        return TestClient(create_app(settings, engine_factory=lambda _s, _m: engine))

    a_key = {"Authorization": "Bearer sk-a"}
    with replica(1) as first, replica(2) as second:
        turn1 = first.post(
            "/v1/responses", headers=a_key, json={"model": "tiny", "input": "Hello there"}
        )
        assert turn1.status_code == 200
        first_id = turn1.json()["id"]
        turn2 = second.post(
            "/v1/responses",
            headers=a_key,
            json={"model": "tiny", "input": "And then?", "previous_response_id": first_id},
        )
        assert turn2.status_code == 200, turn2.text
        # The second replica's prompt holds the first turn, read from the shared store.
        prompt = text_model.decode(engine.calls[-1][0])
        assert "Hello there" in prompt and "And then?" in prompt
        assert turn1.json()["output"][0]["content"][0]["text"] in prompt
        items = second.get(f"/v1/responses/{first_id}/input_items", headers=a_key).json()
        assert [item["content"][0]["text"] for item in items["data"]] == ["Hello there"]
        assert first.get(f"/v1/responses/{turn2.json()['id']}", headers=a_key).status_code == 200
        other = {"Authorization": "Bearer sk-b"}
        assert second.get(f"/v1/responses/{first_id}", headers=other).status_code == 404
    assert not (tmp_path / "replica1" / "responses.sqlite3").exists()
