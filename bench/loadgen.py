"""Load generator for any OpenAI-compatible chat endpoint, or for an in-process engine.

Each request streams a fixed number of tokens (ignore_eos) so runs compare; for each
concurrency level it reports time to first token (p50, p90), time per output token (p50),
inter-token latency (p50, p99), request throughput, aggregate output tokens/s and errors.
Bounded: a fixed number of requests per level, a timeout per request, loopback only."""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp

# One token arrival at a time: (seconds since request start) per token.
Timeline = list[float]
StreamFn = Callable[[str, int], AsyncIterator[int]]  # (prompt, max_tokens) -> token counts


@dataclass
class LevelResult:
    contender: str
    prompt: str
    concurrency: int
    requests: int
    errors: int
    incomplete: int
    duration_s: float
    ttft_p50_ms: float
    ttft_p90_ms: float
    tpot_p50_ms: float
    itl_p50_ms: float
    itl_p99_ms: float
    req_per_s: float
    output_tok_per_s: float
    error_kinds: dict[str, int] = field(default_factory=dict)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def http_stream(
    base_url: str,
    model: str,
    api_key: str | None = None,
    extra: dict[str, Any] | None = None,
    timeout_s: float = 600,
) -> StreamFn:
    """Token arrivals from a streaming chat completion. Usage (when sent) is trusted for
    the token count; otherwise one content chunk is one token. `extra` is how a server
    is told to ignore eos (ours: ignore_eos; others: a logit_bias banning the eos id).

    aiohttp, as vLLM's benchmark_serving uses: on 2 cores the load generator's CPU per
    token is taken from the server it measures, and httpx's pure-Python HTTP parsing cost
    about 340 us per streamed token here against aiohttp's 250. One session per request,
    so that no connection outlives the event loop it was opened on."""
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    timeout = aiohttp.ClientTimeout(total=timeout_s, connect=10)

    async def stream(prompt: str, max_tokens: int) -> AsyncIterator[int]:
        body = {
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        } | (extra if extra is not None else {"ignore_eos": True})
        async with (
            aiohttp.ClientSession(headers=headers, timeout=timeout, read_bufsize=2**20) as session,
            session.post(f"{base_url}/v1/chat/completions", json=body) as r,
        ):
            if r.status != 200:
                await r.read()
                raise RuntimeError(f"HTTP {r.status}")
            async for raw in r.content:
                line = raw.rstrip(b"\r\n")
                if not line.startswith(b"data: ") or line == b"data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    raise RuntimeError(chunk["error"].get("code") or "error event")
                choices = chunk.get("choices") or []
                if choices and choices[0].get("delta", {}).get("content"):
                    yield 1
                elif chunk.get("usage"):
                    yield -chunk["usage"]["completion_tokens"]  # final count, negative tag

    return stream


async def _one(stream: StreamFn, prompt: str, max_tokens: int) -> tuple[Timeline, int]:
    started = time.perf_counter()
    arrivals: Timeline = []
    reported = 0
    async for count in stream(prompt, max_tokens):
        if count < 0:
            reported = -count
            continue
        now = time.perf_counter() - started
        arrivals.extend([now] * count)
    return arrivals, reported or len(arrivals)


async def run_level(
    contender: str,
    stream: StreamFn,
    prompt_name: str,
    prompt: str,
    concurrency: int,
    requests: int,
    max_tokens: int,
) -> LevelResult:
    timelines: list[Timeline] = []
    counts: list[int] = []  # tokens per request, as reported (a chunk may carry several)
    errors: dict[str, int] = {}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)

    async def worker() -> None:
        while True:
            try:
                queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            try:
                timeline, count = await asyncio.wait_for(_one(stream, prompt, max_tokens), 900)
                timelines.append(timeline)
                counts.append(count)
            except Exception as exc:  # counted, not raised: a benchmark reports failures
                kind = type(exc).__name__ + (f": {exc}" if str(exc) else "")
                errors[kind[:80]] = errors.get(kind[:80], 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    duration = time.perf_counter() - started
    ttft = [t[0] * 1000 for t in timelines if t]
    # Per token, not per chunk: a detokenizer holds back partial UTF-8 and sends two
    # tokens in one chunk, which a chunk count would bill as one slow token.
    tpot = [
        (t[-1] - t[0]) / (max(len(t), n) - 1) * 1000
        for t, n in zip(timelines, counts, strict=True)
        if len(t) > 1
    ]
    itl = [(b - a) * 1000 for t in timelines for a, b in itertools.pairwise(t)]
    return LevelResult(
        contender=contender,
        prompt=prompt_name,
        concurrency=concurrency,
        requests=requests,
        errors=sum(errors.values()),
        incomplete=sum(1 for c in counts if c < max_tokens),
        duration_s=round(duration, 2),
        ttft_p50_ms=round(percentile(ttft, 50), 1),
        ttft_p90_ms=round(percentile(ttft, 90), 1),
        tpot_p50_ms=round(statistics.median(tpot), 2) if tpot else float("nan"),
        itl_p50_ms=round(percentile(itl, 50), 2),
        itl_p99_ms=round(percentile(itl, 99), 2),
        req_per_s=round(len(timelines) / duration, 3),
        output_tok_per_s=round(sum(counts) / duration, 1),
        error_kinds=errors,
    )


async def sweep(
    contender: str,
    stream: StreamFn,
    prompts: dict[str, str],
    levels: list[int],
    max_tokens: int,
    requests_per_level: Callable[[int], int],
    warmup: Callable[[], Awaitable[None]] | None = None,
) -> list[LevelResult]:
    if warmup is not None:
        await warmup()
    results = []
    for prompt_name, prompt in prompts.items():
        for level in levels:
            result = await run_level(
                contender, stream, prompt_name, prompt, level, requests_per_level(level), max_tokens
            )
            print(json.dumps(asdict(result)), flush=True)
            results.append(result)
    return results


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--model", required=True)
    parser.add_argument("--api-key")
    parser.add_argument("--concurrency", default="1,2,4,8,16,32")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--prompt", default="Write a story about a lighthouse keeper.")
    args = parser.parse_args()
    stream = http_stream(args.url, args.model, args.api_key)
    levels = [int(c) for c in args.concurrency.split(",")]
    asyncio.run(
        sweep(
            "endpoint",
            stream,
            {"custom": args.prompt},
            levels,
            args.max_tokens,
            lambda c: max(2 * c, 4),
        )
    )


if __name__ == "__main__":
    main()
