"""requirements.lock: every package of the tested environment at its tested version, so a
fresh clone, CI and the image install what the suite passed with. `make lock` writes it
from `.venv` after the suite has passed there; this module writes it and says what moved.

    python -m app.lockfile write   # freeze .venv into requirements.lock, print what moved
    python -m app.lockfile check   # exit 1 when .venv differs from the lock
"""

from __future__ import annotations

import argparse
import logging
import re
import subprocess
import sys
from pathlib import Path

from app.settings import REPO_ROOT

logger = logging.getLogger(__name__)

LOCK = REPO_ROOT / "requirements.lock"
HEADER = """\
# The environment `make test` passed with, written by `make lock` (app/lockfile.py) from
# .venv: `make install` and CI install exactly this (--no-deps: nothing is resolved
# again), the image's stages take their versions from it. torch is the CPU build.
# Edit pyproject.toml's ranges and run `make lock`, never this file.
"""
_PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==(\S+)$")


def freeze(python: str = sys.executable) -> list[str]:
    """The environment's `name==version` lines as `pip freeze` prints them (its names and
    its order, so that its output and the lock's lines compare as text), ovchat itself
    left out."""
    out = subprocess.run(
        [python, "-m", "pip", "freeze", "--exclude-editable"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    lines = [line.strip() for line in out.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    parse("\n".join(lines))  # refuses what cannot be installed elsewhere
    return lines


def parse(text: str) -> dict[str, str]:
    """Versions by canonical name from `name==version` lines; anything else but comments
    (a package installed from a path or a URL) cannot be installed elsewhere, so it is
    refused rather than dropped."""
    pins = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _PIN.match(line)
        if not match:
            raise ValueError(f"not a pinned release, cannot be locked: {line}")
        pins[canonical(match.group(1))] = match.group(2)
    return pins


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def render(lines: list[str]) -> str:
    return HEADER + "".join(f"{line}\n" for line in lines)


def moved(old: dict[str, str], new: dict[str, str]) -> list[str]:
    """What changed, one entry per package: the commit message's list."""
    changes = []
    for name in sorted(old.keys() | new.keys()):
        before, after = old.get(name), new.get(name)
        if before == after:
            continue
        if before is None:
            changes.append(f"+{name} {after}")
        elif after is None:
            changes.append(f"-{name} {before}")
        else:
            changes.append(f"{name} {before} -> {after}")
    return changes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.lockfile")
    parser.add_argument("command", choices=("write", "check"))
    parser.add_argument("--lock", type=Path, default=LOCK)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    lines = freeze()
    current = parse("\n".join(lines))
    locked = parse(args.lock.read_text()) if args.lock.is_file() else {}
    changes = moved(locked, current)
    if args.command == "check":
        for change in changes:
            logger.info("differs from the lock: %s", change)
        if changes:
            logger.info("the environment is not the locked one: make install, or make lock")
            return 1
        logger.info("The environment is the locked one (%d packages)", len(current))
        return 0
    args.lock.write_text(render(lines))
    if changes:
        logger.info("Locked %d packages; moved: %s", len(current), ", ".join(changes))
    else:
        logger.info("Locked %d packages; nothing moved", len(current))
    return 0


if __name__ == "__main__":
    sys.exit(main())
