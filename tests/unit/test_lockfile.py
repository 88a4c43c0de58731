from __future__ import annotations

import pytest

from app.lockfile import moved, parse, render


def test_the_lock_round_trips_and_says_what_moved() -> None:
    old = parse("# header\nFastAPI==0.165.0\ntorch==2.13.0+cpu\nzstandard==0.25.0\n")
    assert old == {"fastapi": "0.165.0", "torch": "2.13.0+cpu", "zstandard": "0.25.0"}
    assert parse(render(old)) == old
    new = {"fastapi": "0.166.1", "torch": "2.13.0+cpu", "uvloop": "0.22.1"}
    assert moved(old, new) == ["fastapi 0.165.0 -> 0.166.1", "+uvloop 0.22.1", "-zstandard 0.25.0"]
    assert moved(new, new) == []


def test_what_cannot_be_installed_elsewhere_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot be locked"):
        parse("mypkg @ file:///home/me/mypkg-1.0-py3-none-any.whl\n")
