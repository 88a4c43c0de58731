from __future__ import annotations

import logging

import pytest

from app.engine.base import EngineStartError
from app.engine.device import resolve_device


def test_auto_prefers_gpu0() -> None:
    assert resolve_device("auto", ["CPU", "GPU.0", "GPU.1"]) == "GPU.0"
    assert resolve_device("auto", ["CPU", "GPU"]) == "GPU.0"


def test_auto_falls_back_to_cpu_with_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="app.engine.device"):
        assert resolve_device("auto", ["CPU"]) == "CPU"
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1
    assert "GPU.0 is not available" in lines[0] and "falling back to CPU" in lines[0]


def test_explicit_absent_device_stops_startup() -> None:
    with pytest.raises(EngineStartError, match=r"GPU\.0"):
        resolve_device("GPU.0", ["CPU"])


def test_explicit_present_device() -> None:
    assert resolve_device("CPU", ["CPU"]) == "CPU"
    assert resolve_device("AUTO:GPU,CPU", ["CPU"]) == "AUTO:GPU,CPU"


def test_real_openvino_lists_cpu() -> None:
    assert resolve_device("auto") in {"GPU.0", "CPU"}
