"""What chat and text completions share once a request is accepted: admission, the
deadline, token accounting, the request's log record, and the SSE frame around chunks."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from sse_starlette import EventSourceResponse
from starlette.background import BackgroundTask
from starlette.types import Message, Send

from app.admission import Ticket
from app.api.disconnect import until_disconnect
from app.engine.base import EngineError, RequestRejected, SamplingParams
from app.errors import ApiError
from app.generation import TextDelta, generate_choices
from app.protocol import StreamOptions, Usage, new_id, now
from app.state import ServerState

logger = logging.getLogger(__name__)

# Events are handed to sse-starlette as finished bytes: its own encoder builds an event
# object and regex-splits the data per event, work a one-line JSON payload never needs.
Event = bytes
DONE: Event = b"data: [DONE]\n\n"

# Stands for a chunk's text while its frame is serialized: control characters are always
# escaped in JSON, so its encoded form cannot occur in any other part of a chunk.
_TEXT_MARKER = "\x00ovchat-text\x00"
_TEXT_MARKER_JSON = json.dumps(_TEXT_MARKER, ensure_ascii=False).encode()


def line_safe(data: str) -> str:
    """JSON leaves U+2028, U+2029 and U+0085 unescaped, and many SSE readers split lines
    with str.splitlines(), which breaks at them and would cut an event in two."""
    if "\u2028" in data or "\u2029" in data or "\x85" in data:
        data = data.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
        data = data.replace("\x85", "\\u0085")
    return data


def event(payload: dict[str, Any]) -> Event:
    data = line_safe(json.dumps(payload, ensure_ascii=False, separators=(",", ":")))
    return b"data: " + data.encode() + b"\n\n"


def check_stream_options(stream: bool | None, options: StreamOptions | None) -> None:
    if options is not None and not stream:
        raise ApiError(
            400,
            "stream_options is only allowed when stream is true.",
            param="stream_options",
            code="invalid_value",
        )


def engine_failure(exc: EngineError) -> ApiError:
    if isinstance(exc, RequestRejected):
        return ApiError(400, f"The engine refused the request: {exc}", code="invalid_request")
    return ApiError(503, f"Generation failed: {exc}", code="engine_unavailable")


class _EventStream(EventSourceResponse):
    """sse-starlette's response without a cancel scope around every event when no send
    timeout is set: entering and leaving that scope was a tenth of the server's CPU per
    streamed token, for a timeout that is None."""

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        if self.send_timeout is None:
            await send(message)
        else:
            await super()._send_with_timeout(send, message)


class GenerationCall:
    """One accepted request: `jobs` are its (prompt, parameters) choices."""

    id_prefix = "cmpl"

    def __init__(
        self,
        state: ServerState,
        request: Request,
        jobs: list[tuple[list[int], SamplingParams]],
        stops: list[str],
        prompt_tokens: int,
        stream_options: StreamOptions | None,
    ) -> None:
        """Admits the request (429/503 when it cannot be) with one slot per choice."""
        self.ticket: Ticket = state.admission.admit(len(jobs))
        self.state = state
        self.jobs = jobs
        self.stops = stops
        self.prompt_tokens = prompt_tokens
        self.stream_options = stream_options
        # Read by the access log middleware once the response is over.
        self.record: dict[str, Any] = request.scope.setdefault("state", {})
        self.id = new_id(self.id_prefix)
        self.created = now()
        self.started = time.monotonic()
        self.first_token_s: float | None = None
        self.tokens = [0] * len(jobs)
        self.finishes: list[str | None] = [None] * len(jobs)
        self._frames: dict[int, tuple[bytes, bytes]] = {}

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def usage(self) -> Usage:
        completion = sum(self.tokens)
        return Usage(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=completion,
            total_tokens=self.prompt_tokens + completion,
        )

    def done(self, outcome: str) -> None:
        """Ends the request: frees its admission slot and leaves its figures for the
        access log line."""
        self.ticket.release()
        self.state.metrics.observe_generation(
            self.prompt_tokens,
            sum(self.tokens),
            self.first_token_s,
            time.monotonic() - self.started,
        )
        self.record["usage"] = {
            "id": self.id,
            "outcome": outcome,
            "choices": len(self.jobs),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": sum(self.tokens),
            "ttft_ms": "-" if self.first_token_s is None else f"{self.first_token_s * 1000:.1f}",
        }

    def header(self) -> dict[str, Any]:
        """The fields every response and chunk of this request carries."""
        return {
            "id": self.id,
            "created": self.created,
            "model": self.state.model_id,
            "system_fingerprint": self.state.system_fingerprint,
        }

    def stream_event(self, payload: dict[str, Any], usage: Usage | None) -> Event:
        """A chunk as sent: OpenAI sends `usage` only to clients that asked for it, and
        the usage chunk carries the timings when the server reports them."""
        if not self.include_usage:
            del payload["usage"]
        elif usage is not None:
            self.with_timings(payload)
        return event(payload)

    def text_event(self, index: int, text: str, build: Callable[[str], Event]) -> Event:
        """A chunk of choice `index` whose only variable part is its text. `build` makes
        it through the protocol models once, with a marker for the text; later chunks
        splice their text into that frame (the models and their JSON were the largest
        share of the server's CPU per streamed token)."""
        frame = self._frames.get(index)
        if frame is None:
            head, found, tail = build(_TEXT_MARKER).partition(_TEXT_MARKER_JSON)
            if not found or _TEXT_MARKER_JSON in tail:
                raise RuntimeError("a text chunk's frame must hold its text exactly once")
            frame = self._frames[index] = (head, tail)
        return frame[0] + line_safe(json.dumps(text, ensure_ascii=False)).encode() + frame[1]

    def with_timings(self, payload: dict[str, Any]) -> dict[str, Any]:
        """llama.cpp's per-request `timings`, when the server is set to report them."""
        if not self.state.settings.response_timings:
            return payload
        elapsed_ms = (time.monotonic() - self.started) * 1000
        prompt_ms = (self.first_token_s or 0.0) * 1000
        predicted = sum(self.tokens)
        predicted_ms = max(elapsed_ms - prompt_ms, 0.0)
        payload["timings"] = {
            "prompt_n": self.prompt_tokens,
            "prompt_ms": round(prompt_ms, 3),
            "predicted_n": predicted,
            "predicted_ms": round(predicted_ms, 3),
            "predicted_per_second": round(predicted / predicted_ms * 1000, 3)
            if predicted_ms
            else None,
        }
        return payload

    async def deltas(self) -> AsyncIterator[tuple[int, TextDelta]]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.state.settings.request_timeout_s
        async for index, delta in generate_choices(
            self.state.engine, self.state.text, self.jobs, self.stops, deadline
        ):
            if self.first_token_s is None and delta.completion_tokens:
                self.first_token_s = time.monotonic() - self.started
            self.tokens[index] = delta.completion_tokens
            self.finishes[index] = delta.finish_reason or self.finishes[index]
            yield index, delta

    async def collect(self, on_delta: Callable[[int, TextDelta], None]) -> None:
        """Runs every choice to its end. At the deadline the unfinished ones end with what
        they have and `length`, as OpenAI reports a cut answer."""
        try:
            async for index, delta in self.deltas():
                on_delta(index, delta)
        except TimeoutError:
            self.finishes = [f or "length" for f in self.finishes]
            self.done("timed out")
            return
        except EngineError as exc:
            self.done(f"failed: {exc}")
            raise engine_failure(exc) from exc
        except BaseException:
            self.done("cancelled: client disconnected")
            raise
        self.done("finished")

    async def complete(self) -> Response:
        raise NotImplementedError

    def stream(self) -> AsyncIterator[Event]:
        raise NotImplementedError

    async def respond(self, request: Request, stream: bool) -> Response:
        if stream:
            # The background task frees the slot even if the client left before the
            # stream's first step.
            response: Response = _EventStream(
                self.stream(),
                sep="\n",
                ping=15,
                background=BackgroundTask(self.ticket.release_async),
            )
            return response
        return await until_disconnect(request, self.complete(), self.ticket.release)

    async def sse(
        self,
        opening: Iterable[Event],
        chunks: Callable[[int, TextDelta], Iterable[Event]],
        usage_chunk: Callable[[], Event],
    ) -> AsyncIterator[Event]:
        """The stream: opening chunks, a chunk per delta, the usage chunk if asked, then
        [DONE]. A failure after the first byte can only be told in-band: one OpenAI error
        event, then [DONE]."""
        outcome = "cancelled: client disconnected"
        try:
            for item in opening:
                yield item
            try:
                async for index, delta in self.deltas():
                    for item in chunks(index, delta):
                        yield item
                if self.include_usage:
                    yield usage_chunk()
                outcome = "streamed"
            except TimeoutError:
                outcome = "timed out"
                limit = self.state.settings.request_timeout_s
                yield event(
                    ApiError(
                        408, f"The request exceeded its {limit:g} s time limit.", code="timeout"
                    ).payload()
                )
            except EngineError as exc:
                outcome = f"failed: {exc}"
                yield event(engine_failure(exc).payload())
            yield DONE
        finally:
            self.done(outcome)
