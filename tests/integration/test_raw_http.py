"""The wire format itself, byte level: what curl and non-SDK clients see."""

from __future__ import annotations

import json

import httpx

from app.modelstore.tiny_phi3 import TINY_REPLY
from tests.integration.conftest import Server

BODY = {"model": "tiny-phi3", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}


def test_sse_wire_format(tiny_server: Server) -> None:
    with httpx.stream(
        "POST", f"{tiny_server.url}/v1/chat/completions", json=BODY | {"stream": True}, timeout=60
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-request-id"]
        raw = b"".join(response.iter_bytes()).decode()
    events = [e for e in raw.split("\n\n") if e.strip() and not e.startswith(":")]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e[len("data: ") :]) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == TINY_REPLY
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    for chunk in chunks:
        assert set(chunk) == {"id", "object", "created", "model", "system_fingerprint", "choices"}


def test_json_response_headers_and_request_id(tiny_server: Server) -> None:
    response = httpx.post(
        f"{tiny_server.url}/v1/chat/completions",
        json=BODY,
        headers={"x-request-id": "req-42"},
        timeout=60,
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"] == "req-42"
    assert response.json()["choices"][0]["message"]["content"] == TINY_REPLY


def test_errors_are_openai_shaped(tiny_server: Server) -> None:
    cases = [
        (b"{broken", 400),
        (json.dumps(BODY | {"model": "nope"}).encode(), 404),
        (json.dumps(BODY | {"messages": [{"role": "robot", "content": "x"}]}).encode(), 400),
        (json.dumps(BODY | {"temperature": -1}).encode(), 400),
    ]
    for content, status in cases:
        response = httpx.post(
            f"{tiny_server.url}/v1/chat/completions",
            content=content,
            headers={"content-type": "application/json"},
            timeout=30,
        )
        assert response.status_code == status, response.text
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_health_and_models(tiny_server: Server) -> None:
    assert httpx.get(f"{tiny_server.url}/health").json()["status"] == "ok"
    assert httpx.get(f"{tiny_server.url}/health/live").status_code == 200
    assert httpx.get(f"{tiny_server.url}/v1/models").json()["data"][0]["id"] == "tiny-phi3"


def test_metrics_parse_and_move(tiny_server: Server) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    def read() -> dict[str, float]:
        text = httpx.get(f"{tiny_server.url}/metrics").text
        return {
            s.name: s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.labels in ({}, {"model": tiny_server.model})
        }

    before = read()
    httpx.post(f"{tiny_server.url}/v1/chat/completions", json=BODY, timeout=60)
    after = read()
    assert after["ovchat_engine_step_seconds_count"] > before.get(
        "ovchat_engine_step_seconds_count", 0
    )
    assert (
        after["ovchat_generation_tokens_total"] - before.get("ovchat_generation_tokens_total", 0)
        == 29
    )
