"""The Phi-3 cookbook sample's path, served: OVModelForCausalLM with the sample's ov_config,
`generate` with a streamer, one request at a time in arrival order. It is slow by design;
it is the reference the continuous-batching engine is checked against."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from app.engine.base import (
    EngineError,
    EngineStartError,
    EngineStats,
    SamplingParams,
    TokenDelta,
)

logger = logging.getLogger(__name__)

_DONE = object()


class _Cancelled(Exception):
    pass


class OptimumEngine:
    name = "optimum"
    # The sample's generate(): plain sampling only; anything more is refused up front.
    capabilities: frozenset[str] = frozenset()

    def __init__(self, model_path: Path, device: str, ov_config: dict[str, str]) -> None:
        self._path = model_path
        self._device = device
        self._ov_config = ov_config
        self._model: Any = None
        # One worker thread: requests run strictly one at a time, in arrival order.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="optimum")
        self._holding = 0
        self._pending = 0  # requests accepted and not yet finished, running one included

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._load)

    async def wait_ready(self) -> None:
        pass  # start() loaded the model in this process

    def _load(self) -> None:
        try:
            from optimum.intel import OVModelForCausalLM
            from transformers import AutoConfig
        except ImportError as exc:
            raise EngineStartError(
                "the optimum engine needs the export extras: pip install 'ovchat[export]'"
            ) from exc
        started = time.monotonic()
        try:
            self._model = OVModelForCausalLM.from_pretrained(
                self._path,
                device=self._device,
                ov_config=self._ov_config,
                config=AutoConfig.from_pretrained(self._path, trust_remote_code=True),
                trust_remote_code=True,
            )
        except Exception as exc:
            raise EngineStartError(f"the engine could not load the model: {exc}") from exc
        logger.info(
            "Model loaded once by the optimum engine from %s on %s in %.2f s",
            self._path,
            self._device,
            time.monotonic() - started,
        )

    def pid(self) -> int | None:
        return None  # in the server's own process: its memory is not its own to measure

    def is_ready(self) -> bool:
        return self._model is not None

    def running(self) -> int:
        return self._holding

    def stats(self) -> EngineStats:
        return EngineStats(running=self._holding, waiting=max(0, self._pending - self._holding))

    def on_step(self, callback: Callable[[float], None]) -> None:
        pass  # generate() has no steps to report

    async def check(self, params: SamplingParams) -> None:
        pass  # plain sampling has nothing that can fail inside generate() for one request

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._model = None

    async def generate(
        self, prompt_ids: list[int], params: SamplingParams
    ) -> AsyncGenerator[TokenDelta, None]:
        if self._model is None:
            raise EngineError("the inference engine is not running")
        loop = asyncio.get_running_loop()
        out: asyncio.Queue[Any] = asyncio.Queue()
        cancelled = threading.Event()

        def emit(item: Any) -> None:
            loop.call_soon_threadsafe(out.put_nowait, item)

        future = loop.run_in_executor(
            self._executor, self._run, prompt_ids, params, emit, cancelled
        )
        finished = False
        self._pending += 1
        try:
            while True:
                item = await out.get()
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    finished = True
                    raise EngineError(str(item)) from item
                finished = item.finish is not None
                yield item
                if finished:
                    break
        finally:
            if not finished:
                cancelled.set()  # also stops a request still waiting for the worker
            self._pending -= 1
            await asyncio.shield(future)

    def _run(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        emit: Any,
        cancelled: threading.Event,
    ) -> None:
        if cancelled.is_set():
            emit(_DONE)
            return
        self._holding = 1
        try:
            self._generate(prompt_ids, params, emit, cancelled)
        except _Cancelled:
            pass
        except Exception as exc:
            logger.exception("optimum generate failed")
            emit(exc)
        finally:
            self._holding = 0
        emit(_DONE)

    def _generate(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        emit: Any,
        cancelled: threading.Event,
    ) -> None:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList
        from transformers.generation.streamers import BaseStreamer

        eos = sorted(params.stop_token_ids)
        produced: list[int] = []

        class Streamer(BaseStreamer):  # type: ignore[misc]
            prompt_seen = False

            def put(self, value: Any) -> None:
                if not self.prompt_seen:  # generate() hands the prompt over first
                    self.prompt_seen = True
                    return
                token = int(value.reshape(-1)[0])
                produced.append(token)
                is_eos = token in params.stop_token_ids and not params.ignore_eos
                if is_eos:
                    emit(TokenDelta((token,), "stop"))
                elif len(produced) >= params.max_new_tokens:
                    emit(TokenDelta((token,), "length"))
                else:
                    emit(TokenDelta((token,)))

            def end(self) -> None:
                pass

        class Cancel(StoppingCriteria):  # type: ignore[misc]
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> bool:
                if cancelled.is_set():
                    raise _Cancelled
                return False

        kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens,
            "eos_token_id": None if params.ignore_eos else eos,
            "pad_token_id": eos[0] if eos else None,
            "do_sample": not params.greedy,
            "repetition_penalty": params.repetition_penalty,
        }
        if not params.greedy:
            kwargs |= {"temperature": params.temperature, "top_p": params.top_p}
            kwargs["top_k"] = params.top_k or None
            torch.manual_seed(params.seed)
        input_ids = torch.tensor([prompt_ids], dtype=torch.long)
        self._model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            streamer=Streamer(),
            stopping_criteria=StoppingCriteriaList([Cancel()]),
            **kwargs,
        )
        if not produced or (
            produced[-1] not in params.stop_token_ids and len(produced) < params.max_new_tokens
        ):
            # generate() ended on its own criterion without a last streamed token.
            emit(TokenDelta((), "stop"))
