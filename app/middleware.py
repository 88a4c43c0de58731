"""Pure ASGI middleware (BaseHTTPMiddleware would buffer streams and hide disconnects).

Order, outermost first: request id, access log, CORS, auth, limits, then the app."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import time
import uuid
from collections.abc import Sequence
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import ApiError, rendered
from app.metrics import Metrics

logger = logging.getLogger("app.access")

_VALID_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


async def send_error(scope: Scope, send: Send, error: ApiError) -> None:
    """An error before the app, in the shape of the API the path belongs to."""
    status, body = rendered(error, scope.get("path", ""), _state(scope).get("request_id"))
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in (error.headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _state(scope: Scope) -> dict[str, Any]:
    state: dict[str, Any] = scope.setdefault("state", {})
    return state


class RequestIdMiddleware:
    """Every response carries x-request-id: the client's own when it sent a sane one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers", [])).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _VALID_ID.match(given) else uuid.uuid4().hex
        _state(scope)["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"
                ]
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)


class AccessLogMiddleware:
    """One line per request: id, method, path, status, duration, the model it was routed
    to, and for generations the token counts and time to first token the route recorded.
    Never bodies, never keys."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = 0

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            state = _state(scope)
            route = scope.get("route")
            # The route's template, never the raw path: clients cannot inflate cardinality.
            endpoint = getattr(route, "path", "unmatched")
            model = state.get("model", "")
            self.metrics.requests.labels(endpoint, str(status or "disconnected"), model).inc()
            usage = state.get("usage") or {}
            extra = f" model={model}" if model else ""
            extra += "".join(f" {key}={value}" for key, value in usage.items())
            logger.info(
                "%s %s %s %s %.1fms%s",
                state.get("request_id", "-"),
                scope.get("method", "-"),
                scope.get("path", "-"),
                status or "disconnected",
                (time.monotonic() - started) * 1000,
                extra,
            )


def key_fingerprint(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:16]


class AuthMiddleware:
    """API keys on everything but an allowlist of exact open paths: an unknown or oddly
    spelled path (//v1/..., /v1/../v1, %-encoded) is never open by accident. A key comes
    as `Authorization: Bearer` (OpenAI's SDKs) or `x-api-key` (Anthropic's). The key's
    fingerprint, never the key, is left on the request for what a key owns (stored
    responses). The admin paths take only an admin key (which also opens the rest), and
    are closed when none is configured: a user key never loads or unloads models."""

    # /get_load with /metrics: what a router polls to balance, as open as the health checks.
    OPEN_PATHS = frozenset(
        {"/", "/health", "/health/live", "/metrics", "/get_load", "/favicon.ico"}
    )
    OPEN_PREFIXES = ("/static/",)
    ADMIN_PATHS = frozenset({"/models/load", "/models/unload"})

    def __init__(self, app: ASGIApp, keys: list[str], admin_keys: Sequence[str] = ()) -> None:
        self.app = app
        self.keys = [key.encode() for key in keys]
        self.admin_keys = [key.encode() for key in admin_keys]

    def _open(self, path: str) -> bool:
        if path in self.OPEN_PATHS:
            return True
        return path.startswith(self.OPEN_PREFIXES) and ".." not in path and "//" not in path

    def _authorized(self, scope: Scope, keys: list[bytes]) -> bool:
        headers = dict(scope.get("headers", []))
        scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
        token = token.strip() if scheme.lower() == b"bearer" else b""
        token = token or headers.get(b"x-api-key", b"").strip()
        if not token:
            return False
        # Compare against every key, without an early exit, in constant time each.
        matches = [hmac.compare_digest(token, key) for key in keys]
        if not any(matches):
            return False
        _state(scope)["api_key_id"] = key_fingerprint(token)
        return True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or scope.get("method") == "OPTIONS":
            # A CORS preflight carries no credentials.
            await self.app(scope, receive, send)
            return
        if path in self.ADMIN_PATHS:
            if self.admin_keys and self._authorized(scope, self.admin_keys):
                await self.app(scope, receive, send)
                return
            await send_error(scope, send, self._admin_refusal())
            return
        if (
            not self.keys
            or self._open(path)
            or self._authorized(scope, self.keys + self.admin_keys)
        ):
            await self.app(scope, receive, send)
            return
        await send_error(
            scope,
            send,
            ApiError(
                401,
                "Incorrect or missing API key. Send it as 'Authorization: Bearer <key>' "
                "or 'x-api-key: <key>'.",
                type="invalid_request_error",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            ),
        )

    def _admin_refusal(self) -> ApiError:
        if not self.admin_keys:
            return ApiError(
                403,
                "The admin endpoints are disabled: start the server with --admin-key.",
                type="permission_error",
                code="admin_disabled",
            )
        return ApiError(
            401,
            "This endpoint needs an admin key (--admin-key), sent as 'Authorization: Bearer "
            "<key>' or 'x-api-key: <key>'.",
            type="invalid_request_error",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(rb"[\[\]{}]")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def json_depth(body: bytes) -> int:
    """Nesting depth of a JSON text, with strings removed first; C-speed regexes, so a
    body at the size cap costs milliseconds, and nothing recursive ever sees it."""
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING.sub(b'""', body)):
        if match.group() in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _has_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    return False


class LimitsMiddleware:
    """Body size (413), JSON nesting depth and text that is not Unicode (400) are refused
    before any parsing or validation; the body is then replayed to the app."""

    def __init__(self, app: ASGIApp, max_bytes: int, max_depth: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_depth = max_depth

    def _too_large(self) -> ApiError:
        return ApiError(
            413,
            f"Request body too large: the limit is {self.max_bytes} bytes.",
            code="request_too_large",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await send_error(scope, send, self._too_large())
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await send_error(scope, send, self._too_large())
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        error = self._check(body)
        if error is not None:
            await send_error(scope, send, error)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body, only the disconnect remains

        await self.app(scope, replay, send)

    def _check(self, body: bytes) -> ApiError | None:
        if json_depth(body) > self.max_depth:
            return ApiError(
                400,
                f"Request body nests deeper than {self.max_depth} levels.",
                code="json_too_deep",
            )
        if _SURROGATE_ESCAPE.search(body):
            try:
                if _has_lone_surrogate(json.loads(body)):
                    return ApiError(
                        400,
                        "Request text contains a lone UTF-16 surrogate, which is not Unicode.",
                        code="invalid_unicode",
                    )
            except ValueError:
                return None  # malformed JSON: FastAPI answers it with its own 400
        return None
