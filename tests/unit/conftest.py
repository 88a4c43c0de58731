from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.modelstore.store import ResolvedModel
from app.server import create_app
from app.settings import Settings
from app.textmodel import TextModel
from tests.unit.fakes import FakeEngine

REPLY = "Hello! The capital of France is Paris. 🙂 Done."


@pytest.fixture
def engine(text_model: TextModel) -> FakeEngine:
    eos = text_model.token_id("<|end|>")
    return FakeEngine(reply_ids=text_model.encode(REPLY), eos_id=eos)


@pytest.fixture
def settings(tiny_model_dir: Path) -> Settings:
    return Settings(model=str(tiny_model_dir), served_model_name="tiny")


@pytest.fixture
def client(settings: Settings, engine: FakeEngine) -> Iterator[TestClient]:
    def factory(_: Settings, __: ResolvedModel) -> FakeEngine:
        return engine

    with TestClient(create_app(settings, engine_factory=factory)) as test_client:
        yield test_client
