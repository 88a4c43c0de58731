"""The tiny Qwen2 model's folder, for the test modules of native tool calls (each makes
it a session fixture of its own): built on first use, as conftest builds tiny-phi3."""

from __future__ import annotations

from pathlib import Path

from app.modelstore import store, tiny_qwen2
from app.settings import REPO_ROOT

STORE = REPO_ROOT / "model_store"


def tiny_qwen2_dir() -> Path:
    folder = store.model_dir(STORE, tiny_qwen2.NAME)
    if not store.is_complete(folder):
        tiny_qwen2.build(STORE)
    return folder
