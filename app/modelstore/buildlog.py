"""What a model build shows while it runs: a log line per stage, a progress bar for the long
ones, and the chatter of the tools it runs (optimum-cli's pages of TracerWarnings) kept in
a log file that is shown only when something fails."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

logger = logging.getLogger(__name__)

TAIL_LINES = 40

# Lines that say what a tool is doing, as opposed to warnings and the source lines Python
# quotes under them: the progress line shows the latest of these.
_NOISE = re.compile(r"warn|^\s|^\W*$|deprecat", re.IGNORECASE)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def progress(total: float | None, desc: str, unit: str = "B", bar_format: str | None = None) -> Any:
    """A bar on stderr. On a terminal it redraws in place; into a log file (make, CI) it
    writes a line every 15 s instead of hundreds of carriage returns."""
    interactive = sys.stderr.isatty()
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=unit == "B",
        unit_divisor=1024 if unit == "B" else 1000,
        file=sys.stderr,
        mininterval=0.2 if interactive else 15.0,
        dynamic_ncols=interactive,
        ncols=None if interactive else 100,
        leave=True,
        bar_format=bar_format,
    )


def tail(log: Path, lines: int = TAIL_LINES) -> str:
    text = log.read_text(errors="replace").replace("\r", "\n")
    return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])


def run_logged(cmd: Sequence[str], log: Path, desc: str) -> int:
    """Runs `cmd` with its stdout and stderr in `log`; meanwhile a progress line shows the
    elapsed time and what the tool last said that was not a warning. On failure the log's
    tail is logged, so the error is visible without opening the file."""
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with (
        log.open("wb") as sink,
        progress(None, desc, unit="line", bar_format="{desc}: {elapsed}{postfix}") as bar,
    ):
        # Unbuffered, so the progress line and the log keep pace with the tool.
        env = os.environ | {"PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        assert process.stdout is not None
        fd = process.stdout.fileno()
        pending = b""
        # Split on \r as well as \n: the tools' own progress bars redraw with \r.
        for chunk in iter(lambda: os.read(fd, 65536), b""):
            sink.write(chunk)
            pending += chunk
            *lines, pending = re.split(rb"[\r\n]", pending)
            for raw in lines:
                line = _ANSI.sub("", raw.decode(errors="replace"))
                if not _NOISE.search(line):
                    bar.set_postfix_str(line.strip()[:60], refresh=False)
                bar.update(1)
        returncode = process.wait()
    elapsed = time.monotonic() - started
    if returncode != 0:
        logger.error(
            "%s failed (exit code %d after %.0f s); the last lines of %s:\n%s",
            desc,
            returncode,
            elapsed,
            log,
            tail(log),
        )
    else:
        logger.info("%s done in %.0f s (full output in %s)", desc, elapsed, log)
    return returncode
