"""The official OpenAI JavaScript SDK (npm `openai`, tests/js) against the real server on
the tiny Phi-3 model: text, streams, the stream helper's tool-call events, typed errors."""

from __future__ import annotations

import json
from pathlib import Path

from app.modelstore.tiny_phi3 import TINY_REPLY
from tests.integration.conftest import Server, run_js


def test_the_javascript_sdk(js_sdk: Path, tiny_server: Server) -> None:
    out = run_js(js_sdk, "sdk.mjs", tiny_server)
    assert (out["text"], out["finish"]) == (TINY_REPLY, "stop")
    assert out["streamed"] == TINY_REPLY
    assert out["streamed_usage"]["completion_tokens"] == 29
    for forced in ("required", "named"):
        seen = out[forced]
        # The stream helper fires arguments.done only when the finish reason comes in a
        # chunk of its own, after the calls: OpenAI's shape.
        assert seen["done"] and seen["done"][0]["name"] == "get_unit"
        assert json.loads(seen["done"][0]["arguments"]) in (
            {"unit": "celsius"},
            {"unit": "fahrenheit"},
        )
        assert seen["fragments"] > 3
        assert seen["finish"] == "tool_calls"
        assert seen["calls"][0]["arguments"] == seen["done"][0]["arguments"]
    assert out["auto"]["content"] == TINY_REPLY and out["auto"]["deltas"] > 10
    assert out["not_found"] == {"type": "NotFoundError", "status": 404, "code": "model_not_found"}
    assert out["completion"] == {"finish": "length", "tokens": 4}
