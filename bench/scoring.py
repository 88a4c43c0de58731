"""The exact scoring engine's speed beside the main engine's, on one ovchat server on the
default model: greedy decoding with only the chosen tokens' log-probabilities (the main,
continuous-batching engine) against the same with top_logprobs 5 (the scoring engine), at
1 and 4 concurrent requests; then pure prompt scoring (echo + logprobs 5, max_tokens 0) of
a ~500-token text, what evaluation harnesses send, in prompt tokens per second.

    .venv/bin/python bench/scoring.py --rounds 3

writes its table into docs/SCORING.md (between the scoring markers) and prints it."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.modelstore import store  # noqa: E402
from bench.report import write_between  # noqa: E402
from bench.servers import free_port, ovchat_cmd, server  # noqa: E402
from bench.texts import DOCUMENT  # noqa: E402

DOC = ROOT / "docs" / "SCORING.md"
MODEL = store.model_dir(ROOT / "model_store", store.DEFAULT_MODEL)
START, END = "<!-- scoring:start -->", "<!-- scoring:end -->"
LEVELS = (1, 4)
OUT_TOKENS = 64
QUESTION = [{"role": "user", "content": "Write a story about a lighthouse keeper."}]
TEXT = (DOCUMENT + "\n\n") * 3  # ~410 tokens


async def decode(client: httpx.AsyncClient, url: str, level: int, top: int) -> float:
    """Aggregate completion tokens per second of `level` concurrent chats."""
    body: dict[str, Any] = {
        "model": "bench",
        "messages": QUESTION,
        "temperature": 0,
        "max_tokens": OUT_TOKENS,
        "ignore_eos": True,
        "logprobs": True,
    }
    if top:
        body["top_logprobs"] = top

    async def one() -> int:
        response = await client.post(f"{url}/v1/chat/completions", json=body)
        response.raise_for_status()
        return int(response.json()["usage"]["completion_tokens"])

    started = time.perf_counter()
    tokens = await asyncio.gather(*(one() for _ in range(level)))
    return sum(tokens) / (time.perf_counter() - started)


async def score(client: httpx.AsyncClient, url: str, level: int) -> float:
    """Prompt tokens scored per second, `level` requests at once."""
    body = {"model": "bench", "prompt": TEXT, "max_tokens": 0, "echo": True, "logprobs": 5}

    async def one() -> int:
        response = await client.post(f"{url}/v1/completions", json=body)
        response.raise_for_status()
        return int(response.json()["usage"]["prompt_tokens"])

    started = time.perf_counter()
    tokens = await asyncio.gather(*(one() for _ in range(level)))
    return sum(tokens) / (time.perf_counter() - started)


async def measure(url: str, rounds: int) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=600) as client:
        started = time.perf_counter()
        await decode(client, url, 1, 1)  # loads the scoring engine
        first_s = time.perf_counter() - started
        await decode(client, url, 1, 0)
        out: dict[str, list[float]] = {}
        for round_ in range(rounds):
            for level in LEVELS:
                pair = [("main", 0), ("scoring", 5)]
                for name, top in pair if round_ % 2 == 0 else pair[::-1]:
                    value = await decode(client, url, level, top)
                    out.setdefault(f"{name} c{level}", []).append(value)
                value = await score(client, url, level)
                out.setdefault(f"prompt c{level}", []).append(value)
                print(
                    f"round {round_} c{level}: "
                    + ", ".join(
                        f"{k} {v[-1]:.1f}" for k, v in out.items() if k.endswith(f"c{level}")
                    ),
                    flush=True,
                )
        return {"first_s": first_s, "values": out}


def report(data: dict[str, Any], command: str, rounds: int) -> str:
    values = data["values"]
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")

    def med(key: str) -> float:
        return float(statistics.median(values[key]))

    lines = [
        START,
        f"Measured {date} with `{command}`: one ovchat server on the default model "
        f"(SmolLM2-135M int4, defaults), {rounds} interleaved rounds, medians. Decoding: "
        f"{OUT_TOKENS} greedy tokens a chat, aggregate tok/s; scoring: a "
        "~410-token text with echo, logprobs 5 and max_tokens 0, prompt tokens/s.",
        "",
        "| requests at once | main engine tok/s (logprobs) | scoring engine tok/s "
        "(top_logprobs 5) | scoring / main | prompt scoring tokens/s |",
        "|---|---|---|---|---|",
    ]
    for level in LEVELS:
        main, scored = med(f"main c{level}"), med(f"scoring c{level}")
        lines.append(
            f"| {level} | {main:.1f} | {scored:.1f} | {scored / main:.2f} "
            f"| {med(f'prompt c{level}'):.0f} |"
        )
    lines += [
        "",
        f"The first request that needed the scoring engine took {data['first_s']:.1f} s, "
        "its load included.",
        END,
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = ROOT / "bench" / "results" / "scoring-server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = ovchat_cmd(MODEL, port)
    with server(cmd, f"{url}/health", log):
        data = asyncio.run(measure(url, args.rounds))
    section = report(data, f"python bench/scoring.py --rounds {args.rounds}", args.rounds)
    write_between(DOC, START, END, section)
    print(section)


if __name__ == "__main__":
    main()
