"""Server-sent events for every dialect: the frame, the response, and the loop that turns
a run's events into frames through the dialect's renderer."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Hashable
from typing import Any, Protocol

from sse_starlette import EventSourceResponse
from starlette.types import Message, Send

from app.core.generation import Event
from app.core.run import GenerationRun, engine_failure, timeout_error
from app.engine.base import EngineError
from app.errors import ApiError

# Frames are handed to sse-starlette as finished bytes: its own encoder builds an event
# object and regex-splits the data per event, work a one-line JSON payload never needs.
Frame = bytes

# Stands for a frame's text while the frame is serialized: control characters are always
# escaped in JSON, so its encoded form cannot occur in any other part of a frame.
_TEXT_MARKER = "\x00ovchat-text\x00"
_TEXT_MARKER_JSON = json.dumps(_TEXT_MARKER, ensure_ascii=False).encode()


def line_safe(data: str) -> str:
    """JSON leaves U+2028, U+2029 and U+0085 unescaped, and many SSE readers split lines
    with str.splitlines(), which breaks at them and would cut an event in two."""
    if "\u2028" in data or "\u2029" in data or "\x85" in data:
        data = data.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
        data = data.replace("\x85", "\\u0085")
    return data


def data_frame(payload: dict[str, Any]) -> Frame:
    data = line_safe(json.dumps(payload, ensure_ascii=False, separators=(",", ":")))
    return b"data: " + data.encode() + b"\n\n"


class TextFrames:
    """Frames whose only variable part is one string (a text delta, an arguments
    fragment). `build` makes the frame through the protocol models once, with a marker
    for the string; later frames splice their string into that frame (the models and
    their JSON were the largest share of the server's CPU per streamed token)."""

    def __init__(self) -> None:
        self._frames: dict[Hashable, tuple[bytes, bytes]] = {}

    def frame(self, key: Hashable, text: str, build: Callable[[str], Frame]) -> Frame:
        frame = self._frames.get(key)
        if frame is None:
            head, found, tail = build(_TEXT_MARKER).partition(_TEXT_MARKER_JSON)
            if not found or _TEXT_MARKER_JSON in tail:
                raise RuntimeError("a spliced frame must hold its text exactly once")
            frame = self._frames[key] = (head, tail)
        return frame[0] + line_safe(json.dumps(text, ensure_ascii=False)).encode() + frame[1]


class Renderer(Protocol):
    """A dialect's stream: what opens it, a run event's frames, what closes it."""

    def opening(self) -> list[Frame]: ...

    def frames(self, event: Event) -> list[Frame]: ...

    async def settle(self, error: ApiError | None) -> None:
        """After the last event or a failure, before the frames that tell the client:
        whatever must be done before the client hears the end (a response stored)."""
        ...

    def closing(self) -> list[Frame]:
        """After the last event (the usage chunk, when asked for)."""
        ...

    def error(self, error: ApiError) -> list[Frame]:
        """A failure after the first byte can only be told in-band."""
        ...

    def end(self) -> list[Frame]:
        """Last of all, also after an error (OpenAI's `[DONE]`)."""
        ...


async def stream(run: GenerationRun, renderer: Renderer) -> AsyncIterator[Frame]:
    outcome = "cancelled: client disconnected"
    try:
        for frame in renderer.opening():
            yield frame
        try:
            async for event in run.events():
                for frame in renderer.frames(event):
                    yield frame
            await renderer.settle(None)
            for frame in renderer.closing():
                yield frame
            outcome = "streamed"
        except TimeoutError:
            outcome = "timed out"
            error = timeout_error(run.state.settings.request_timeout_s)
            await renderer.settle(error)
            for frame in renderer.error(error):
                yield frame
        except EngineError as exc:
            outcome = f"failed: {exc}"
            error = engine_failure(exc)
            await renderer.settle(error)
            for frame in renderer.error(error):
                yield frame
        for frame in renderer.end():
            yield frame
    finally:
        run.done(outcome)


class EventStream(EventSourceResponse):
    """sse-starlette's response without a cancel scope around every event when no send
    timeout is set: entering and leaving that scope was a tenth of the server's CPU per
    streamed token, for a timeout that is None."""

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        if self.send_timeout is None:
            await send(message)
        else:
            await super()._send_with_timeout(send, message)
