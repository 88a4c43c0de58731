from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.core.sse import line_safe
from app.protocol.openai_chat import ChatCompletionChunk, ChunkChoice, ChunkDelta
from app.textmodel import TextModel
from tests.unit.conftest import REPLY
from tests.unit.fakes import FakeEngine

USER = [{"role": "user", "content": "What is the capital of France?"}]


def chat(client: TestClient, **body: Any) -> Any:
    return client.post("/v1/chat/completions", json={"model": "tiny", "messages": USER} | body)


def sse_events(client: TestClient, **body: Any) -> list[str]:
    with client.stream(
        "POST",
        "/v1/chat/completions",
        json={"model": "tiny", "messages": USER, "stream": True} | body,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        text = "".join(response.iter_text())
    return [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]


def test_completion_shape_and_exact_usage(client: TestClient, text_model: TextModel) -> None:
    response = chat(client, temperature=0)
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == "tiny"
    assert body["system_fingerprint"].startswith("fp_")
    assert body["choices"] == [
        {
            "index": 0,
            "finish_reason": "stop",
            "logprobs": None,
            "message": {"role": "assistant", "content": REPLY, "refusal": None},
        }
    ]
    prompt = "<|user|>\nWhat is the capital of France?<|end|>\n<|assistant|>\n"
    prompt_tokens = len(text_model.encode(prompt))
    completion_tokens = len(text_model.encode(REPLY)) + 1  # the eos token was generated too
    assert body["usage"]["prompt_tokens"] == prompt_tokens
    assert body["usage"]["completion_tokens"] == completion_tokens
    assert body["usage"]["total_tokens"] == prompt_tokens + completion_tokens


def test_engine_receives_rendered_prompt_and_all_eos_ids(
    client: TestClient, engine: FakeEngine, text_model: TextModel
) -> None:
    chat(
        client,
        messages=[
            {"role": "developer", "content": "Be brief."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}],
            },
        ],
        temperature=0,
        max_tokens=7,
        seed=5,
    )
    prompt_ids, params = engine.calls[-1]
    expected = "<|system|>\nBe brief.<|end|>\n<|user|>\nHi there<|end|>\n<|assistant|>\n"
    assert prompt_ids == text_model.encode(expected)
    assert params.max_new_tokens == 7
    assert params.greedy
    names = {"<|endoftext|>", "<|assistant|>", "<|end|>"}
    assert params.stop_token_ids == frozenset(text_model.token_id(name) for name in names)


def test_max_tokens_gives_length(client: TestClient, text_model: TextModel) -> None:
    body = chat(client, max_completion_tokens=3).json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 3
    assert body["choices"][0]["message"]["content"] == text_model.decode(
        text_model.encode(REPLY)[:3]
    )


def test_default_max_tokens_is_context_left(client: TestClient, engine: FakeEngine) -> None:
    chat(client)
    prompt_ids, params = engine.calls[-1]
    assert params.max_new_tokens == 4096 - len(prompt_ids)


def test_stop_string_is_cut_and_reported(client: TestClient) -> None:
    body = chat(client, stop=["Paris"]).json()
    assert body["choices"][0]["message"]["content"] == "Hello! The capital of France is "
    assert body["choices"][0]["finish_reason"] == "stop"


def test_stream_chunks_follow_openai(client: TestClient) -> None:
    events = sse_events(client, stream_options={"include_usage": True})
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert len({c["id"] for c in chunks}) == 1
    assert len({c["created"] for c in chunks}) == 1
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] > 0
    content = chunks[1:-1]
    assert all(c["usage"] is None for c in content)
    assert [c["choices"][0]["finish_reason"] for c in content][-1] == "stop"
    assert all(c["choices"][0]["finish_reason"] is None for c in content[:-1])
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in content)
    assert text == REPLY
    assert "\ufffd" not in text


def test_stream_without_usage_has_no_usage_key(client: TestClient) -> None:
    events = sse_events(client)
    chunks = [json.loads(e) for e in events[:-1]]
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_stream_equals_non_stream(client: TestClient) -> None:
    for extra in ({}, {"stop": ["capital of"]}, {"max_tokens": 5}):
        plain = chat(client, **extra).json()["choices"][0]["message"]["content"]
        events = sse_events(client, **extra)
        chunks = [json.loads(e) for e in events[:-1]]
        streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
        assert streamed == plain


TRICKY = 'He said "hi" \\ back\n\ttab é ✓ \u2028 \u2029 \x85 😀 <b> end.'


@pytest.mark.parametrize("include_usage", [False, True])
def test_stream_content_chunks_are_the_models_json(
    client: TestClient, engine: FakeEngine, text_model: TextModel, include_usage: bool
) -> None:
    """Content chunks are spliced into a frame serialized once: each must be byte for
    byte what the protocol models serialize, and stay one line whatever the text holds."""
    engine.reply_ids = text_model.encode(TRICKY)
    extra = {"stream_options": {"include_usage": True}} if include_usage else {}
    events = sse_events(client, **extra)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    streamed = "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]
    )
    assert streamed == TRICKY
    middle = list(zip(events[1:], chunks[1:], strict=False))
    content = [(e, c) for e, c in middle if c["choices"] and not c["choices"][0]["finish_reason"]]
    assert len(content) > 5
    for data, chunk in content:
        delta = ChunkDelta(content=chunk["choices"][0]["delta"]["content"])
        model = ChatCompletionChunk(
            id=chunk["id"],
            created=chunk["created"],
            model="tiny",
            system_fingerprint=chunk["system_fingerprint"],
            choices=[ChunkChoice(index=0, delta=delta)],
        ).model_dump(mode="json")
        if not include_usage:
            del model["usage"]
        assert data == line_safe(json.dumps(model, ensure_ascii=False, separators=(",", ":")))
        assert len(data.splitlines()) == 1


def test_stream_events_skip_sse_starlettes_per_event_scope() -> None:
    """ovchat's stream response overrides this sse-starlette method; if a release renames
    it, the override is silently dead code, so the test names it."""
    import inspect

    from sse_starlette import EventSourceResponse

    assert "_send_with_timeout" in vars(EventSourceResponse)
    assert "self._send_with_timeout(" in inspect.getsource(EventSourceResponse._stream_response)


def test_stream_stop_string_never_leaks(client: TestClient) -> None:
    events = sse_events(client, stop=["France is Par"])
    chunks = [json.loads(e) for e in events[:-1]]
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert streamed == "Hello! The capital of "


def test_error_mid_stream_is_an_error_event(client: TestClient, engine: FakeEngine) -> None:
    engine.error_after = 2
    events = sse_events(client)
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])
    assert set(error["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": None}]}, "messages[0].content"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "messages[0].content[0].type",
        ),
        ({"temperature": 3}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"presence_penalty": -3}, "presence_penalty"),
        ({"stop": [""]}, "stop"),
        ({"n": 9}, "n"),
        ({"logit_bias": {"one": 5}}, "logit_bias"),
        ({"logit_bias": {"1": 100.5}}, "logit_bias"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        (
            {"tools": [{"type": "function", "function": {"name": "bad name"}}]},
            "tools[0].function.name",
        ),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"response_format": {"type": "xml"}}, "response_format"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"max_tokens": 5000}, "messages"),
    ],
)
def test_bad_input_is_400_in_openai_shape(
    client: TestClient, engine: FakeEngine, body: dict[str, Any], param: str
) -> None:
    response = chat(client, **body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert engine.calls == []


def test_context_length_exceeded_names_both_counts(client: TestClient) -> None:
    error = chat(client, max_tokens=5000).json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert "4096" in error["message"] and "5000 in the completion" in error["message"]


def test_malformed_json_is_400(client: TestClient) -> None:
    response = client.post(
        "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"


def test_missing_field_is_400(client: TestClient) -> None:
    response = client.post("/v1/chat/completions", json={"model": "tiny"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages"


def test_unknown_model_is_404(client: TestClient, engine: FakeEngine) -> None:
    response = chat(client, model="gpt-4o")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"
    assert engine.calls == []


def test_accepted_and_ignored_fields(client: TestClient) -> None:
    response = chat(
        client,
        user="u1",
        metadata={"k": "v"},
        store=False,
        service_tier="auto",
        some_future_field={"x": 1},
    )
    assert response.status_code == 200


def test_request_id_is_echoed_or_made(client: TestClient) -> None:
    assert chat(client).headers["x-request-id"]
    response = client.post(
        "/v1/chat/completions",
        json={"model": "tiny", "messages": USER},
        headers={"x-request-id": "abc-123"},
    )
    assert response.headers["x-request-id"] == "abc-123"
    assert client.get("/v1/models", headers={"x-request-id": "zz"}).headers["x-request-id"] == "zz"


def test_unseeded_requests_get_different_seeds(client: TestClient, engine: FakeEngine) -> None:
    chat(client, temperature=1)
    chat(client, temperature=1)
    chat(client, temperature=1, seed=7)
    seeds = [params.seed for _, params in engine.calls]
    assert seeds[0] != seeds[1]
    assert seeds[2] == 7
