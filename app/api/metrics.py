from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from app.api.common import State
from app.metrics import CONTENT_TYPE

router = APIRouter()


@router.get("/metrics", response_class=Response, include_in_schema=False)
async def metrics(state: State) -> Response:
    return Response(state.metrics.render(), media_type=CONTENT_TYPE)
