"""The official Anthropic Python and JavaScript SDKs, and raw HTTP, against the real server
on the tiny Phi-3 model, whose greedy answer to any chat prompt is TINY_REPLY followed by
`<|end|>`. The SDKs' types no longer list the sampling fields; the API still takes them
(`extra_body`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from app.chat_format import Turn
from app.core.tools import render_calls
from app.modelstore.tiny_phi3 import TINY_REPLY
from app.textmodel import TextModel
from tests.integration.conftest import Server, run_js, start_server, stop_server

SYSTEM = "You are a helpful AI assistant."
MESSAGES: list[Any] = [{"role": "user", "content": "can you introduce yourself?"}]
GREEDY: dict[str, Any] = {"extra_body": {"temperature": 0}}
UNIT_TOOL: Any = {
    "name": "get_unit",
    "description": "The unit to report temperatures in",
    "input_schema": {
        "type": "object",
        "properties": {"unit": {"enum": ["celsius", "fahrenheit"]}},
        "required": ["unit"],
    },
}
REPLY_TOKENS = 29  # TINY_REPLY's tokens and the `<|end|>` that ended it


def client(server: Server, key: str = "unused") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key=key, max_retries=0)


def create(server: Server, **kwargs: Any) -> Any:
    body: dict[str, Any] = {"model": server.model, "max_tokens": 100, "messages": MESSAGES}
    return client(server).messages.create(**(body | GREEDY | kwargs))


def test_create_exact_text_and_usage(tiny_server: Server, text_model: TextModel) -> None:
    message = create(tiny_server, system=SYSTEM)
    assert message.id.startswith("msg_") and message.type == "message"
    assert message.role == "assistant" and message.model == "tiny-phi3"
    [block] = message.content
    assert block.type == "text" and block.text == TINY_REPLY
    assert (message.stop_reason, message.stop_sequence) == ("end_turn", None)
    prompt = text_model.encode_chat([Turn("system", SYSTEM), Turn("user", MESSAGES[0]["content"])])
    assert message.usage.input_tokens == len(prompt)
    assert message.usage.output_tokens == REPLY_TOKENS
    assert message.usage.cache_read_input_tokens == 0
    assert message.usage.cache_creation_input_tokens == 0


def test_stream_text_and_final_message(tiny_server: Server) -> None:
    with client(tiny_server).messages.stream(
        model=tiny_server.model, max_tokens=100, messages=MESSAGES, **GREEDY
    ) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(texts) > 10 and "".join(texts) == TINY_REPLY
    assert [block.type for block in final.content] == ["text"]
    assert final.content[0].text == TINY_REPLY  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == REPLY_TOKENS
    assert final.usage.input_tokens == create(tiny_server).usage.input_tokens


def test_stop_sequences_and_max_tokens(tiny_server: Server) -> None:
    stopped = create(tiny_server, stop_sequences=["model:", "capital"])
    assert stopped.content[0].text == "Hello! I am a helpful test "
    assert (stopped.stop_reason, stopped.stop_sequence) == ("stop_sequence", "model:")
    cut = create(tiny_server, max_tokens=4)
    assert cut.content[0].text == "Hello! I am"
    assert (cut.stop_reason, cut.usage.output_tokens) == ("max_tokens", 4)


def test_tool_use_both_ways(tiny_server: Server, text_model: TextModel) -> None:
    """A forced call completes as its schema allows; its result sent back gets text."""
    with client(tiny_server).messages.stream(
        model=tiny_server.model,
        max_tokens=100,
        messages=MESSAGES,
        tools=[UNIT_TOOL],
        tool_choice={"type": "tool", "name": "get_unit"},
        **GREEDY,
    ) as stream:
        kinds = {event.type for event in stream}
        called = stream.get_final_message()
    assert "input_json" in kinds  # the SDK saw the input stream as input_json_delta events
    [call] = called.content
    assert call.type == "tool_use" and call.id.startswith("toolu_")
    assert (call.name, call.input) == ("get_unit", {"unit": "celsius"})
    assert called.stop_reason == "tool_use"
    whole = create(tiny_server, tools=[UNIT_TOOL], tool_choice={"type": "any"})
    assert [(b.type, b.input) for b in whole.content] == [("tool_use", {"unit": "celsius"})]
    history = [
        *MESSAGES,
        {"role": "assistant", "content": [call.model_dump()]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "celsius"}],
        },
    ]
    answer = create(tiny_server, messages=history, tools=[UNIT_TOOL])
    assert [b.type for b in answer.content] == ["text"]
    assert answer.content[0].text == TINY_REPLY
    assert answer.stop_reason == "end_turn"
    counted = client(tiny_server).messages.count_tokens(
        model=tiny_server.model, messages=history, tools=[UNIT_TOOL]
    )
    assert counted.input_tokens == answer.usage.input_tokens
    calls = render_calls([("get_unit", '{"unit": "celsius"}')])
    turns = [Turn("user", MESSAGES[0]["content"]), Turn("assistant", calls)]
    assert counted.input_tokens > len(text_model.encode_chat(turns))


def test_structured_output(tiny_server: Server) -> None:
    schema = UNIT_TOOL["input_schema"] | {"additionalProperties": False}
    message = create(
        tiny_server, output_config={"format": {"type": "json_schema", "schema": schema}}
    )
    [block] = message.content
    assert block.type == "text" and json.loads(block.text) == {"unit": "celsius"}
    assert message.stop_reason == "end_turn"


def test_count_tokens_equals_input_tokens(tiny_server: Server) -> None:
    counted = client(tiny_server).messages.count_tokens(
        model=tiny_server.model, messages=MESSAGES, system=SYSTEM
    )
    assert counted.input_tokens == create(tiny_server, system=SYSTEM).usage.input_tokens


def test_typed_errors(tiny_server: Server) -> None:
    sdk = client(tiny_server)
    with pytest.raises(anthropic.NotFoundError) as not_found:
        sdk.messages.create(model="no-such-model", max_tokens=10, messages=MESSAGES)
    assert not_found.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    image: Any = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
    with pytest.raises(anthropic.BadRequestError) as bad:
        sdk.messages.create(
            model=tiny_server.model,
            max_tokens=10,
            messages=[{"role": "user", "content": [{"type": "text", "text": "What?"}, image]}],
        )
    assert "'image' content blocks are not supported" in bad.value.message
    with pytest.raises(anthropic.BadRequestError) as too_long:
        sdk.messages.create(
            model=tiny_server.model,
            max_tokens=10,
            messages=[{"role": "user", "content": "word " * 5000}],
        )
    assert "prompt is too long: " in too_long.value.message
    with pytest.raises(anthropic.BadRequestError) as too_much:
        sdk.messages.create(model=tiny_server.model, max_tokens=5000, messages=MESSAGES)
    assert "input length and `max_tokens` exceed context limit" in too_much.value.message


@pytest.fixture(scope="module")
def keyed_server(server_logs: Path, tiny_model_dir: Path) -> Iterator[Server]:
    server = start_server(server_logs, tiny_model_dir, "tiny-phi3", "--api-key", "sk-ant-test")
    yield server
    stop_server(server)


def test_the_key_is_checked(keyed_server: Server) -> None:
    with pytest.raises(anthropic.AuthenticationError) as refused:
        client(keyed_server, "sk-wrong").messages.create(
            model=keyed_server.model, max_tokens=10, messages=MESSAGES
        )
    assert refused.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    message = client(keyed_server, "sk-ant-test").messages.create(
        model=keyed_server.model, max_tokens=4, messages=MESSAGES, **GREEDY
    )
    assert message.content[0].text == "Hello! I am"  # type: ignore[union-attr]


CLAUDE_CODE_BODY: dict[str, Any] = {
    "model": "tiny-phi3",
    "max_tokens": 200,
    "temperature": 0,
    "stream": True,
    "system": [
        {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1"},
        {"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}},
    ],
    "messages": [
        {"role": "system", "content": "Notes."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "<system-reminder>be brief</system-reminder>"},
                {"type": "text", "text": "run ls", "cache_control": {"type": "ephemeral"}},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "ls it", "signature": "sig"},
                {"type": "tool_use", "id": "toolu_01", "name": "Bash", "input": {"command": "ls"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_01",
                    "is_error": False,
                    "cache_control": {"type": "ephemeral", "ttl": "1h"},
                    "content": [{"type": "text", "text": "README.md"}],
                },
                {"type": "text", "text": "can you introduce yourself?"},
            ],
        },
    ],
    "tools": [
        {
            "name": "Bash",
            "description": "Runs a command",
            "input_schema": {
                "$schema": "http://json-schema.org/draft-07/schema#",
                "type": "object",
                "properties": {"command": {"type": "string"}},
                "required": ["command"],
                "additionalProperties": False,
            },
        },
        {
            "name": "mcp__docs__search",
            "description": "Searches the docs",
            "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
            "defer_loading": True,
        },
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
    ],
    "tool_choice": {"type": "auto"},
    "metadata": {"user_id": "user_0123_account__session_4567"},
    "thinking": {"type": "adaptive"},
    "output_config": {"effort": "high"},
    "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
}
HEADERS = {
    "x-api-key": "unused",
    "anthropic-version": "2023-06-01",
    "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14",
}


def sse_events(text: str) -> list[dict[str, Any]]:
    events = []
    for frame in text.split("\n\n"):
        if frame:
            name, data = frame.split("\n")
            events.append(json.loads(data.removeprefix("data: ")) | {"event": name[7:]})
    return events


def test_a_claude_code_request_over_raw_http(tiny_server: Server) -> None:
    with httpx.stream(
        "POST",
        f"{tiny_server.url}/v1/messages?beta=true",
        json=CLAUDE_CODE_BODY,
        headers=HEADERS,
        timeout=60,
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response.read().decode())
    assert all(event["event"] == event["type"] for event in events)
    assert [e["type"] for e in events[:3]] == ["message_start", "ping", "content_block_start"]
    assert [e["type"] for e in events[-3:]] == [
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    text = "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta")
    assert text == TINY_REPLY
    assert events[-2]["delta"]["stop_reason"] == "end_turn"
    counted = httpx.post(
        f"{tiny_server.url}/v1/messages/count_tokens?beta=true",
        json={k: v for k, v in CLAUDE_CODE_BODY.items() if k not in ("max_tokens", "stream")},
        headers=HEADERS,
    )
    assert counted.json() == {"input_tokens": events[0]["message"]["usage"]["input_tokens"]}
    refused = httpx.post(
        f"{tiny_server.url}/v1/messages?beta=true",
        json=CLAUDE_CODE_BODY | {"tool_choice": {"type": "tool", "name": "web_search"}},
        headers=HEADERS,
    )
    assert refused.status_code == 400
    assert refused.json()["error"]["type"] == "invalid_request_error"
    assert "web_search_20250305" in refused.json()["error"]["message"]


def test_the_javascript_sdk(js_sdk: Path, tiny_server: Server) -> None:
    out = run_js(js_sdk, "anthropic.mjs", tiny_server)
    assert (out["text"], out["stop_reason"]) == (TINY_REPLY, "end_turn")
    assert out["id"].startswith("msg_")
    assert out["usage"]["output_tokens"] == REPLY_TOKENS
    streamed = out["streamed"]
    assert streamed["deltas"] > 10 and streamed["text"] == streamed["final"] == TINY_REPLY
    assert streamed["stop_reason"] == "end_turn"
    assert streamed["usage"] == out["usage"]
    forced = out["forced"]
    assert forced["stop_reason"] == "tool_use"
    [call] = forced["content"]
    assert (call["type"], call["name"], call["input"]) == (
        "tool_use",
        "get_unit",
        {"unit": "celsius"},
    )
    assert call["id"].startswith("toolu_") and out["input_json_events"] > 3
    assert "content_block_delta" in forced["events"] and "ping" not in forced["events"]
    assert out["not_found"] == {
        "type": "NotFoundError",
        "status": 404,
        "error_type": "not_found_error",
    }
    assert out["count_tokens"] == out["usage"]["input_tokens"]
