"""POST /v1/messages and /v1/messages/count_tokens through the HTTP layer, on the scripted
engine: Anthropic's message and stream shapes, tools, and errors in Anthropic's shape."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.chat_format import Turn
from app.core import sse
from app.core.tools import render_result
from app.textmodel import TextModel
from tests.unit.conftest import REPLY
from tests.unit.fakes import FakeEngine

USER = [{"role": "user", "content": "What is the capital of France?"}]
UNIT = {
    "name": "get_unit",
    "description": "The unit to report temperatures in",
    "input_schema": {
        "type": "object",
        "properties": {"unit": {"enum": ["celsius", "fahrenheit"]}},
        "required": ["unit"],
    },
}
CALL = '{"tool_calls": [{"name": "get_unit", "arguments": {"unit": "celsius"}}]}'


def create(client: TestClient, path: str = "/v1/messages", **body: Any) -> Any:
    return client.post(path, json={"model": "tiny", "max_tokens": 100, "messages": USER} | body)


def stream(client: TestClient, **body: Any) -> list[tuple[str, dict[str, Any]]]:
    """The stream's events as (event name, data), every one checked to be well formed."""
    with client.stream(
        "POST",
        "/v1/messages",
        json={"model": "tiny", "max_tokens": 100, "messages": USER, "stream": True} | body,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        text = "".join(response.iter_text())
    return parse_events(text)


def parse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for frame in text.split("\n\n"):
        if not frame:
            continue
        name, data = frame.split("\n")
        assert name.startswith("event: ") and data.startswith("data: ")
        payload = json.loads(data[len("data: ") :])
        assert payload["type"] == name[len("event: ") :]
        events.append((payload["type"], payload))
    return events


def user_prompt(text_model: TextModel, *turns: Turn) -> list[int]:
    return text_model.encode_chat(list(turns))


def test_message_shape_and_exact_usage(client: TestClient, text_model: TextModel) -> None:
    response = create(client, temperature=0)
    assert response.status_code == 200
    body = response.json()
    assert body["id"].startswith("msg_") and len(body["id"]) == len("msg_") + 32
    prompt_tokens = len(user_prompt(text_model, Turn("user", USER[0]["content"])))
    assert body == {
        "id": body["id"],
        "type": "message",
        "role": "assistant",
        "model": "tiny",
        "content": [{"type": "text", "text": REPLY}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": prompt_tokens,
            "output_tokens": len(text_model.encode(REPLY)) + 1,  # and the eos token
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def test_the_engine_gets_the_conversation_and_the_sampling(
    client: TestClient, engine: FakeEngine, text_model: TextModel
) -> None:
    create(
        client,
        system="Be brief.",
        messages=[{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
        temperature=0,
        top_k=5,
        max_tokens=7,
    )
    prompt_ids, params = engine.calls[-1]
    assert prompt_ids == user_prompt(text_model, Turn("system", "Be brief."), Turn("user", "Hi"))
    assert params.max_new_tokens == 7 and params.greedy and params.top_k == 5


def test_the_stream_is_anthropics_event_sequence(client: TestClient, text_model: TextModel) -> None:
    events = stream(client)
    names = [name for name, _ in events]
    deltas = len(names) - 6
    assert names == [
        "message_start",
        "ping",
        "content_block_start",
        *["content_block_delta"] * deltas,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert deltas > 5  # token by token, not in one piece
    start = events[0][1]["message"]
    prompt_tokens = len(user_prompt(text_model, Turn("user", USER[0]["content"])))
    assert start["content"] == [] and start["stop_reason"] is None
    assert start["usage"]["input_tokens"] == prompt_tokens
    assert events[2][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    texts = [e["delta"]["text"] for _, e in events[3:-3]]
    assert all(e["delta"]["type"] == "text_delta" and e["index"] == 0 for _, e in events[3:-3])
    assert "".join(texts) == REPLY
    assert events[-3][1] == {"type": "content_block_stop", "index": 0}
    assert events[-2][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {
            "input_tokens": prompt_tokens,
            "output_tokens": len(text_model.encode(REPLY)) + 1,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def test_stream_equals_whole(client: TestClient) -> None:
    for extra in ({}, {"stop_sequences": ["capital of"]}, {"max_tokens": 5}):
        whole = create(client, **extra).json()
        events = stream(client, **extra)
        text = "".join(e["delta"]["text"] for name, e in events if name == "content_block_delta")
        assert [{"type": "text", "text": text}] == whole["content"]
        assert events[-2][1]["delta"] == {
            "stop_reason": whole["stop_reason"],
            "stop_sequence": whole["stop_sequence"],
        }
        assert events[-2][1]["usage"]["output_tokens"] == whole["usage"]["output_tokens"]


def test_stop_sequence_and_max_tokens(client: TestClient, text_model: TextModel) -> None:
    stopped = create(client, stop_sequences=["Paris", "zzz"]).json()
    assert stopped["content"] == [{"type": "text", "text": "Hello! The capital of France is "}]
    assert (stopped["stop_reason"], stopped["stop_sequence"]) == ("stop_sequence", "Paris")
    cut = create(client, max_tokens=3).json()
    assert (cut["stop_reason"], cut["stop_sequence"]) == ("max_tokens", None)
    assert cut["usage"]["output_tokens"] == 3
    assert cut["content"][0]["text"] == text_model.decode(text_model.encode(REPLY)[:3])


def test_a_forced_tool_use_streams_its_input(
    client: TestClient, engine: FakeEngine, text_model: TextModel
) -> None:
    engine.reply_ids = text_model.encode(CALL)
    choice = {"type": "tool", "name": "get_unit"}
    events = stream(client, tools=[UNIT], tool_choice=choice)
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    block = events[2][1]["content_block"]
    assert block["type"] == "tool_use" and block["id"].startswith("toolu_")
    assert block == {"type": "tool_use", "id": block["id"], "name": "get_unit", "input": {}}
    fragments = [e["delta"] for _, e in events[3:-3]]
    assert len(fragments) > 3 and all(f["type"] == "input_json_delta" for f in fragments)
    assert "".join(f["partial_json"] for f in fragments) == '{"unit":"celsius"}'
    assert events[-2][1]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    whole = create(client, tools=[UNIT], tool_choice=choice).json()
    [call] = whole["content"]
    assert call["name"] == "get_unit" and call["input"] == {"unit": "celsius"}
    assert whole["stop_reason"] == "tool_use"
    schema = json.loads(engine.calls[-1][1].json_schema or "")
    assert schema["properties"]["tool_calls"]["maxItems"] == 1


def test_a_tool_result_goes_back_to_the_model(
    client: TestClient, engine: FakeEngine, text_model: TextModel
) -> None:
    response = create(
        client,
        tools=[UNIT],
        messages=[
            *USER,
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "toolu_9", "name": "get_unit", "input": {}}],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_9", "content": "19 C"}],
            },
        ],
    )
    assert response.status_code == 200
    assert response.json()["content"] == [{"type": "text", "text": REPLY}]
    assert render_result("get_unit", "19 C") in text_model.decode(engine.calls[-1][0])


def test_count_tokens_equals_the_creates_input_tokens(client: TestClient) -> None:
    body = {
        "model": "tiny",
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "messages": USER,
        "tools": [UNIT],
        "tool_choice": {"type": "auto"},
    }
    counted = client.post("/v1/messages/count_tokens", json=body)
    assert counted.status_code == 200
    created = client.post("/v1/messages", json=body | {"max_tokens": 50}).json()
    assert counted.json() == {"input_tokens": created["usage"]["input_tokens"]}
    assert counted.json()["input_tokens"] > 100  # the tools' description is in it


CLAUDE_CODE_BODY: dict[str, Any] = {
    "model": "tiny",
    "max_tokens": 1024,
    "stream": True,
    "system": [
        {"type": "text", "text": "You are Claude Code."},
        {"type": "text", "text": "Be useful.", "cache_control": {"type": "ephemeral"}},
    ],
    "messages": [
        {"role": "system", "content": "Project notes."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "<system-reminder>x</system-reminder>"},
                {"type": "text", "text": "list files", "cache_control": {"type": "ephemeral"}},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls"}}
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "is_error": False,
                    "cache_control": {"type": "ephemeral"},
                    "content": [{"type": "text", "text": "a.py"}],
                }
            ],
        },
    ],
    "tools": [
        {
            "name": "Bash",
            "description": "Run a command",
            "input_schema": {
                "type": "object",
                "properties": {"command": {"type": "string"}},
                "required": ["command"],
                "additionalProperties": False,
                "$schema": "http://json-schema.org/draft-07/schema#",
            },
        },
        {
            "name": "mcp__docs__search",
            "description": "Search",
            "input_schema": {"type": "object", "properties": {}},
            "defer_loading": True,
        },
        {"type": "web_search_20250305", "name": "web_search"},
    ],
    "tool_choice": {"type": "auto"},
    "metadata": {"user_id": "user_abc_account__session_1"},
    "thinking": {"type": "adaptive"},
    "output_config": {"effort": "high"},
    "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
    "temperature": 1,
}


def test_what_claude_code_sends_is_accepted(client: TestClient) -> None:
    headers = {"anthropic-version": "2023-06-01", "anthropic-beta": "interleaved-thinking"}
    with client.stream(
        "POST", "/v1/messages?beta=true", json=CLAUDE_CODE_BODY, headers=headers
    ) as response:
        assert response.status_code == 200, response.read()
        events = parse_events("".join(response.iter_text()))
    assert events[-1][0] == "message_stop"
    counted = client.post(
        "/v1/messages/count_tokens?beta=true",
        json={k: v for k, v in CLAUDE_CODE_BODY.items() if k not in ("max_tokens", "stream")},
        headers=headers,
    )
    assert counted.json()["input_tokens"] == events[0][1]["message"]["usage"]["input_tokens"]


def test_unknown_fields_are_accepted_and_logged_at_debug(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="app.api.messages"):
        assert create(client, service_tier="auto", speed="fast").status_code == 200
    assert "['service_tier', 'speed']" in caplog.text


def anthropic_error(response: Any, status: int, kind: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"type", "error", "request_id"} and body["type"] == "error"
    assert set(body["error"]) == {"type", "message"} and body["error"]["type"] == kind
    assert body["request_id"] == response.headers["x-request-id"]
    message: str = body["error"]["message"]
    return message


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "What is this?"},
                            {"type": "image", "source": {"type": "url", "url": "x"}},
                        ],
                    }
                ]
            },
            "'image' content blocks are not supported",
        ),
        ({"max_tokens": None}, "'max_tokens'"),
        ({"messages": []}, "'messages'"),
        ({"temperature": 2}, "'temperature'"),
        ({"max_tokens": 9000}, "input length and `max_tokens` exceed context limit"),
        ({"messages": [{"role": "user", "content": "x " * 5000}]}, "prompt is too long: "),
        (
            {
                "tools": [{"type": "web_search_20250305", "name": "web_search"}],
                "tool_choice": {"type": "any"},
            },
            "server tools this server cannot run: tools[0] (web_search_20250305)",
        ),
    ],
)
def test_bad_input_is_400_in_anthropics_shape(
    client: TestClient, engine: FakeEngine, body: dict[str, Any], message: str
) -> None:
    request = {"model": "tiny", "max_tokens": 100, "messages": USER} | body
    response = client.post("/v1/messages", json={k: v for k, v in request.items() if v is not None})
    assert message in anthropic_error(response, 400, "invalid_request_error")
    assert engine.calls == []


def test_malformed_json_is_400(client: TestClient) -> None:
    response = client.post(
        "/v1/messages", content=b"{nope", headers={"content-type": "application/json"}
    )
    anthropic_error(response, 400, "invalid_request_error")


def test_unknown_model_is_404(client: TestClient, engine: FakeEngine) -> None:
    assert "'claude-opus-4-5'" in anthropic_error(
        create(client, model="claude-opus-4-5"), 404, "not_found_error"
    )
    counted = client.post("/v1/messages/count_tokens", json={"model": "x", "messages": USER})
    anthropic_error(counted, 404, "not_found_error")
    assert engine.calls == []


def test_a_restarting_engine_is_529_overloaded(client: TestClient, engine: FakeEngine) -> None:
    engine.ready = False
    response = create(client)
    anthropic_error(response, 529, "overloaded_error")
    assert response.headers["retry-after"] == "2"


def test_admission_at_capacity_is_429(client: TestClient) -> None:
    admission = client.app.state.ovchat.models.get("tiny").loaded.admission  # type: ignore[attr-defined]
    admission.in_flight = admission.capacity
    try:
        response = create(client)
    finally:
        admission.in_flight = 0
    anthropic_error(response, 429, "rate_limit_error")
    assert response.headers["retry-after"] == "1"


def test_a_grammar_the_engine_refuses_is_400_before_admission(
    client: TestClient, engine: FakeEngine
) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    engine.bad_grammars.add(json.dumps(schema))
    response = create(client, output_config={"format": {"type": "json_schema", "schema": schema}})
    assert "constrained decoding" in anthropic_error(response, 400, "invalid_request_error")
    assert engine.calls == []


def test_a_failure_mid_stream_is_an_error_event(client: TestClient, engine: FakeEngine) -> None:
    engine.error_after = 2
    events = stream(client)
    name, error = events[-1]
    assert name == "error"
    assert error["error"]["type"] == "overloaded_error"
    assert set(error) == {"type", "error", "request_id"}
    assert "message_stop" not in [n for n, _ in events]


def test_keep_alive_pings_are_anthropic_ping_events(
    client: TestClient, engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    class QuickPings(sse.EventStream):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs | {"ping": 0.02})

    monkeypatch.setattr(sse, "EventStream", QuickPings)  # as app.api.common reaches it
    engine.delay_s = 0.02
    with client.stream(
        "POST",
        "/v1/messages",
        json={"model": "tiny", "max_tokens": 100, "messages": USER, "stream": True},
    ) as response:
        text = "".join(response.iter_text())
    names = [name for name, _ in parse_events(text)]
    assert names.count("ping") > 2  # the one after message_start, and the keep-alives
    with client.stream(
        "POST",
        "/v1/chat/completions",
        json={"model": "tiny", "messages": USER, "stream": True},
    ) as response:
        chat = "".join(response.iter_text())
    assert ": ping" in chat and "event: ping" not in chat  # OpenAI's routes keep comments
