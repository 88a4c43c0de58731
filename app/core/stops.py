"""Stop strings that never reach the client, even when they span token boundaries or
arrive across stream chunks."""

from __future__ import annotations


class StopMatcher:
    """Feed it text as it is generated; it releases only text that cannot be the start of
    a stop string, and reports the first stop string found."""

    def __init__(self, stops: list[str]) -> None:
        self._stops = [s for s in stops if s]
        self._pending = ""
        self.hit: str | None = None  # the stop string found, for APIs that report it

    def feed(self, text: str) -> tuple[str, bool]:
        """Returns (text safe to send, whether a stop string was hit)."""
        if not self._stops:
            return text, False
        self._pending += text
        found = [(i, n, s) for n, s in enumerate(self._stops) if (i := self._pending.find(s)) >= 0]
        if found:
            hit, _, self.hit = min(found)
            out, self._pending = self._pending[:hit], ""
            return out, True
        hold = self._longest_partial()
        cut = len(self._pending) - hold
        out, self._pending = self._pending[:cut], self._pending[cut:]
        return out, False

    def flush(self) -> str:
        out, self._pending = self._pending, ""
        return out

    def _longest_partial(self) -> int:
        """Length of the longest suffix of the pending text that begins some stop string."""
        best = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(self._pending)), best, -1):
                if self._pending.endswith(stop[:size]):
                    best = size
                    break
        return best
