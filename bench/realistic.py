"""The bigger models, where the default 135M model is too small to be memory-bound the way a
real one is: the Phi-3-mini-shaped model (real sizes, random weights), with its 8 full
contexts under a 6 GB limit and the window cache's cost, and the real 1.5B chat model
Qwen2.5-Coder-1.5B-Instruct against llama-server on the GGUF it is made from."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx

from bench.contenders import contender_http
from bench.loadgen import http_stream, sweep
from bench.probes import SENTENCE, RssSampler, weights_read_per_token
from bench.servers import EXTRA, LLAMA_BIN, ROOT, free_port, llama_server_cmd, ovchat_cmd, server


def phi3_shaped(bandwidth: float, logs: Path) -> dict[str, Any]:
    """The real Phi-3-mini sizes with random weights: its speed is Phi-3-mini's."""
    from app.modelstore import store

    # Built in a process of its own: 3.8 B random parameters must not share memory with
    # this one's models and buffers.
    subprocess.run(
        [sys.executable, "-m", "app", "model", "build", "phi3-shaped"], check=True, cwd=ROOT
    )
    model = store.model_dir(ROOT / "model_store", "phi3-shaped")
    weights = weights_read_per_token(model)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = ovchat_cmd(model, port, "--kv-cache-gb", "4")
    with server(cmd, f"{url}/health", logs / "phi3-shaped.log") as (ready_s, pid):
        rss = RssSampler(pid)
        stream = http_stream(url, "bench")

        async def warm() -> None:  # the first request pays for compiling the model
            async for _ in stream("warm up", 4):
                pass

        results = asyncio.run(
            sweep(
                "phi3-shaped",
                stream,
                {"short": "Tell me a story."},
                [1, 4, 8],
                64,
                lambda level: level,
                warm,
            )
        )
        peak = rss.stop()
    return {
        "weights_mb": weights / 1e6,
        "ceiling_tok_s": bandwidth * 1e9 / weights,
        "ready_s": ready_s,
        "peak_rss_mb": peak / 1e6,
        "levels": [asdict(r) for r in results],
        "contexts": full_contexts_probe(model, logs),
        "window_cache": window_cache(model),
    }


QWEN_LEVELS = [1, 4, 8]


def qwen_coder(bandwidth: float, logs: Path, levels: list[int]) -> dict[str, Any]:
    """The real 1.5B chat model, Qwen2.5-Coder-1.5B-Instruct int4, and llama.cpp's server
    on the Q4_K_M GGUF it is made from (when built): what a user of a realistic model sees,
    where the default 135M model is too small to be memory-bound the same way."""
    from app.modelstore import qwen_coder as recipe
    from app.modelstore import store

    # Built in a process of its own (the conversion peaks at ~11 GB); a no-op once built.
    subprocess.run(
        [sys.executable, "-m", "app", "model", "build", recipe.NAME], check=True, cwd=ROOT
    )
    model = store.model_dir(ROOT / "model_store", recipe.NAME)
    weights = weights_read_per_token(model)
    prompt = {"short": "Write a short story about a lighthouse keeper."}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    contenders = {"ovchat-genai": ovchat_cmd(model, port)}
    llama_server = LLAMA_BIN / "llama-server"
    if llama_server.exists():
        cmd = llama_server_cmd(llama_server, str(recipe.gguf_file(ROOT / "model_store")), port)
        contenders["llama-server"] = cmd
    section: dict[str, Any] = {
        "weights_mb": weights / 1e6,
        "ceiling_tok_s": bandwidth * 1e9 / weights,
        "contenders": {},
    }
    if not llama_server.exists():
        section["contenders"]["llama-server"] = {"skipped": "not built: run `make bench-llamacpp`"}
    for name, cmd in contenders.items():
        results, info = contender_http(
            name, cmd, url, prompt, EXTRA[name], logs, levels=levels, log_name=f"qwen-{name}"
        )
        section["contenders"][name] = info | {"levels": [asdict(r) for r in results]}
    print(json.dumps({"qwen": section}), flush=True)
    return section


def window_cache(model: Path) -> dict[str, Any]:
    """bench/window_cache.py on a 2600-token prompt: the window cache's cost and tokens."""
    out = subprocess.run(
        [sys.executable, "bench/window_cache.py", str(model), "2600", "24"],
        check=True,
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


# 8 full Phi-3-mini contexts in 6 GB. ~2.9 GB of compiled weights and runtime leave ~3 GB
# for the cache, and 8 x 4096 tokens at u4 (128 KiB a token, bench/kvbytes.py) would take
# 4 GiB; but Phi-3-mini attends only its last 2047 tokens, and with the cache cut to that
# window (the default, kv_cache_window) a decoding sequence keeps at most 2176 tokens. The
# cache is sized for seven of those, one prompt prefilling in full (4096) and the next
# one's first chunk (256): 19,584 tokens, so 20,480 (640 blocks, 2.5 GiB at u4). Long
# prompts are the hard case (a prompt holds all its blocks until its prefill ends), and the
# answer is long enough that the first request still decodes when the last one starts to.
CONTEXTS = 8
CONTEXT_TOKENS = 4096
CONTEXT_ANSWER = 200
CONTEXT_FLAGS = (
    "--kv-cache-tokens",
    "20480",
    "--kv-cache-precision",
    "u4",
    "--max-num-seqs",
    "8",
    "--max-num-batched-tokens",
    "256",
    # Prefilling 8 x 3.9k tokens on 2 cores takes longer than the default request limit.
    "--request-timeout-s",
    "3600",
)


def kv_bytes(model: Path) -> dict[str, dict[str, float]]:
    """KiB of KV cache per token at each precision, as openvino-genai accounts them and as
    its cache tensors take them."""
    out = subprocess.run(
        [sys.executable, "bench/kvbytes.py", str(model), "u8", "u4", "f16"],
        check=True,
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, dict[str, float]] = json.loads(out.strip().splitlines()[-1])
    return result


MEMORY_LIMIT = 6_000_000_000
CGROUP = Path("/sys/fs/cgroup/memory/ovchat-bench")


def memory_limited(cmd: list[str]) -> tuple[list[str], Path | None]:
    """The command in a cgroup-v1 memory group capped at 6 GB, where this machine allows
    it (root): the way a container limit would hold the server. The page cache is dropped
    first, so the weights' file pages are charged to the server's group, not to whoever
    read the file before."""
    try:
        CGROUP.mkdir(exist_ok=True)
        (CGROUP / "memory.limit_in_bytes").write_text(str(MEMORY_LIMIT))
        (CGROUP / "memory.max_usage_in_bytes").write_text("0")
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3")
    except OSError:
        return cmd, None
    return ["bash", "-c", f'echo $$ > {CGROUP}/tasks; exec "$@"', "ovchat", *cmd], CGROUP


def full_contexts_probe(model: Path, logs: Path) -> dict[str, Any]:
    """Peak memory while 8 requests hold CONTEXT_TOKENS-token contexts at once (distinct
    prompts, so no shared prefix blocks), under a 6 GB memory limit where one can be set.
    "At once" is checked, not assumed: the last request's first token must come before the
    first request's last one."""
    from app.textmodel import TextModel

    text = TextModel.load(model)
    prompts = []
    for i in range(CONTEXTS):
        prompt = f"Story number {i}. "
        # Room for the chat template's few tokens around the prompt.
        while len(text.encode(prompt + SENTENCE)) < CONTEXT_TOKENS - CONTEXT_ANSWER - 24:
            prompt += SENTENCE
        prompts.append(prompt)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd, group = memory_limited(ovchat_cmd(model, port, *CONTEXT_FLAGS))
    with server(cmd, f"{url}/health", logs / "phi3-contexts.log") as (_, pid):
        rss = RssSampler(pid)
        stream = http_stream(url, "bench", timeout_s=3600)
        started = time.monotonic()

        async def one(prompt: str) -> tuple[int, float, float]:
            count, first = 0, float("nan")
            async for n in stream(prompt, CONTEXT_ANSWER):
                if n > 0 and count == 0:
                    first = time.monotonic() - started
                count = -n if n < 0 else count + n
            return count, first, time.monotonic() - started

        async def everyone() -> tuple[list[tuple[int, float, float]], int]:
            async with httpx.AsyncClient() as client:
                body = {"model": "bench", "messages": [{"role": "user", "content": prompts[0]}]}
                r = await client.post(f"{url}/tokenize", json=body)
                prompt_tokens = int(r.json()["count"])
            return list(await asyncio.gather(*(one(p) for p in prompts))), prompt_tokens

        results, prompt_tokens = asyncio.run(everyone())
        duration = time.monotonic() - started
        peak = rss.stop()
    counts = [count for count, _, _ in results]
    last_first_token = max(first for _, first, _ in results)
    first_finish = min(end for _, _, end in results)
    limited: dict[str, Any] = {}
    if group is not None:
        oom = (group / "memory.oom_control").read_text().split()
        limited = {
            "memory_limit_bytes": MEMORY_LIMIT,
            "max_usage_bytes": int((group / "memory.max_usage_in_bytes").read_text()),
            "oom_kills": int(oom[oom.index("oom_kill") + 1]) if "oom_kill" in oom else 0,
        }
    return limited | {
        "flags": " ".join(CONTEXT_FLAGS),
        "contexts": CONTEXTS,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": counts,
        "last_first_token_s": last_first_token,
        "first_finish_s": first_finish,
        "held_at_once": last_first_token < first_finish,
        "duration_s": duration,
        "peak_rss_mb": peak / 1e6,
        "kv_kib_per_token": kv_bytes(model),
    }
