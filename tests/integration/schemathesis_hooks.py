"""Schemathesis check: every error the server sends is in OpenAI's shape."""

from __future__ import annotations

from typing import Any

import schemathesis


@schemathesis.check
def openai_error_shape(ctx: Any, response: Any, case: Any) -> bool | None:
    if response.status_code < 400:
        return None
    body = response.json()
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or set(error) != {"message", "type", "param", "code"}:
        raise AssertionError(f"not an OpenAI error body: {body!r}")
    if not isinstance(error["message"], str) or not isinstance(error["type"], str):
        raise AssertionError(f"error message and type must be strings: {body!r}")
    return None
