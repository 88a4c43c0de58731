"""The OpenAPI document as this server really behaves: validation errors are OpenAI-shaped
400s (not FastAPI's 422), the only model is the served one, and the caps that settings
impose are stated, so schema-driven clients and fuzzers generate requests we accept."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app.state import GenerationModel, ServerState

_ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
_OPENAI_STREAM = "With stream true: `data: <chunk JSON>` events, then `data: [DONE]`."
# What each streaming endpoint's events are, with stream true.
_STREAMING = {
    "/v1/chat/completions": _OPENAI_STREAM,
    "/v1/completions": _OPENAI_STREAM,
    "/v1/responses": "With stream true: OpenAI's typed events (`event: <type>` and `data: "
    "<event JSON>` with an increasing `sequence_number`), from `response.created` to "
    "`response.completed`, `response.incomplete` or `response.failed`.",
    "/v1/messages": "With stream true: Anthropic's named events (`event: message_start`, ...).",
}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR_REF}}}


def build(app: FastAPI) -> dict[str, Any]:
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            if method == "post" or operation.get("parameters"):
                responses.setdefault("400", _error("Invalid request"))
            if path.startswith("/v1/models/"):
                responses.setdefault("404", _error("No such model"))
            if path in _STREAMING:
                ok = responses.setdefault("200", {"description": "Successful Response"})
                ok.setdefault("content", {})["text/event-stream"] = {
                    "schema": {"description": _STREAMING[path]}
                }
    if "ErrorResponse" not in components:
        from app.protocol.openai_common import ErrorResponse

        components["ErrorResponse"] = ErrorResponse.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        components.update(components["ErrorResponse"].pop("$defs", {}))
    state: ServerState | None = getattr(app.state, "ovchat", None)
    if state is not None:
        _state_limits(components, state)
    return schema


def _state_limits(components: dict[str, Any], state: ServerState) -> None:
    settings = state.settings
    ids = [m.id for m in state.models.models.values() if m.kind == "generation"]
    for name in (
        "ChatCompletionRequest",
        "CompletionRequest",
        "MessageCreateRequest",
        "MessageCountTokensRequest",
    ):
        properties = components.get(name, {}).get("properties", {})
        if "model" in properties:
            properties["model"] = {"type": "string", "enum": ids, "title": "Model"}
        if "n" in properties:
            properties["n"] = {
                "anyOf": [
                    {"type": "integer", "minimum": 1, "maximum": settings.max_n},
                    {"type": "null"},
                ]
            }
        if "stop" in properties:
            properties["stop"] = {
                "anyOf": [
                    {"type": "string", "minLength": 1},
                    {
                        "type": "array",
                        "items": {"type": "string", "minLength": 1},
                        "maxItems": settings.max_stop_sequences,
                    },
                    {"type": "null"},
                ]
            }
    embedders = [m.id for m in state.models.models.values() if m.kind == "embedding"]
    embedding = components.get("CreateEmbeddingRequest", {}).get("properties", {})
    if embedders and "model" in embedding:
        embedding["model"] = {"type": "string", "enum": embedders, "title": "Model"}
    messages = components.get("ChatCompletionRequest", {}).get("properties", {}).get("messages")
    if messages is not None:
        messages["maxItems"] = settings.max_messages
    tokens = components.get("DetokenizeRequest", {}).get("properties", {}).get("tokens")
    default = state.models.get(state.models.default_id).loaded
    if tokens is not None and isinstance(default, GenerationModel):
        tokens["items"] = {
            "type": "integer",
            "minimum": 0,
            "maximum": default.text.vocab_size - 1,
        }


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        # Not cached before startup: the served model and its vocabulary are part of it.
        if app.openapi_schema is None or getattr(app.state, "ovchat", None) is not None:
            app.openapi_schema = build(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
