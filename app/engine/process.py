"""An engine's own process, as the server sees it: spawned, fed typed messages through a
queue, read on the event loop from a pipe, restarted with backoff when it dies. Both
engines (genai's generation, the embedding encoder) run in one, because their calls hold
the GIL (openvino-genai's step) or would stall the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing as mp
import os
from collections.abc import AsyncGenerator, Callable
from typing import Any

from app.engine.base import EngineError, EngineStartError, SamplingParams, TokenDelta
from app.engine.messages import AddRequest, CancelRequest, EngineReady, StopEngine

logger = logging.getLogger(__name__)

_POLL_S = 0.2


class EngineProcess:
    """`target(config, inbox, writer)` is the child's entry point: it sends EngineReady
    (or why it could not load) once, then batches of messages. `on_message` gets each
    message on the event loop; `on_exit` is told when the child dies unasked, after which
    the process restarts by itself until it is stopped."""

    def __init__(
        self,
        what: str,
        target: Callable[[Any, Any, Any], None],
        config: Any,
        startup_timeout_s: float,
        on_message: Callable[[Any], None],
        on_exit: Callable[[], None],
    ) -> None:
        self.what = what  # "engine", "embedding engine": for the log lines and errors
        self._target = target
        self._config = config
        self._startup_timeout_s = startup_timeout_s
        self._on_message = on_message
        self._on_exit = on_exit
        self._ctx = mp.get_context("spawn")  # fork would copy the server's threads and loop
        self._inbox: Any = None
        self._outbox: Any = None  # read end of the child's pipe
        self._process: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watching = False
        self._restarting: asyncio.Task[None] | None = None
        self.ready = False
        self.started: EngineReady | None = None  # what the child said when it was ready
        self.stopping = False
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        alive = self._process is not None and self._process.is_alive()
        return int(self._process.pid) if alive else None

    def is_ready(self) -> bool:
        return self.ready and self._process is not None and self._process.is_alive()

    def send(self, message: object) -> None:
        self._inbox.put(message)

    def launch(self) -> None:
        """Starts the child, which loads its model meanwhile; `attach` waits for it."""
        self._loop = asyncio.get_running_loop()
        self._inbox = self._ctx.Queue()
        self._outbox, writer = self._ctx.Pipe(duplex=False)
        slug = self.what.replace(" ", "-")
        self._process = self._ctx.Process(
            target=self._target, args=(self._config, self._inbox, writer), name=f"ovchat-{slug}"
        )
        self._process.start()
        writer.close()  # the child holds the only write end: its death reads as EOF here
        logger.info(
            "%s process %d started; loading %s",
            self.what.capitalize(),
            self._process.pid,
            getattr(self._config, "model_path", "?"),
        )

    async def attach(self) -> None:
        first = await asyncio.to_thread(self._await_first_message)
        if not isinstance(first, EngineReady):
            self._process.join(timeout=5)
            raise EngineStartError(f"the {self.what} could not load the model: {first}")
        self.started = first
        self.ready = True
        assert self._loop is not None
        self._loop.add_reader(self._outbox.fileno(), self._on_readable)
        # uvloop makes a watched descriptor non-blocking, and a message longer than the
        # pipe's buffer (the scoring engine's scored prompts are hundreds of KB) would then
        # fail half read, as if the child had died: recv() must wait for the rest, which
        # the child is writing already.
        os.set_blocking(self._outbox.fileno(), True)
        self._watching = True

    def _await_first_message(self) -> EngineReady | str:
        """EngineReady, or why the child did not start."""
        waited = 0.0
        while waited < self._startup_timeout_s:
            try:
                if self._outbox.poll(_POLL_S):
                    message = self._outbox.recv()[0]
                    return message if isinstance(message, EngineReady) else str(message)
            except (EOFError, OSError):
                pass
            waited += _POLL_S
            if not self._process.is_alive():
                return f"{self.what} process exited with code {self._process.exitcode}"
        return f"no answer from the {self.what} process in {self._startup_timeout_s:.0f} s"

    def _on_readable(self) -> None:
        """The child's output, read on the event loop when the pipe has some: no reader
        thread, so no thread switch and no cross-thread wake-up per message. The child
        writes each batch whole in one send, so recv() never waits on half of one for long."""
        try:
            # One batch per call: the loop calls again while the pipe stays readable, and
            # skipping a poll() per call saves a system call per batch.
            for message in self._outbox.recv():
                self._on_message(message)
        except (EOFError, OSError) as exc:
            logger.debug("Reading the %s's pipe: %r", self.what, exc)
            self._unwatch()
            if not self.stopping:
                self.ready = False
                logger.error("The %s stopped unexpectedly (pid %s)", self.what, self._process.pid)
                self._on_exit()
                if self._restarting is None or self._restarting.done():
                    self._restarting = asyncio.create_task(self._restart())

    def _unwatch(self) -> None:
        if self._watching and self._loop is not None:
            self._loop.remove_reader(self._outbox.fileno())
            self._watching = False

    async def _restart(self) -> None:
        delay = 0.5
        while not self.stopping:
            self.restarts += 1
            logger.warning("Restarting the %s process (restart %d)", self.what, self.restarts)
            try:
                self.launch()
                await self.attach()
                logger.info("The %s process is back", self.what)
                return
            except EngineStartError as exc:
                logger.error("The %s restart failed: %s; retrying in %.1f s", self.what, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def back(self, timeout_s: float) -> None:
        """Waits (at most `timeout_s`) for a restart under way to finish."""
        restarting = self._restarting
        if not self.is_ready() and restarting is not None and not restarting.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(restarting), timeout_s)

    async def stop(self) -> None:
        """Asks the child to stop, then makes it."""
        self.stopping = True
        self.ready = False
        if self._restarting is not None:
            self._restarting.cancel()
        if self._process is None:
            return
        self._unwatch()
        with contextlib.suppress(Exception):
            self._inbox.put(StopEngine())
        await asyncio.to_thread(self._process.join, 10)
        if self._process.is_alive():
            self._process.terminate()
            await asyncio.to_thread(self._process.join, 5)
        logger.info("The %s process stopped", self.what)


async def request_stream(
    process: EngineProcess,
    streams: dict[int, asyncio.Queue[TokenDelta | EngineError]],
    rid: int,
    prompt_ids: list[int],
    params: SamplingParams,
) -> AsyncGenerator[TokenDelta, None]:
    """One request through an engine process: added, its deltas read from the queue the
    engine's dispatcher fills (`streams[rid]`) until the last one or an error, and
    cancelled in the engine if the consumer leaves early (the client disconnected)."""
    stream: asyncio.Queue[TokenDelta | EngineError] = asyncio.Queue()
    streams[rid] = stream
    finished = False
    try:
        process.send(AddRequest(rid, prompt_ids, params))
        while True:
            item = await stream.get()
            if isinstance(item, EngineError):
                finished = True
                raise item
            finished = item.finish is not None
            yield item
            if finished:
                return
    finally:
        del streams[rid]
        if not finished and process.is_ready():
            process.send(CancelRequest(rid))
