"""Non-streaming requests whose client leaves must not keep the engine busy."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

from fastapi import Request
from fastapi.responses import Response

T = TypeVar("T")

CLIENT_CLOSED = 499  # nginx's code for "client closed request"; nobody receives it


async def until_disconnect(
    request: Request, work: Awaitable[T], on_disconnect: Callable[[], None]
) -> T | Response:
    """Runs `work` unless the client goes first; then the work is cancelled, which closes
    its generations and so cancels them in the engine."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_client_gone(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not task.done():
        task.cancel()
        # Let the work unwind (engine cancel sent, figures recorded) before answering.
        with contextlib.suppress(asyncio.CancelledError):
            await task
        on_disconnect()
        return Response(status_code=CLIENT_CLOSED)
    return task.result()


async def _client_gone(request: Request) -> None:
    """Returns when the client disconnects. The body has already been read, so the next
    ASGI message can only be the disconnect."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
