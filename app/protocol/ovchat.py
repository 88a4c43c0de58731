"""ovchat's own routes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class ModelHealth(BaseModel):
    status: Literal["loaded", "loading", "unloaded"]
    kind: Literal["generation", "embedding"]
    ready: bool  # loaded and its engine up
    engine: str | None = None
    in_flight: int = 0  # sequences admitted and not yet finished
    engine_running: int = 0  # requests the engine holds right now
    pid: int | None = None  # its engine's process, when it has one
    memory_bytes: int | None = None
    last_error: str | None = None  # why the last load failed


class Health(BaseModel):
    status: Literal["ok", "loading", "unavailable"]
    in_flight: int | None = None
    draining: bool | None = None
    models: dict[str, ModelHealth] | None = None


class ModelAction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str


class Load(BaseModel):
    """GET /get_load, in the shape vllm-router's power_of_two policy reads."""

    load: int  # sequences running plus waiting, over every loaded model
