"""A build runs its tools with their chatter kept in a log file, shown only on failure."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from app.modelstore import buildlog


def test_run_logged_keeps_output_in_the_log(tmp_path: Path) -> None:
    log = tmp_path / "tool.log"
    code = "import warnings; warnings.warn('noise'); print('step one'); print('step two')"
    assert buildlog.run_logged([sys.executable, "-c", code], log, "tool") == 0
    text = log.read_text()
    assert "noise" in text and "step two" in text


def test_run_logged_shows_the_tail_on_failure(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "tool.log"
    code = "import sys; print('\\n'.join(f'line {i}' for i in range(100))); sys.exit(3)"
    with caplog.at_level(logging.ERROR):
        assert buildlog.run_logged([sys.executable, "-c", code], log, "tool") == 3
    assert "line 99" in caplog.text and "line 10\n" not in caplog.text
