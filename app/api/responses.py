"""The Responses API: POST /v1/responses (JSON, stream or background), the stored
responses (GET, DELETE, input_items, cancel) and POST /v1/responses/input_tokens. Routes
translate and delegate: the dialect validates and renders (app/dialects/openai_responses.py),
the store keeps responses (app/storage/responses.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from fastapi.responses import Response as HttpResponse

from app.api.common import ERROR_RESPONSES, State, admit, generation_model, respond
from app.dialects import openai_responses
from app.dialects.openai_responses import ResponsePlan, ResponsesRenderer, Store
from app.errors import ApiError
from app.protocol.openai_responses import (
    ITEMS,
    CountTokensRequest,
    CreateResponse,
    DeletedResponse,
    InputItem,
    InputTokens,
    ItemList,
    Response,
)
from app.state import ServerState
from app.storage.responses import UNFINISHED, ChainBroken, StoredResponse

logger = logging.getLogger(__name__)
router = APIRouter()


def owner(request: Request) -> str | None:
    """Whose responses these are: the API key's fingerprint (app/middleware.py)."""
    found: str | None = request.scope.get("state", {}).get("api_key_id")
    return found


def not_found(response_id: str) -> ApiError:
    return ApiError(
        404,
        f"Response with id '{response_id}' not found.",
        param="response_id",
        code="not_found",
    )


async def stored(state: ServerState, response_id: str, request: Request) -> StoredResponse:
    record = await state.responses.get(response_id, owner(request))
    if record is None:
        raise not_found(response_id)
    return record


async def history(state: ServerState, previous_id: str | None, who: str | None) -> list[InputItem]:
    """The conversation a request continues: every item of the stored chain."""
    if previous_id is None:
        return []
    gone = ApiError(
        404,
        f"Previous response with id '{previous_id}' not found.",
        param="previous_response_id",
        code="previous_response_not_found",
    )
    head = await state.responses.get(previous_id, who)
    if head is None:
        raise gone
    if head.status in UNFINISHED:
        raise ApiError(
            400,
            f"Previous response with id '{previous_id}' is still {head.status}.",
            param="previous_response_id",
        )
    try:
        items = await state.responses.chain(previous_id, who)
    except ChainBroken as exc:
        raise gone from exc
    return ITEMS.validate_python(items)


def storer(state: ServerState, who: str | None, prepared: ResponsePlan) -> Store:
    created = time.time()

    async def put(response: Response) -> None:
        await state.responses.put(
            StoredResponse(
                id=response.id,
                owner=who,
                created_at=created,
                status=response.status,
                previous_id=response.previous_response_id,
                response=response.model_dump(mode="json"),
                input=prepared.prompt.items,
            )
        )

    return put


@router.post(
    "/v1/responses",
    response_model=Response,
    responses=ERROR_RESPONSES,
    summary="Create a model response (OpenAI Responses API)",
)
async def create_response(body: CreateResponse, request: Request, state: State) -> HttpResponse:
    if body.model_extra:
        logger.debug("Ignoring unknown request fields: %s", sorted(body.model_extra))
    who = owner(request)
    async with generation_model(state, request, body.model, body.keep_alive) as serving:
        earlier = await history(state, body.previous_response_id, who)
        prepared = openai_responses.validate(body, serving.model.context, earlier)
        run = await admit(state, serving, prepared.plan, request, "resp_")
        store = storer(state, who, prepared) if body.store is not False else None
        renderer = ResponsesRenderer(run, body, prepared.prompt, store)
        if body.background and store is not None:
            return await background(state, renderer, store)
        return await respond(request, run, renderer, bool(body.stream))


async def background(state: ServerState, renderer: ResponsesRenderer, store: Store) -> HttpResponse:
    """Answers at once with the queued response; the run goes on in a task of the
    server's, polled with GET and stopped with POST .../cancel."""
    queued = renderer.snapshot("queued")
    await store(queued)

    async def run() -> None:
        try:
            await store(renderer.snapshot("in_progress"))
            await renderer.collect()
        except asyncio.CancelledError:
            await renderer.finish("cancelled")
        except Exception:
            logger.exception("Background response %s failed", renderer.id)
            error = ApiError(500, "The server had an error processing this response.")
            await renderer.finish("failed", error)
        finally:
            renderer.run.done("cancelled")  # frees the slot if the run never started
            state.background.pop(renderer.id, None)
            # The POST's access line was written when it answered "queued": the run's
            # figures get a line of their own, in the same form.
            usage = renderer.run.record.get("usage") or {}
            logger.info(
                "background response ended:%s", "".join(f" {k}={v}" for k, v in usage.items())
            )

    state.background[renderer.id] = asyncio.create_task(run(), name=f"background {renderer.id}")
    return JSONResponse(queued.model_dump(mode="json"))


@router.get("/v1/responses/{response_id}", response_model=Response, responses=ERROR_RESPONSES)
async def get_response(
    response_id: str, request: Request, state: State, stream: bool = False
) -> dict[str, Any]:
    if stream:
        raise ApiError(
            400,
            "Streaming a stored response again is not supported; GET it without stream.",
            param="stream",
            code="unsupported_parameter",
        )
    return (await stored(state, response_id, request)).response


@router.delete(
    "/v1/responses/{response_id}", response_model=DeletedResponse, responses=ERROR_RESPONSES
)
async def delete_response(response_id: str, request: Request, state: State) -> DeletedResponse:
    await stored(state, response_id, request)
    await _stop(state, response_id)
    if not await state.responses.delete(response_id, owner(request)):
        raise not_found(response_id)
    return DeletedResponse(id=response_id)


@router.post(
    "/v1/responses/{response_id}/cancel", response_model=Response, responses=ERROR_RESPONSES
)
async def cancel_response(response_id: str, request: Request, state: State) -> dict[str, Any]:
    record = await stored(state, response_id, request)
    if not record.response.get("background"):
        raise ApiError(400, "Only background responses can be cancelled.", param="response_id")
    await _stop(state, response_id)
    return (await stored(state, response_id, request)).response


async def _stop(state: ServerState, response_id: str) -> None:
    task = state.background.get(response_id)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@router.get(
    "/v1/responses/{response_id}/input_items",
    response_model=ItemList,
    responses=ERROR_RESPONSES,
)
async def input_items(
    response_id: str,
    request: Request,
    state: State,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
) -> ItemList:
    items = (await stored(state, response_id, request)).input
    if order == "desc":
        items = items[::-1]
    if after is not None:
        ids = [item.get("id") for item in items]
        if after not in ids:
            raise ApiError(400, f"No input item with id '{after}'.", param="after")
        items = items[ids.index(after) + 1 :]
    page = items[:limit]
    return ItemList(
        data=page,
        first_id=page[0]["id"] if page else None,
        last_id=page[-1]["id"] if page else None,
        has_more=len(items) > limit,
    )


@router.post("/v1/responses/input_tokens", response_model=InputTokens, responses=ERROR_RESPONSES)
async def input_tokens(body: CountTokensRequest, request: Request, state: State) -> InputTokens:
    items = await history(state, body.previous_response_id, owner(request))
    async with generation_model(state, request, body.model) as serving:
        prompt = openai_responses.encode(body, serving.model.context, items)
    return InputTokens(input_tokens=len(prompt.ids))
