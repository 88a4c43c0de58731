"""`make soak`: mixed load with disconnects against a server it starts, for N minutes.
Reports requests served, errors by kind and the RSS of server + engine over time.
Bounded in time and loopback only."""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import free_port, ovchat_cmd, server  # noqa: E402

PROMPTS = ["Tell me about the sea.", "What is the capital of France?", "Write a haiku. " * 20]


async def client(url: str, stop_at: float, seed: int, outcomes: Counter[str]) -> None:
    rng = random.Random(seed)
    async with httpx.AsyncClient(timeout=120) as http:
        while time.monotonic() < stop_at:
            body = {
                "model": "bench",
                "messages": [{"role": "user", "content": rng.choice(PROMPTS)}],
                "max_tokens": rng.choice([16, 64, 256]),
                "temperature": rng.choice([0, 0.7]),
                "stream": rng.random() < 0.7,
            }
            leave_after = rng.choice([None, None, None, 3, 0])  # a fifth leave early
            try:
                if body["stream"]:
                    async with http.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
                        lines = 0
                        async for _line in r.aiter_lines():
                            lines += 1
                            if leave_after is not None and lines > leave_after:
                                break
                        outcomes[
                            "left early" if leave_after is not None else str(r.status_code)
                        ] += 1
                else:
                    timeout = 0.2 if leave_after is not None else 120
                    r = await http.post(f"{url}/v1/chat/completions", json=body, timeout=timeout)
                    outcomes[str(r.status_code)] += 1
            except httpx.TimeoutException:
                outcomes["left early" if leave_after is not None else "timeout"] += 1
            except httpx.HTTPError as exc:
                outcomes[type(exc).__name__] += 1


async def soak(url: str, pid: int, minutes: float, clients: int) -> None:
    outcomes: Counter[str] = Counter()
    stop_at = time.monotonic() + minutes * 60
    tasks = [asyncio.create_task(client(url, stop_at, i, outcomes)) for i in range(clients)]
    started = time.monotonic()
    print("| minute | RSS server+engine (MB) | outcomes so far |")
    print("|---|---|---|")
    while not all(t.done() for t in tasks):
        await asyncio.sleep(min(60, max(1, stop_at - time.monotonic())))
        root = psutil.Process(pid)
        rss = root.memory_info().rss + sum(c.memory_info().rss for c in root.children(True))
        minute = (time.monotonic() - started) / 60
        print(f"| {minute:.1f} | {rss / 1e6:.0f} | {dict(outcomes)} |", flush=True)
    await asyncio.gather(*tasks)
    async with httpx.AsyncClient() as http:
        health = (await http.get(f"{url}/health")).json()
    print(f"\nserved: {dict(outcomes)}; health after: {health}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--clients", type=int, default=24)
    args = parser.parse_args()
    from app.modelstore import store

    model = store.model_dir(ROOT / "model_store", store.DEFAULT_MODEL)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = ROOT / "bench" / "results" / "soak-server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with server(ovchat_cmd(model, port), f"{url}/health", log) as (_, pid):
        asyncio.run(soak(url, pid, args.minutes, args.clients))
    return 0


if __name__ == "__main__":
    sys.exit(main())
