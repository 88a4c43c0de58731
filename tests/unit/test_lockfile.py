from __future__ import annotations

import pytest

from app.lockfile import moved, parse, render


def test_the_lock_keeps_pips_lines_and_says_what_moved() -> None:
    lines = ["PyYAML==6.0.4", "torch==2.13.0+cpu", "typing_extensions==4.16.0"]
    assert render(lines).splitlines()[-3:] == lines  # as pip freeze prints them
    old = parse(render(lines))
    assert old == {"pyyaml": "6.0.4", "torch": "2.13.0+cpu", "typing-extensions": "4.16.0"}
    new = {"pyyaml": "6.0.5", "torch": "2.13.0+cpu", "uvloop": "0.22.1"}
    assert moved(old, new) == [
        "pyyaml 6.0.4 -> 6.0.5",
        "-typing-extensions 4.16.0",
        "+uvloop 0.22.1",
    ]
    assert moved(new, new) == []


def test_what_cannot_be_installed_elsewhere_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot be locked"):
        parse("mypkg @ file:///home/me/mypkg-1.0-py3-none-any.whl\n")
