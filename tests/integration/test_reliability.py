"""Faults and load against real servers: overflow, auth, hostile bodies, SIGTERM drain,
engine death, and a disconnect storm. Loopback only, every loop bounded."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import psutil
import pytest

from app.modelstore.tiny_phi3 import TINY_REPLY
from tests.integration.conftest import Server, start_server, stop_server

LONG = {"max_tokens": 3000, "ignore_eos": True, "temperature": 0}


def body(**extra: Any) -> dict[str, Any]:
    return {"model": "tiny-phi3", "messages": [{"role": "user", "content": "hi"}]} | extra


def stream_tokens(
    url: str, payload: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[int, int, list[str]]:
    """(status, completion tokens, raw data lines) of one streamed request."""
    with httpx.stream(
        "POST",
        f"{url}/v1/chat/completions",
        json=payload | {"stream": True, "stream_options": {"include_usage": True}},
        headers=headers,
        timeout=120,
    ) as response:
        if response.status_code != 200:
            response.read()
            return response.status_code, 0, [response.text]
        lines = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    usage = [json.loads(line)["usage"] for line in lines if line.startswith('{"id"')]
    tokens = usage[-1]["completion_tokens"] if usage and usage[-1] else 0
    return 200, tokens, lines


def engine_pid(server: Server) -> Any:
    for child in psutil.Process(server.process.pid).children():
        if any("spawn_main" in part for part in child.cmdline()):
            return child.pid
    raise AssertionError("no engine process")


def health(server: Server) -> Any:
    return httpx.get(f"{server.url}/health", timeout=5).json()


def wait_until(condition: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def small_server(server_logs: Path, tiny_model_dir: Path) -> Iterator[Server]:
    """Capacity 4: two sequences run, two wait."""
    server = start_server(
        server_logs,
        tiny_model_dir,
        "tiny-phi3",
        "--max-num-seqs",
        "2",
        "--max-queue",
        "2",
        "--api-key",
        "sk-test-1",
        "--api-key",
        "sk-test-2",
    )
    yield server
    stop_server(server)


AUTH = {"Authorization": "Bearer sk-test-1"}


def test_queue_overflow_refuses_exactly_the_excess(small_server: Server) -> None:
    with ThreadPoolExecutor(7) as pool:
        results = list(
            pool.map(lambda _: stream_tokens(small_server.url, body(**LONG), AUTH), range(7))
        )
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200] * 4 + [429] * 3
    refused = [json.loads(lines[0]) for status, _, lines in results if status == 429]
    assert all(r["error"]["type"] == "rate_limit_error" for r in refused)
    # Every accepted request finished in full.
    assert all(lines[-1] == "[DONE]" for status, _, lines in results if status == 200)
    assert all(chunks == 3000 for status, chunks, _ in results if status == 200)


def test_429_carries_retry_after(small_server: Server) -> None:
    with ThreadPoolExecutor(4) as pool:
        running = [
            pool.submit(stream_tokens, small_server.url, body(**LONG), AUTH) for _ in range(4)
        ]
        assert wait_until(lambda: health(small_server)["in_flight"] == 4, 10)
        response = httpx.post(f"{small_server.url}/v1/chat/completions", json=body(), headers=AUTH)
        assert response.status_code == 429
        assert response.headers["retry-after"] == "1"
        assert response.headers["retry-after-ms"] == "1000"
        assert all(f.result()[0] == 200 for f in running)


def raw_get(server: Server, path: str, headers: dict[str, str] | None = None) -> int:
    """http.client sends the path byte for byte: no client-side normalisation."""
    host, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
    for name, value in (headers or {"Host": "127.0.0.1"}).items():
        connection.putheader(name, value)
    connection.endheaders()
    status = connection.getresponse().status
    connection.close()
    return status


@pytest.mark.parametrize(
    "path",
    [
        "/v1/models",
        "//v1/models",
        "/v1/../v1/models",
        "/health/../v1/models",
        "/%76%31/models",
        "/v1/models/",
        "/V1/models",
        "/v1//models",
        "/static/../v1/models",
        "/v1/models?api_key=sk-test-1",
        "/tokenize",
    ],
)
def test_no_path_trick_bypasses_auth(small_server: Server, path: str) -> None:
    assert raw_get(small_server, path) == 401
    assert raw_get(small_server, path, {"Host": "evil.example:80"}) == 401
    assert (
        raw_get(small_server, path, {"Host": "127.0.0.1", "Authorization": "Bearer wrong"}) == 401
    )
    assert raw_get(small_server, path, {"Host": "127.0.0.1", "Authorization": "sk-test-1"}) == 401


def test_keys_open_the_api_and_health_stays_open(small_server: Server) -> None:
    response = httpx.post(f"{small_server.url}/v1/chat/completions", json=body())
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert response.headers["www-authenticate"] == "Bearer"
    for key in ("sk-test-1", "sk-test-2"):
        client = openai.OpenAI(base_url=f"{small_server.url}/v1", api_key=key, max_retries=0)
        reply = client.chat.completions.create(
            model="tiny-phi3", messages=[{"role": "user", "content": "x"}], temperature=0
        )
        assert reply.choices[0].message.content == TINY_REPLY
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(
            base_url=f"{small_server.url}/v1", api_key="nope", max_retries=0
        ).models.list()
    assert raw_get(small_server, "/health") == 200
    assert raw_get(small_server, "/health/live") == 200
    assert "sk-test-1" not in small_server.log_text()


def raw(messages: object = None, **extra: object) -> bytes:
    user = [{"role": "user", "content": "x"}]
    return json.dumps({"model": "tiny-phi3", "messages": messages or user} | extra).encode()


def user(content: object) -> list[dict[str, object]]:
    return [{"role": "user", "content": content}]


ODD_ORDER = [
    {"role": "assistant", "content": "a"},
    {"role": "system", "content": "s"},
    {"role": "system", "content": "t"},
]


@pytest.mark.parametrize(
    ("content", "status"),
    [
        (raw(user("x" * (5 << 20))), 413),
        (b'{"model": "tiny-phi3", "messages": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400),
        (raw(user("lone")).replace(b"lone", b"\\ud800 lone"), 400),
        (raw(user("nul \u0000 byte")), 200),
        (raw(user("")), 200),
        (raw(user(None)), 400),
        (raw(user([{"type": "audio"}])), 400),
        (raw(ODD_ORDER), 200),
        (raw(max_tokens=-5), 400),
        (raw(n=1000), 400),
        (raw(stop=list("abcdefghijklmnopq")), 400),
        (b"[]", 400),
        (b'"just a string"', 400),
        (b"\xff\xfe garbage", 400),
    ],
)
def test_hostile_bodies(small_server: Server, content: bytes, status: int) -> None:
    response = httpx.post(
        f"{small_server.url}/v1/chat/completions",
        content=content,
        headers=AUTH | {"content-type": "application/json"},
        timeout=60,
    )
    assert response.status_code == status, response.text[:500]
    if status != 200:
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_sigterm_drains_in_flight_streams(server_logs: Path, tiny_model_dir: Path) -> None:
    server = start_server(server_logs, tiny_model_dir, "tiny-phi3")
    results: list[tuple[int, int, list[str]]] = []
    payload = body(max_tokens=2000, ignore_eos=True, temperature=0)
    threads = [
        threading.Thread(target=lambda: results.append(stream_tokens(server.url, payload)))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    assert wait_until(lambda: health(server)["in_flight"] == 3, 10)
    server.process.send_signal(signal.SIGTERM)
    # Still listening while it drains, on new connections too: a router's health check
    # reads 503 and takes it out of rotation, a new request is refused with Retry-After.
    assert wait_until(lambda: health(server).get("draining") is True, 10)
    assert httpx.get(f"{server.url}/health", timeout=5).status_code == 503
    refused = httpx.post(f"{server.url}/v1/chat/completions", json=body(max_tokens=2), timeout=5)
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "server_shutting_down"
    for thread in threads:
        thread.join(60)
    assert server.process.wait(60) == 0
    assert len(results) == 3
    assert all(
        status == 200 and lines[-1] == "[DONE]" and chunks == 2000
        for status, chunks, lines in results
    )
    assert "draining 3 in-flight sequences" in server.log_text()


def test_engine_death_is_reported_and_recovered(server_logs: Path, tiny_model_dir: Path) -> None:
    server = start_server(server_logs, tiny_model_dir, "tiny-phi3")
    try:
        result: list[tuple[int, int, list[str]]] = []
        thread = threading.Thread(
            target=lambda: result.append(stream_tokens(server.url, body(**LONG)))
        )
        thread.start()
        assert wait_until(lambda: health(server)["models"][server.model]["engine_running"] == 1, 10)
        seen: list[int] = []
        watching = threading.Event()
        watching.set()

        def watch() -> None:  # /health as a load balancer sees it, every 20 ms
            while watching.is_set():
                seen.append(httpx.get(f"{server.url}/health", timeout=5).status_code)
                time.sleep(0.02)

        watcher = threading.Thread(target=watch)
        watcher.start()
        os.kill(engine_pid(server), signal.SIGKILL)
        thread.join(30)
        status, _, lines = result[0]
        assert status == 200 and lines[-1] == "[DONE]"
        assert json.loads(lines[-2])["error"]["code"] == "engine_unavailable"
        assert wait_until(lambda: seen and seen[-1] == 200 and 503 in seen, 60)
        watching.clear()
        watcher.join()
        reply = server.client().chat.completions.create(
            model="tiny-phi3", messages=[{"role": "user", "content": "x"}], temperature=0
        )
        assert reply.choices[0].message.content == TINY_REPLY
        assert "Restarting the engine process" in server.log_text()
    finally:
        stop_server(server)


def test_disconnect_storm(server_logs: Path, tiny_model_dir: Path) -> None:
    """40 streams on 4 engine slots: a fifth of the clients vanish mid-stream, a fifth
    while queued; the rest finish in full, nothing is left running, nothing leaks."""
    server = start_server(server_logs, tiny_model_dir, "tiny-phi3", "--max-num-seqs", "4")
    try:
        process = psutil.Process(server.process.pid)
        stream_tokens(server.url, body(max_tokens=5))  # warm up threads and pools
        threads_before, files_before = process.num_threads(), process.num_fds()

        def client(i: int) -> str:
            payload = body(max_tokens=1500, ignore_eos=True, temperature=0) | {"stream": True}
            with httpx.stream(
                "POST", f"{server.url}/v1/chat/completions", json=payload, timeout=120
            ) as response:
                if i % 5 == 1:
                    return "queued-leaver"  # leaves before reading anything: still queued
                for n, line in enumerate(response.iter_lines()):
                    if i % 5 == 0 and n > 20:
                        return "mid-stream-leaver"
                    if line == "data: [DONE]":
                        return "done"
                return "truncated"

        with ThreadPoolExecutor(40) as pool:
            outcomes = list(pool.map(client, range(40)))
        assert outcomes.count("done") == 24
        assert outcomes.count("truncated") == 0
        assert wait_until(lambda: health(server)["models"][server.model]["engine_running"] == 0, 2)
        assert wait_until(lambda: health(server)["in_flight"] == 0, 2)
        assert not re.search(r"/v1/chat/completions 5\d\d ", server.log_text())
        assert process.num_threads() <= threads_before + 2
        assert process.num_fds() <= files_before + 4
    finally:
        stop_server(server)
