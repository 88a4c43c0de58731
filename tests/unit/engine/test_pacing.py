"""The prefill pacer's decisions (app/engine/pacing.py); the worker that carries them out
is tested in test_genai_worker.py, the speed they buy in bench/burst.py."""

from __future__ import annotations

from app.engine.pacing import Direct, Piece, PrefillPacer, PrefixLedger


def pacer(pace: int = 64, block: int = 32) -> PrefillPacer[str]:
    return PrefillPacer(pace, PrefixLedger(block, capacity=1000))


def test_with_nothing_decoding_everything_goes_in_whole() -> None:
    p = pacer()
    p.submit("a", list(range(500)))
    p.submit("b", list(range(1000, 1010)))
    assert p.plan(decoding=False) == [Direct("a"), Direct("b")]
    assert not p


def test_while_decoding_a_long_prompt_goes_in_whole_blocks_of_the_pace() -> None:
    p = pacer(pace=64)
    prompt = list(range(150))
    p.submit("a", prompt)
    assert p.plan(decoding=True) == [Piece("a", 64)]
    assert p.plan(decoding=True) == []  # its piece computes first
    p.piece_done("a", 64, computed=True)
    assert p.plan(decoding=True) == [Piece("a", 128)]
    p.piece_done("a", 128, computed=True)
    assert p.plan(decoding=True) == [Direct("a")]  # 22 tokens left: within the pace


def test_short_prompts_share_a_steps_pace_in_arrival_order() -> None:
    p = pacer(pace=64)
    p.submit("a", list(range(30)))
    p.submit("b", list(range(100, 130)))
    p.submit("c", list(range(200, 230)))
    assert p.plan(decoding=True) == [Direct("a"), Direct("b")]
    assert p.plan(decoding=True) == [Direct("c")]


def test_nothing_overtakes_the_head_of_the_line() -> None:
    p = pacer(pace=64)
    p.submit("long", list(range(300)))
    p.submit("short", list(range(1000, 1005)))
    assert p.plan(decoding=True) == [Piece("long", 64)]
    assert p.plan(decoding=True) == []


def test_a_cached_prefix_is_not_fed_again() -> None:
    p = pacer(pace=64)
    system = list(range(256))
    p.submit("first", [*system, 1, 2, 3])
    assert p.plan(decoding=False) == [Direct("first")]  # recorded as computed
    p.submit("second", [*system, 7, 8, 9, 10])
    assert p.plan(decoding=True) == [Direct("second")]  # only 4 new tokens


def test_a_failed_piece_is_fed_again_and_a_dropped_request_leaves_the_line() -> None:
    p = pacer(pace=32)
    p.submit("a", list(range(100)))
    p.submit("b", list(range(500, 510)))
    assert p.plan(decoding=True) == [Piece("a", 32)]
    p.piece_done("a", 32, computed=False)
    assert p.plan(decoding=True) == [Piece("a", 32)]
    p.drop("a")
    assert "a" not in p
    assert p.plan(decoding=True) == [Direct("b")]


def test_when_decoding_stops_a_request_waits_only_for_its_own_piece() -> None:
    p = pacer(pace=32)
    p.submit("a", list(range(100)))
    p.submit("b", list(range(500, 600)))
    assert p.plan(decoding=True) == [Piece("a", 32)]
    assert p.plan(decoding=False) == [Direct("b")]
    p.piece_done("a", 32, computed=True)
    assert p.plan(decoding=False) == [Direct("a")]


def test_the_ledger_forgets_the_least_recently_used_blocks() -> None:
    ledger = PrefixLedger(block=4, capacity=3)
    first, second = list(range(12)), list(range(100, 108))
    ledger.record(first, 12)
    assert ledger.cached([*first, 99]) == 12
    ledger.record(second, 8)  # 5 blocks' entries for room for 3
    assert ledger.cached(second) == 8
    assert ledger.cached(first) == 0  # its first block went first: nothing after it counts
    assert ledger.cached(list(range(3))) == 0  # under one block
