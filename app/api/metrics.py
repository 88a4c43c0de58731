from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from app.api.common import State
from app.metrics import CONTENT_TYPE
from app.protocol.ovchat import Load

router = APIRouter()


@router.get("/metrics", response_class=Response, include_in_schema=False)
async def metrics(state: State) -> Response:
    return Response(state.metrics.render(), media_type=CONTENT_TYPE)


@router.get("/get_load", response_model=Load)
async def get_load(state: State) -> Load:
    """What vllm-router's power_of_two policy polls on each worker: the sequences running
    plus those waiting (/metrics' vllm:num_requests_running + vllm:num_requests_waiting),
    summed over the loaded models. The router asks without naming a model, and a replica's
    models share its CPU, so one number for the replica is what it can compare."""
    stats = [loaded.stats() for loaded in state.models.loaded()]
    return Load(load=sum(s.running + s.waiting for s in stats))
