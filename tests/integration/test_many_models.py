"""Several models in one real server: routing by name, load on demand while another model
streams, idle unload that frees the engine's process, the admin endpoints, per-model
health, metrics and access log."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.modelstore.tiny_phi3 import TINY_REPLY
from tests.integration.conftest import Server, launch, stop_server

ADMIN = {"Authorization": "Bearer sk-admin"}
TINY, WINDOW = "tiny-phi3", "tiny-phi3-window"


@pytest.fixture(scope="module")
def two_models(server_logs: Path, tiny_model_dir: Path, window_model_dir: Path) -> Iterator[Server]:
    server = launch(
        server_logs,
        TINY,
        *("--model", str(tiny_model_dir), "--model", str(window_model_dir)),
        *("--preload", "first", "--admin-key", "sk-admin"),
    )
    yield server
    stop_server(server)


def engine_pid(server: Server, model: str) -> int | None:
    pid: int | None = httpx.get(f"{server.url}/health").json()["models"][model]["pid"]
    return pid


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def statuses(server: Server) -> dict[str, str]:
    cards = httpx.get(f"{server.url}/v1/models").json()["data"]
    return {card["id"]: card["status"] for card in cards}


def wait_for(condition: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def test_a_second_model_loads_on_demand_while_the_first_streams(two_models: Server) -> None:
    assert statuses(two_models) == {TINY: "loaded", WINDOW: "unloaded"}
    client = two_models.client()
    arrivals: list[float] = []

    def stream() -> None:
        chunks = client.chat.completions.create(
            model=TINY,
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=2500,
            temperature=0,
            stream=True,
            extra_body={"ignore_eos": True},
        )
        for _ in chunks:
            arrivals.append(time.monotonic())

    streaming = threading.Thread(target=stream)
    streaming.start()
    wait_for(lambda: len(arrivals) > 20)
    asked = time.monotonic()
    answer = client.chat.completions.create(
        model=WINDOW, messages=[{"role": "user", "content": "hi"}], max_tokens=8, temperature=0
    )
    answered = time.monotonic()
    streaming.join(timeout=120)
    assert answer.model == WINDOW
    during = [t for t in arrivals if asked <= t <= answered]
    # The stream went on while the other model loaded in its own process.
    assert len(during) >= 10, (len(during), answered - asked)
    gaps = [b - a for a, b in itertools.pairwise(during)]
    assert max(gaps, default=0) < 2.0
    assert statuses(two_models) == {TINY: "loaded", WINDOW: "loaded"}
    assert f"model={WINDOW}" in two_models.log_text()


def test_each_model_answers_as_itself(two_models: Server) -> None:
    client = two_models.client()
    reply = client.chat.completions.create(
        model=TINY, messages=[{"role": "user", "content": "hi"}], temperature=0
    )
    assert reply.choices[0].message.content == TINY_REPLY
    unknown = httpx.post(
        f"{two_models.url}/v1/chat/completions",
        json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "model_not_found"


def test_keep_alive_unloads_an_idle_model_and_frees_its_process(two_models: Server) -> None:
    client = two_models.client()
    client.chat.completions.create(
        model=WINDOW, messages=[{"role": "user", "content": "hi"}], max_tokens=4
    )
    health = httpx.get(f"{two_models.url}/health").json()["models"][WINDOW]
    pid = health["pid"]
    assert health["memory_bytes"] == pytest.approx(psutil.Process(pid).memory_info().rss, rel=0.2)
    # Ollama's per-request keep_alive: this model may now idle for one second.
    client.chat.completions.create(
        model=WINDOW,
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=4,
        extra_body={"keep_alive": "1s"},
    )
    wait_for(lambda: statuses(two_models)[WINDOW] == "unloaded")
    wait_for(lambda: gone(pid))  # its memory went with its process
    assert engine_pid(two_models, WINDOW) is None
    assert statuses(two_models)[TINY] == "loaded"  # the server's default keeps it
    # Asked for again, it loads again.
    again = client.chat.completions.create(
        model=WINDOW, messages=[{"role": "user", "content": "hi"}], max_tokens=4
    )
    assert again.model == WINDOW


def test_admin_unload_and_load(two_models: Server) -> None:
    url = two_models.url
    user = httpx.post(f"{url}/models/unload", json={"model": WINDOW})
    assert user.status_code == 401
    if statuses(two_models)[WINDOW] != "loaded":
        httpx.post(f"{url}/models/load", json={"model": WINDOW}, headers=ADMIN, timeout=120)
    pid = engine_pid(two_models, WINDOW)
    assert pid is not None
    unloaded = httpx.post(f"{url}/models/unload", json={"model": WINDOW}, headers=ADMIN)
    assert (unloaded.status_code, unloaded.json()["status"]) == (200, "unloaded")
    wait_for(lambda: gone(pid))
    loaded = httpx.post(f"{url}/models/load", json={"model": WINDOW}, headers=ADMIN, timeout=120)
    assert (loaded.status_code, loaded.json()["status"]) == (200, "loaded")
    assert engine_pid(two_models, WINDOW) not in (None, pid)


def test_health_and_metrics_are_per_model(two_models: Server) -> None:
    health = httpx.get(f"{two_models.url}/health").json()
    assert health["status"] == "ok"
    assert set(health["models"]) == {TINY, WINDOW}
    assert health["models"][TINY]["engine"] == "genai"
    text = httpx.get(f"{two_models.url}/metrics").text
    series = {
        (s.name, s.labels.get("model"))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    for name in (
        "ovchat_generation_tokens_total",
        "ovchat_model_loaded",
        "ovchat_requests_running",
    ):
        assert (name, TINY) in series and (name, WINDOW) in series
