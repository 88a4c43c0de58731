"""Schemathesis check: every error the server sends is in the shape of the API the path
belongs to: Anthropic's on its Messages paths, OpenAI's everywhere else."""

from __future__ import annotations

from typing import Any

import schemathesis

from app.errors import speaks_anthropic

OPENAI_ERROR = {"message", "type", "param", "code"}
ANTHROPIC_ERROR = {"type", "message"}


@schemathesis.check
def openai_error_shape(ctx: Any, response: Any, case: Any) -> bool | None:
    if response.status_code < 400:
        return None
    body = response.json()
    error = body.get("error") if isinstance(body, dict) else None
    anthropic = speaks_anthropic(case.path)
    if anthropic and (body.get("type") != "error" or not isinstance(error, dict)):
        raise AssertionError(f"not an Anthropic error body: {body!r}")
    expected = ANTHROPIC_ERROR if anthropic else OPENAI_ERROR
    if not isinstance(error, dict) or set(error) != expected:
        raise AssertionError(f"not an {'Anthropic' if anthropic else 'OpenAI'} error: {body!r}")
    if not isinstance(error["message"], str) or not isinstance(error["type"], str):
        raise AssertionError(f"error message and type must be strings: {body!r}")
    return None
