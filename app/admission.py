"""Bounded admission: the engine runs max_num_seqs sequences at once and max_queue more
may wait; anything beyond is answered 429 at once rather than queued without bound."""

from __future__ import annotations

from collections.abc import Callable

from app.errors import ApiError

RETRY_AFTER_S = 1


class Ticket:
    def __init__(self, admission: Admission, sequences: int) -> None:
        self._admission = admission
        self._sequences = sequences
        self._then: list[Callable[[], None]] = []

    def on_release(self, callback: Callable[[], None]) -> None:
        self._then.append(callback)

    def release(self) -> None:
        """Idempotent: both the response's end and its generator's end may call it."""
        if self._sequences:
            self._admission.in_flight -= self._sequences
            self._sequences = 0
            for callback in self._then:
                callback()
            self._then.clear()

    async def release_async(self) -> None:
        # As a background task: a sync callable would be sent to a worker thread.
        self.release()


class Admission:
    def __init__(self, running: int, waiting: int) -> None:
        self.capacity = running + waiting
        self.in_flight = 0
        self.draining = False

    def admit(self, sequences: int) -> Ticket:
        if self.draining:
            raise ApiError(
                503,
                "The server is shutting down.",
                code="server_shutting_down",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        if self.in_flight + sequences > self.capacity:
            raise ApiError(
                429,
                f"The server is at capacity ({self.capacity} sequences running or queued); "
                f"retry shortly.",
                type="rate_limit_error",
                code="server_overloaded",
                headers={
                    "Retry-After": str(RETRY_AFTER_S),
                    "retry-after-ms": str(RETRY_AFTER_S * 1000),
                },
            )
        self.in_flight += sequences
        return Ticket(self, sequences)
