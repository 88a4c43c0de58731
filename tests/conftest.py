from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from app.modelstore import store
from app.settings import REPO_ROOT
from app.textmodel import TextModel

if TYPE_CHECKING:
    from bench.postgres import PostgresServer

STORE = REPO_ROOT / "model_store"


@pytest.fixture(scope="session", autouse=True)
def _state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Servers of the test session (in process, and the ones started as subprocesses,
    which inherit the environment) keep their state in a temporary folder, never in the
    user's ~/.local/state."""
    folder = tmp_path_factory.mktemp("state")
    previous = os.environ.get("OVCHAT_STATE_DIR")
    os.environ["OVCHAT_STATE_DIR"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("OVCHAT_STATE_DIR", None)
    else:
        os.environ["OVCHAT_STATE_DIR"] = previous


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The tiny Phi-3 export (`make test` builds it first; built here if run alone)."""
    folder = store.model_dir(STORE, "tiny-phi3")
    if not store.is_complete(folder):
        from app.modelstore import tiny_phi3

        tiny_phi3.build(STORE)
    return folder


@pytest.fixture(scope="session")
def window_model_dir() -> Path:
    """The tiny Phi-3 with a 64-token attention window and context-dependent outputs."""
    from app.modelstore import tiny_phi3

    folder = store.model_dir(STORE, tiny_phi3.TINY_WINDOW.name)
    if not store.is_complete(folder):
        tiny_phi3.build(STORE, tiny_phi3.TINY_WINDOW)
    return folder


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    folder = store.model_dir(STORE, store.DEFAULT_MODEL)
    if not store.is_complete(folder):
        from app.modelstore import smollm2

        smollm2.build(STORE)
    return folder


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The embedding export (`make model` builds it; built here if missing)."""
    from app.modelstore import minilm

    folder = store.model_dir(STORE, minilm.NAME)
    if not store.is_complete(folder):
        minilm.build(STORE)
    return folder


@pytest.fixture(scope="session")
def text_model(tiny_model_dir: Path) -> TextModel:
    return TextModel.load(tiny_model_dir)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server for the session (bench/postgres.py), ~1 s to start;
    the tests that need one skip, saying what to install, where PostgreSQL is missing."""
    from bench import postgres

    try:
        server = postgres.start()
    except FileNotFoundError as missing:
        pytest.skip(f"these tests need a PostgreSQL server: {missing}")
    yield server
    server.stop()
