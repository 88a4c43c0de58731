"""The CLI commands a user runs, as subprocesses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from app.modelstore import store
from app.modelstore.tiny_phi3 import TINY, build_hf_folder
from app.settings import REPO_ROOT


def ovchat(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
        check=False,
    )


def test_export_a_local_hf_folder(tmp_path: Path) -> None:
    """`ovchat export` runs the sample's export; the hub is unreachable here, so it is
    exercised on a local HF folder, as `make export MODEL=<folder>` would."""
    hf = tmp_path / "hf"
    build_hf_folder(TINY, hf)
    out = tmp_path / "store" / "mine" / "int4"
    result = ovchat("export", str(hf), "--output", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert store.is_complete(out) and store.has_manifest(out)
    assert "--group-size 128" in result.stderr and "--sym" in result.stderr
    assert not out.with_name("int4.partial").exists()


def test_absent_explicit_device_stops_startup(tiny_model_dir: Path) -> None:
    result = ovchat("serve", "--model", str(tiny_model_dir), "--device", "GPU.0", "--port", "0")
    assert result.returncode != 0
    assert "device 'GPU.0' was requested but OpenVINO lists only CPU" in result.stderr


def test_incomplete_model_is_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    broken = tmp_path / "broken" / "int4"
    broken.mkdir(parents=True)
    (broken / "config.json").write_text("{}")
    result = ovchat("serve", "--model", str(broken), "--port", "0")
    assert result.returncode != 0
    assert "incomplete" in result.stderr


def test_help_lists_every_command() -> None:
    for args in (
        ["--help"],
        ["serve", "--help"],
        ["export", "--help"],
        ["model", "build", "--help"],
    ):
        result = ovchat(*args)
        assert result.returncode == 0
        assert "usage: ovchat" in result.stdout
