"""A step that fails inside genai fails only the request that caused it: the engine process
recovers without a restart and the other requests continue with the very tokens they
would have had. The server's grammar check is bypassed here on purpose (requests go to the
engine directly), so the engine's own isolation is what is tested."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from app.engine.base import RequestRejected, SamplingParams
from app.engine.genai import GenaiEngine
from app.engine.genai_worker import WorkerConfig
from app.settings import Settings

BROKEN = json.dumps({"type": "object", "properties": {"a": {"$ref": "#/$defs/Missing"}}})
PROMPT = list(range(20, 60))


def engine_for(folder: Path) -> GenaiEngine:
    return GenaiEngine(WorkerConfig.from_settings(Settings(max_num_seqs=8), str(folder), "CPU"))


async def tokens_of(engine: GenaiEngine, prompt: list[int], params: SamplingParams) -> list[int]:
    return [t async for delta in engine.generate(prompt, params) for t in delta.token_ids]


async def rejected(engine: GenaiEngine, schema: str) -> str:
    params = SamplingParams(max_new_tokens=20, temperature=0, json_schema=schema)
    with pytest.raises(RequestRejected) as refused:
        await tokens_of(engine, [5, 6, 7], params)
    return str(refused.value)


GOOD = json.dumps(
    {
        "type": "object",
        "properties": {"items": {"type": "array", "items": {"enum": ["a", "b"]}}},
        "required": ["items"],
        "additionalProperties": False,
    }
)


def test_a_failing_grammar_fails_only_its_request(tiny_model_dir: Path) -> None:
    greedy = SamplingParams(max_new_tokens=1500, temperature=0, ignore_eos=True)
    sampled = SamplingParams(max_new_tokens=1500, temperature=1.3, seed=7, ignore_eos=True)
    constrained = SamplingParams(max_new_tokens=400, temperature=0, json_schema=GOOD)

    async def scenario() -> None:
        engine = engine_for(tiny_model_dir)
        await engine.start()
        await engine.wait_ready()
        try:
            alone = await tokens_of(engine, PROMPT, greedy)
            alone_constrained = await tokens_of(engine, PROMPT, constrained)
            streams = [
                asyncio.create_task(tokens_of(engine, PROMPT, greedy)),
                asyncio.create_task(tokens_of(engine, PROMPT[:30], sampled)),
                asyncio.create_task(tokens_of(engine, PROMPT, constrained)),
            ]
            while engine.engine_running < 3:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)  # all three well into their answers
            reason = await rejected(engine, BROKEN)
            assert "grammar" in reason and "$defs" in reason
            resumed, resampled, replayed = [await s for s in streams]
            # Greedy text continues exactly; a sampled one continues from where its client
            # is, to its full length; one with a grammar is regenerated and checked.
            assert resumed == alone
            assert len(resampled) == 1500
            assert replayed == alone_constrained
            assert (engine.faults, engine.restarts) == (1, 0)
            # Two at once cannot be told apart at first: each is retried alone.
            streams = [asyncio.create_task(tokens_of(engine, PROMPT, greedy)) for _ in range(2)]
            while engine.engine_running < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            other = BROKEN.replace("Missing", "AlsoMissing")
            reasons = await asyncio.gather(rejected(engine, BROKEN), rejected(engine, other))
            assert all("$defs" in r for r in reasons)
            assert [await s for s in streams] == [alone] * 2
            assert engine.restarts == 0 and engine.is_ready()
            assert await tokens_of(engine, PROMPT, greedy) == alone
        finally:
            await engine.close()

    asyncio.run(scenario())
