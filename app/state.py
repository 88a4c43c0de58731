"""What a running server holds: one engine and one model, created in the lifespan and
reached by routes through dependencies, never through module globals."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from app.admission import Admission
from app.engine.base import Engine
from app.metrics import Metrics
from app.settings import Settings
from app.storage.responses import ResponseStore
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
    responses: ResponseStore  # stored Responses API responses
    background: dict[str, asyncio.Task[None]] = field(default_factory=dict)  # by response id
