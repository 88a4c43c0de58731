"""The routers' protocol on the default model under load: vLLM's series in /metrics (what
the Gateway API Inference Extension's endpoint picker scrapes) and /get_load (what
vllm-router's power_of_two polls) say what runs and what waits, exactly."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import Server


def gateway_series(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {
        family.name: {tuple(sorted(s.labels.items())): s.value for s in family.samples}
        for family in text_string_to_metric_families(text)
        if family.name.startswith("vllm:")
    }


def under_load(server: Server, streams: int, max_tokens: int) -> list[tuple[float, float, int]]:
    """(running, waiting, load) sampled from /metrics and /get_load while `streams`
    streams of `max_tokens` tokens run at once; every stream must succeed."""
    model = (("model_name", server.model),)
    samples: list[tuple[float, float, int]] = []
    polling = threading.Event()
    polling.set()

    def poll() -> None:
        while polling.is_set():
            series = gateway_series(server.url)
            running = series["vllm:num_requests_running"][model]
            waiting = series["vllm:num_requests_waiting"][model]
            assert 0 <= series["vllm:kv_cache_usage_perc"][model] < 1
            load = httpx.get(f"{server.url}/get_load", timeout=10).json()["load"]
            samples.append((running, waiting, load))
            time.sleep(0.01)

    def ask(i: int) -> int:
        body = {
            "model": server.model,
            "messages": [{"role": "user", "content": f"Count to {i}."}],
            "max_tokens": max_tokens,
            "ignore_eos": True,
            "temperature": 0,
            "stream": True,
        }
        with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=120) as r:
            r.read()
            return r.status_code

    poller = threading.Thread(target=poll)
    poller.start()
    with ThreadPoolExecutor(streams) as pool:
        statuses = list(pool.map(ask, range(streams)))
    polling.clear()
    poller.join()
    assert statuses == [200] * streams
    idle = gateway_series(server.url)
    assert idle["vllm:num_requests_running"][model] == 0
    assert idle["vllm:num_requests_waiting"][model] == 0
    assert httpx.get(f"{server.url}/get_load").json() == {"load": 0}
    return samples


def test_what_runs_and_what_waits_under_load(default_server: Server) -> None:
    """Twenty streams at once on the default server: the engine takes them into its batch
    a few at a time, and every one ovchat admitted and the engine has not scheduled yet
    waits, so running and waiting always add up to what is admitted (twenty until the
    first ends), never more, and /get_load is their sum."""
    samples = under_load(default_server, streams=20, max_tokens=32)
    assert max(load for *_, load in samples) == 20
    assert all(running + waiting <= 20 for running, waiting, _ in samples)
    both = {(r, w) for r, w, _ in samples if r > 0 and w > 0 and r + w == 20}
    assert both, samples  # some ran while the others waited, all twenty counted


def test_the_cache_layout_is_genais(default_server: Server, default_model_dir: Path) -> None:
    """num_gpu_blocks is the 1 GiB default cache over a block's bytes, as the cache
    tensors' shapes give them (bench/kvbytes.py), blocks of 32 tokens on the CPU."""
    from bench.kvbytes import BLOCK, real_kib

    block_bytes = round(real_kib(str(default_model_dir), "auto") * 1024 * BLOCK)
    info = gateway_series(default_server.url)["vllm:cache_config_info"]
    expected = (
        ("block_size", str(BLOCK)),
        ("model_name", "smollm2"),
        ("num_gpu_blocks", str(2**30 // block_bytes)),
    )
    assert info == {expected: 1.0}
