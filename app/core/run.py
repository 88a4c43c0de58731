"""One admitted request, generating: its admission ticket, its deadline, its token
accounting and timings, and the record the access log prints. Protocol-neutral: a
dialect's renderer reads its events and writes them in its API's shape."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from app.admission import Ticket
from app.core.generation import ChoiceEnd, Event, Finish, choice_events, merge
from app.core.plan import GenerationPlan
from app.engine.base import EngineError, RequestRejected
from app.errors import ApiError
from app.state import GenerationModel, ServerState


def new_id(prefix: str) -> str:
    """`prefix` with its separator, as each API spells it: chatcmpl-..., resp_..., msg_..."""
    return f"{prefix}{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


def engine_failure(exc: EngineError) -> ApiError:
    if isinstance(exc, RequestRejected):
        return ApiError(400, f"The engine refused the request: {exc}", code="invalid_request")
    return ApiError(503, f"Generation failed: {exc}", code="engine_unavailable")


def timeout_error(limit: float) -> ApiError:
    return ApiError(408, f"The request exceeded its {limit:g} s time limit.", code="timeout")


class GenerationRun:
    """Admitted on creation (429/503 when it cannot be), with one slot per choice."""

    def __init__(
        self,
        state: ServerState,
        model: GenerationModel,
        plan: GenerationPlan,
        record: dict[str, Any],
        id_prefix: str,
    ) -> None:
        self.ticket: Ticket = model.admission.admit(len(plan.choices))
        self.state = state
        self.served = model
        self.plan = plan
        self.record = record  # read by the access log middleware once the response is over
        self.id = new_id(id_prefix)
        self.created = now()
        self.model = model.id
        self.fingerprint = model.system_fingerprint
        self.started = time.monotonic()
        self.first_token_s: float | None = None
        self.tokens = [0] * len(plan.choices)
        self.finishes: list[Finish | None] = [None] * len(plan.choices)
        self._ended = False

    @property
    def prompt_tokens(self) -> int:
        return self.plan.prompt_tokens

    @property
    def completion_tokens(self) -> int:
        return sum(self.tokens)

    def _count(self, choice: int, produced: int) -> None:
        if self.first_token_s is None and produced:
            self.first_token_s = time.monotonic() - self.started
        self.tokens[choice] = produced

    async def events(self) -> AsyncIterator[Event]:
        """Every choice's events. At the deadline the unfinished choices end `length`, as
        OpenAI reports a cut answer, and TimeoutError is raised."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.state.settings.request_timeout_s
        streams = [
            choice_events(
                self.served.engine,
                self.served.text,
                index,
                choice,
                self.plan.stops,
                self.plan.tools,
                self._count,
            )
            for index, choice in enumerate(self.plan.choices)
        ]
        try:
            async for event in merge(streams, deadline):
                if isinstance(event, ChoiceEnd):
                    self.finishes[event.choice] = event.finish
                yield event
        except TimeoutError:
            self.finishes = [f or "length" for f in self.finishes]
            raise

    async def collect(self, on_event: Callable[[Event], object]) -> None:
        """Runs every choice to its end, for a response sent whole. A timeout ends it with
        what it has; an engine failure is an ApiError."""
        try:
            async for event in self.events():
                on_event(event)
        except TimeoutError:
            self.done("timed out")
            return
        except EngineError as exc:
            self.done(f"failed: {exc}")
            raise engine_failure(exc) from exc
        except BaseException:
            self.done("cancelled: client disconnected")
            raise
        self.done("finished")

    def done(self, outcome: str) -> None:
        """Ends the request, once: frees its admission slot and leaves its figures for the
        access log line."""
        self.ticket.release()
        if self._ended:
            return
        self._ended = True
        self.state.metrics.observe_generation(
            self.model,
            self.prompt_tokens,
            self.completion_tokens,
            self.first_token_s,
            time.monotonic() - self.started,
        )
        self.record["usage"] = {
            "id": self.id,
            "outcome": outcome,
            "choices": len(self.plan.choices),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "ttft_ms": "-" if self.first_token_s is None else f"{self.first_token_s * 1000:.1f}",
        }

    def timings(self) -> dict[str, Any] | None:
        """llama.cpp's per-request `timings`, when the server is set to report them."""
        if not self.state.settings.response_timings:
            return None
        elapsed_ms = (time.monotonic() - self.started) * 1000
        prompt_ms = (self.first_token_s or 0.0) * 1000
        predicted = self.completion_tokens
        predicted_ms = max(elapsed_ms - prompt_ms, 0.0)
        return {
            "prompt_n": self.prompt_tokens,
            "prompt_ms": round(prompt_ms, 3),
            "predicted_n": predicted,
            "predicted_ms": round(predicted_ms, 3),
            "predicted_per_second": round(predicted / predicted_ms * 1000, 3)
            if predicted_ms
            else None,
        }
