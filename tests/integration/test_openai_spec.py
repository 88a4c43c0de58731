"""Every chat, completions, models and error response validates against OpenAI's own
OpenAPI specification (openai/openai-openapi `openapi.yaml`, read where the workplace keeps
it, never copied into this repository), as a strict validator built from the spec would
hold it: JSON Schema 2020-12, `nullable: true` where the spec says so and nowhere else."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

from app.settings import REPO_ROOT
from tests.integration.conftest import Server, launch, stop_server

SPEC = Path(
    os.environ.get(
        "OVCHAT_OPENAI_SPEC", REPO_ROOT.parent / "shared" / "reference" / "openai-openapi.yaml"
    )
)
TOOL = {
    "type": "function",
    "function": {
        "name": "get_unit",
        "parameters": {
            "type": "object",
            "properties": {"unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["unit"],
            "additionalProperties": False,
        },
    },
}
USER = [{"role": "user", "content": "can you introduce yourself?"}]


def _nullable(node: Any) -> Any:
    """OpenAPI 3.0's `nullable: true`, which this 3.1 spec still uses in places, as the
    JSON Schema it means: the schema or null."""
    if isinstance(node, list):
        return [_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _nullable(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable") is True:
        return {"anyOf": [out, {"type": "null"}]}
    return out


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    if not SPEC.is_file():
        pytest.skip(f"OpenAI's OpenAPI spec is not at {SPEC} (set OVCHAT_OPENAI_SPEC)")
    import yaml

    loaded = yaml.load(SPEC.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return {"components": _nullable(loaded["components"])}


def check(spec: dict[str, Any], name: str, instance: Any) -> None:
    validator = Draft202012Validator({"$ref": f"#/components/schemas/{name}", **spec})
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
    assert not errors, f"{name}: " + "; ".join(
        f"{'/'.join(map(str, e.path))}: {e.message[:200]}" for e in errors[:5]
    )


def post(server: Server, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=60)


def events(server: Server, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    with httpx.stream(
        "POST", f"{server.url}{path}", json=body | {"stream": True}, timeout=60
    ) as response:
        assert response.status_code == 200
        data = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    return [json.loads(item) for item in data[:-1]]


CHAT_BODIES: list[dict[str, Any]] = [
    {},
    {"n": 2, "logprobs": True, "top_logprobs": 0, "seed": 3, "temperature": 0.7},
    {"tools": [TOOL], "tool_choice": "required", "max_tokens": 60},
    {"tools": [TOOL]},
    {"response_format": {"type": "json_object"}, "max_tokens": 20},
    {"max_tokens": 3, "stop": ["capital"]},
]


@pytest.mark.parametrize("extra", CHAT_BODIES)
def test_chat_completions(spec: dict[str, Any], tiny_server: Server, extra: dict[str, Any]) -> None:
    body = {"model": "tiny-phi3", "messages": USER, "temperature": 0} | extra
    response = post(tiny_server, "/v1/chat/completions", body)
    assert response.status_code == 200, response.text
    check(spec, "CreateChatCompletionResponse", response.json())
    for usage in (False, True):
        options = {"stream_options": {"include_usage": True}} if usage else {}
        for chunk in events(tiny_server, "/v1/chat/completions", body | options):
            check(spec, "CreateChatCompletionStreamResponse", chunk)


@pytest.mark.parametrize(
    "extra",
    [{}, {"echo": True, "max_tokens": 3}, {"logprobs": 0, "n": 2}, {"prompt": ["a", "b"]}],
)
def test_completions(spec: dict[str, Any], tiny_server: Server, extra: dict[str, Any]) -> None:
    body = {"model": "tiny-phi3", "prompt": "Say:", "max_tokens": 8, "temperature": 0} | extra
    response = post(tiny_server, "/v1/completions", body)
    assert response.status_code == 200, response.text
    check(spec, "CreateCompletionResponse", response.json())
    options = {"stream_options": {"include_usage": True}}
    for chunk in events(tiny_server, "/v1/completions", body | options):
        # The spec gives a chunk the response's shape, whose finish_reason is a string;
        # before its last chunk a choice has none, and OpenAI's own stream sends null.
        unfinished = [c for c in chunk["choices"] if c["finish_reason"] is None]
        for choice in unfinished:
            choice["finish_reason"] = "stop"
        check(spec, "CreateCompletionResponse", chunk)
        assert all(c["text"] for c in unfinished) or body.get("echo")


def test_models_and_errors(spec: dict[str, Any], tiny_server: Server) -> None:
    check(spec, "ListModelsResponse", httpx.get(f"{tiny_server.url}/v1/models").json())
    check(spec, "Model", httpx.get(f"{tiny_server.url}/v1/models/tiny-phi3").json())
    for response in (
        httpx.get(f"{tiny_server.url}/v1/models/nope"),
        post(tiny_server, "/v1/chat/completions", {"model": "tiny-phi3", "messages": []}),
        post(tiny_server, "/v1/completions", {"model": "nope", "prompt": "x"}),
    ):
        assert response.status_code >= 400
        check(spec, "ErrorResponse", response.json())


RESPONSE_TOOL: dict[str, Any] = {
    "type": "function",
    "name": "get_unit",
    "parameters": TOOL["function"]["parameters"],  # type: ignore[index]
}
RESPONSES_BODIES: list[dict[str, Any]] = [
    {},
    {
        "instructions": "Be brief.",
        "max_output_tokens": 5,
        "include": ["reasoning.encrypted_content"],
    },
    {"tools": [RESPONSE_TOOL], "tool_choice": "required", "parallel_tool_calls": False},
    {"tools": [RESPONSE_TOOL, {"type": "web_search"}], "metadata": {"k": "v"}},
    {"text": {"format": {"type": "json_object"}}, "max_output_tokens": 20, "store": False},
    {"include": ["message.output_text.logprobs"], "reasoning": {"effort": "low"}},
]


def event_schema(spec: dict[str, Any], kind: str) -> str:
    """The member of ResponseStreamEvent for an event type (its errors are readable; the
    union's are not)."""
    schemas = spec["components"]["schemas"]
    for member in schemas["ResponseStreamEvent"]["anyOf"]:
        name = member["$ref"].rsplit("/", 1)[-1]
        if kind in schemas[name].get("properties", {}).get("type", {}).get("enum", []):
            return str(name)
    raise AssertionError(f"no stream event {kind} in the spec")


def response_events(server: Server, body: dict[str, Any]) -> list[dict[str, Any]]:
    with httpx.stream(
        "POST", f"{server.url}/v1/responses", json=body | {"stream": True}, timeout=60
    ) as response:
        assert response.status_code == 200
        lines = list(response.iter_lines())
    kinds = [line[7:] for line in lines if line.startswith("event: ")]
    data = [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
    assert kinds == [d["type"] for d in data]
    return data


@pytest.mark.parametrize("extra", RESPONSES_BODIES)
def test_responses(spec: dict[str, Any], tiny_server: Server, extra: dict[str, Any]) -> None:
    body = {"model": "tiny-phi3", "input": USER[0]["content"], "temperature": 0} | extra
    response = post(tiny_server, "/v1/responses", body)
    assert response.status_code == 200, response.text
    created = response.json()
    check(spec, "Response", created)
    streamed = response_events(tiny_server, body)
    assert [e["sequence_number"] for e in streamed] == list(range(len(streamed)))
    for event in streamed:
        check(spec, event_schema(spec, event["type"]), event)
    assert streamed[-1]["response"]["output"][0]["type"] == created["output"][0]["type"]
    if created["store"]:
        stored = httpx.get(f"{tiny_server.url}/v1/responses/{created['id']}").json()
        check(spec, "Response", stored)
        items = httpx.get(f"{tiny_server.url}/v1/responses/{created['id']}/input_items").json()
        check(spec, "ResponseItemList", items)
    count = post(tiny_server, "/v1/responses/input_tokens", {"input": body["input"]})
    check(spec, "TokenCountsResource", count.json())


def test_responses_errors(spec: dict[str, Any], tiny_server: Server) -> None:
    for response in (
        httpx.get(f"{tiny_server.url}/v1/responses/resp_nope"),
        post(tiny_server, "/v1/responses", {"model": "tiny-phi3", "input": []}),
        post(tiny_server, "/v1/responses", {"model": "tiny-phi3", "previous_response_id": "x"}),
    ):
        assert response.status_code in (400, 404), response.text
        check(spec, "ErrorResponse", response.json())


@pytest.fixture(scope="module")
def embedding_server(server_logs: Path, minilm_dir: Path) -> Iterator[Server]:
    server = launch(server_logs, "all-minilm-l6-v2", "--model", str(minilm_dir))
    yield server
    stop_server(server)


def test_embeddings(spec: dict[str, Any], embedding_server: Server) -> None:
    # The spec types `embedding` as an array of numbers only; with encoding_format base64
    # OpenAI (and the SDKs that decode it) send a string, which it does not describe.
    for body in (
        {"input": "hello"},
        {"input": ["a", "b"], "encoding_format": "float"},
        {"input": [[101, 7592, 102]], "encoding_format": "float"},
    ):
        response = post(embedding_server, "/v1/embeddings", {"model": "all-minilm-l6-v2", **body})
        assert response.status_code == 200
        check(spec, "CreateEmbeddingResponse", response.json())
    refused = post(embedding_server, "/v1/embeddings", {"model": "all-minilm-l6-v2", "input": ""})
    assert refused.status_code == 400
    check(spec, "ErrorResponse", refused.json())
    check(spec, "ListModelsResponse", httpx.get(f"{embedding_server.url}/v1/models").json())
