from __future__ import annotations

from app.core.stops import StopMatcher


def feed_all(stops: list[str], pieces: list[str]) -> tuple[str, bool]:
    matcher = StopMatcher(stops)
    out = []
    for piece in pieces:
        text, hit = matcher.feed(piece)
        out.append(text)
        if hit:
            return "".join(out), True
    out.append(matcher.flush())
    return "".join(out), False


def test_stop_inside_one_piece() -> None:
    assert feed_all(["END"], ["abcENDdef"]) == ("abc", True)


def test_stop_spanning_pieces_never_leaks() -> None:
    matcher = StopMatcher(["<stop>"])
    assert matcher.feed("hello <st") == ("hello ", False)
    assert matcher.feed("op> more") == ("", True)


def test_partial_match_that_fails_is_released() -> None:
    matcher = StopMatcher(["<stop>"])
    assert matcher.feed("a <st") == ("a ", False)
    assert matcher.feed("ay") == ("<stay", False)


def test_earliest_of_several_stops_wins() -> None:
    assert feed_all(["zz", "b"], ["a", "bzz"]) == ("a", True)


def test_no_stops_passes_through() -> None:
    assert feed_all([], ["a", "b"]) == ("ab", False)


def test_text_held_at_the_end_is_flushed() -> None:
    assert feed_all(["STOP"], ["abc ST"]) == ("abc ST", False)


def test_reports_which_stop_string_ended_the_text() -> None:
    matcher = StopMatcher(["END", "STOP"])
    assert matcher.hit is None
    assert matcher.feed("one STOP two END") == ("one ", True)
    assert matcher.hit == "STOP"


def test_the_earliest_stop_wins_and_ties_go_to_the_first_listed() -> None:
    matcher = StopMatcher(["ab", "a"])
    assert matcher.feed("xab") == ("x", True)
    assert matcher.hit == "ab"
