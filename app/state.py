"""What a running server holds: one engine and one model, created in the lifespan and
reached by routes through dependencies, never through module globals."""

from __future__ import annotations

from dataclasses import dataclass

from app.admission import Admission
from app.engine.base import Engine
from app.metrics import Metrics
from app.settings import Settings
from app.textmodel import TextModel


@dataclass
class ServerState:
    settings: Settings
    model_id: str
    engine: Engine
    text: TextModel
    created: int
    system_fingerprint: str
    admission: Admission
    metrics: Metrics
