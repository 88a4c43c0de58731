"""Every error leaves the server in the shape of the API the client speaks: OpenAI's
{"error": {"message", "type", "param", "code"}} with the status OpenAI would use, or, on
Anthropic's Messages routes, Anthropic's {"type": "error", "error": {"type", "message"}}
with Anthropic's statuses. The core raises one neutral ApiError; only its rendering
differs."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.protocol.anthropic import AnthropicError, AnthropicErrorBody
from app.protocol.openai_common import ErrorBody, ErrorResponse

logger = logging.getLogger(__name__)

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable",
}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = ErrorBody(
            message=message,
            type=type or _TYPES.get(status, "invalid_request_error"),
            param=param,
            code=code,
        )
        self.headers = headers

    def payload(self) -> dict[str, Any]:
        return ErrorResponse(error=self.body).model_dump()

    def anthropic(self, request_id: str | None = None) -> tuple[int, dict[str, Any]]:
        """The status and body Anthropic would send: its own error types, and 529 where
        the server is overloaded or restarting (503 here), so its SDKs raise their typed
        exceptions and retry what Anthropic's would."""
        status, kind = _ANTHROPIC.get(self.status, (self.status, "invalid_request_error"))
        if self.status >= 500 and self.status not in _ANTHROPIC:
            status, kind = self.status, "api_error"
        body = AnthropicError(
            error=AnthropicErrorBody(type=kind, message=self.body.message), request_id=request_id
        )
        return status, body.model_dump(exclude_none=True)


# Anthropic's statuses and error types (docs.claude.com/en/api/errors).
_ANTHROPIC: dict[int, tuple[int, str]] = {
    400: (400, "invalid_request_error"),
    401: (401, "authentication_error"),
    403: (403, "permission_error"),
    404: (404, "not_found_error"),
    408: (504, "timeout_error"),
    413: (413, "request_too_large"),
    429: (429, "rate_limit_error"),
    500: (500, "api_error"),
    503: (529, "overloaded_error"),
}

ANTHROPIC_PATHS = ("/v1/messages", "/v1/complete")


def speaks_anthropic(path: str) -> bool:
    """Anthropic's Messages API is served under its own paths; everything else is
    OpenAI's (or the server's own, in OpenAI's error shape)."""
    return path.startswith(ANTHROPIC_PATHS)


def rendered(exc: ApiError, path: str, request_id: str | None = None) -> tuple[int, bytes]:
    """The status and JSON body of an error for a client on `path`."""
    if speaks_anthropic(path):
        status, payload = exc.anthropic(request_id)
    else:
        status, payload = exc.status, exc.payload()
    return status, json.dumps(payload).encode()


def error_response(exc: ApiError, request: Request | None = None) -> JSONResponse:
    if request is not None and speaks_anthropic(request.url.path):
        request_id = request.scope.get("state", {}).get("request_id")
        status, payload = exc.anthropic(request_id)
        return JSONResponse(payload, status_code=status, headers=exc.headers)
    return JSONResponse(exc.payload(), status_code=exc.status, headers=exc.headers)


_UNION_TAGS = {"str", "int", "float", "bool", "list", "dict", "none", "json-or-python"}


def _param(loc: tuple[Any, ...]) -> str | None:
    """('body', 'messages', 1, 'role') -> 'messages[1].role'. Pydantic's union-member
    tags (`str`, `list[...]`) are dropped: they name our types, not the client's field."""
    out = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif (
            part not in _UNION_TAGS
            and not part.startswith(("constrained-", "function-"))
            and not any(ch in part for ch in "[(")
        ):
            out += f".{part}" if out else part
    return out or None


def validation_error(exc: RequestValidationError) -> ApiError:
    errors = exc.errors()
    # A value that matches no member of a union yields one error per member; the deepest
    # one points at what the client actually got wrong (content[0].type, not content).
    first: Any = max(errors, key=lambda e: len(_param(tuple(e.get("loc", ()))) or ""), default={})
    if first.get("type") == "json_invalid":
        return ApiError(
            400, "We could not parse the JSON body of your request.", code="invalid_json"
        )
    param = _param(tuple(first.get("loc", ())))
    msg = first.get("msg", "invalid request")
    if first.get("type") == "ovchat_rule":  # a model validator's rule (protocol.rule_error)
        context = first.get("ctx") or {}
        inner = context.get("param")
        param = f"{param}.{inner}" if param and inner else inner or param
        return ApiError(400, msg, param=param, code=context.get("code", "invalid_value"))
    if first.get("type") == "missing":
        message = f"Missing required parameter: '{param}'."
        code = "missing_required_parameter"
    else:
        got = first.get("input")
        shown = json.dumps(got, default=str)[:200] if got is not None else "null"
        message = f"Invalid value for '{param}': {msg} (got {shown})."
        code = "invalid_value" if "type" not in str(first.get("type")) else "invalid_type"
    return ApiError(400, message, param=param, code=code)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc, request)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(exc), request)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail) if exc.detail else "error"
        if exc.status_code == 404:
            message = f"Unknown route: {message}" if message != "Not Found" else "Not found."
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        # Keep Starlette's headers: a 405 must list the allowed methods (RFC 9110).
        return error_response(
            ApiError(exc.status_code, message, code=code, headers=dict(exc.headers or {})),
            request,
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("Unhandled error")
        return error_response(
            ApiError(500, "The server had an error processing your request."), request
        )
