"""Prefill pacing: how many new prompt tokens go into one engine step, decided by ovchat
from what is decoding, rather than by genai's one fixed step budget.

One fixed budget cannot serve both ends: small, a long prompt trickles in and barely
slows the streams decoding beside it, but a burst of short requests waits many steps for
its first tokens; large, the burst is prefilled at once, but a long prompt freezes every
stream for the length of a big chunk. So the engine's budget is large, and while any
sequence decodes the worker hands genai at most `pace` new prompt tokens a step. A prompt
longer than that goes in as pieces: requests for its first `pace`, `2 pace`, ... tokens
that generate one token each and end, whose KV blocks the prefix cache keeps, so the
request proper finds all but its tail computed. Pieces are whole KV blocks, the unit the
prefix cache keeps.

The ledger remembers which block-aligned prefixes the engine has computed, so a prompt
whose long prefix is cached (a system prompt sent again) is not fed in pieces it does not
need. It can be wrong when genai evicted blocks to make room; then that prefix is simply
computed again in one step, as without pacing."""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


class PrefixLedger:
    """Block-aligned prompt prefixes the engine has computed, least recently used first;
    at most `capacity` blocks' worth of entries."""

    def __init__(self, block: int, capacity: int) -> None:
        self.block = block
        self.capacity = max(capacity, 1)
        self._seen: OrderedDict[int, None] = OrderedDict()

    def _hashes(self, prompt: Sequence[int], upto: int) -> list[int]:
        """One hash per whole block of prompt[:upto], each covering every block before it."""
        hashes: list[int] = []
        running = 0
        for start in range(0, upto - self.block + 1, self.block):
            running = hash((running, tuple(prompt[start : start + self.block])))
            hashes.append(running)
        return hashes

    def cached(self, prompt: Sequence[int]) -> int:
        """Tokens of the longest block-aligned prefix of `prompt` the ledger holds."""
        best = 0
        for i, h in enumerate(self._hashes(prompt, len(prompt))):
            if h not in self._seen:
                break
            self._seen.move_to_end(h)
            best = (i + 1) * self.block
        return best

    def record(self, prompt: Sequence[int], upto: int) -> None:
        for h in self._hashes(prompt, upto):
            self._seen[h] = None
            self._seen.move_to_end(h)
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)


@dataclass
class Direct(Generic[T]):
    """Add the request itself."""

    item: T


@dataclass
class Piece(Generic[T]):
    """Add a one-token request for the item's prompt[:upto], to be discarded when done."""

    item: T
    upto: int


@dataclass
class _Waiting(Generic[T]):
    item: T
    prompt: Sequence[int]
    done: int  # tokens of the prompt the engine is taken to have computed
    in_flight: bool = False


@dataclass
class PrefillPacer(Generic[T]):
    """Requests waiting to enter the engine, in arrival order, and what of them may enter
    before the next step."""

    pace: int  # new prompt tokens a step while any sequence decodes (whole blocks)
    ledger: PrefixLedger
    waiting: deque[_Waiting[T]] = field(default_factory=deque)

    def submit(self, item: T, prompt: Sequence[int]) -> None:
        self.waiting.append(_Waiting(item, prompt, self.ledger.cached(prompt)))

    def drop(self, item: T) -> None:
        self.waiting = deque(w for w in self.waiting if w.item is not item)

    def __contains__(self, item: T) -> bool:
        return any(w.item is item for w in self.waiting)

    def __len__(self) -> int:
        return len(self.waiting)

    def plan(self, decoding: bool) -> list[Direct[T] | Piece[T]]:
        """What to add before the next step. With nothing decoding everything goes in
        (genai's own budget then paces prefill). Else prompts enter in arrival order until
        `pace` new tokens are spent; the head of the line, if it does not fit, is fed one
        piece at a time, and nothing behind it overtakes it."""
        actions: list[Direct[T] | Piece[T]] = []
        if not decoding:
            # A request whose piece is computing waits one step for it, not to compute
            # the same blocks twice; the rest go in.
            for w in [w for w in self.waiting if not w.in_flight]:
                self.waiting.remove(w)
                actions.append(self._direct(w))
            return actions
        allowance = self.pace
        while self.waiting:
            head = self.waiting[0]
            if head.in_flight:
                break
            left = len(head.prompt) - head.done
            if left <= allowance:
                self.waiting.popleft()
                actions.append(self._direct(head))
                allowance -= left
                continue
            blocks = allowance // self.ledger.block
            if blocks == 0:
                break
            upto = head.done + blocks * self.ledger.block
            head.in_flight = True
            actions.append(Piece(head.item, upto))
            break
        return actions

    def _direct(self, waiting: _Waiting[T]) -> Direct[T]:
        self.ledger.record(waiting.prompt, len(waiting.prompt))
        return Direct(waiting.item)

    def piece_done(self, item: T, upto: int, computed: bool) -> None:
        """A piece ended; `computed` is False when it failed or was cancelled."""
        for w in self.waiting:
            if w.item is item:
                w.in_flight = False
                if computed:
                    w.done = max(w.done, upto)
                    self.ledger.record(w.prompt, upto)
                return
