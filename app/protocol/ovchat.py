"""ovchat's own routes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class Health(BaseModel):
    status: Literal["ok", "loading", "unavailable"]
    model: str | None = None
    engine: str | None = None
    in_flight: int | None = None  # sequences admitted and not yet finished
    engine_running: int | None = None  # requests the engine holds right now
    draining: bool | None = None
