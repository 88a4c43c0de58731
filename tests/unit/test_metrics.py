from __future__ import annotations

import threading
import time
from pathlib import Path

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.server import create_app
from app.settings import Settings
from tests.unit.fakes import FakeEngine


def samples(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def test_counters_move_with_traffic(client: TestClient) -> None:
    before = samples(client)
    for _ in range(3):
        client.post(
            "/v1/chat/completions",
            json={"model": "tiny", "messages": [{"role": "user", "content": "x"}]},
        )
    client.post("/v1/chat/completions", json={"model": "nope", "messages": []})
    after = samples(client)
    endpoint = ("endpoint", "/v1/chat/completions")
    ok = ("ovchat_requests_total", (endpoint, ("model", "tiny"), ("status", "200")))
    # Refused before it was routed to a model: the body did not validate.
    bad = ("ovchat_requests_total", (endpoint, ("model", ""), ("status", "400")))
    assert after[ok] - before.get(ok, 0) == 3
    assert after[bad] - before.get(bad, 0) == 1
    tiny = (("model", "tiny"),)
    generated = after[("ovchat_generation_tokens_total", tiny)]
    assert generated - before.get(("ovchat_generation_tokens_total", tiny), 0) > 0
    assert after[("ovchat_time_to_first_token_seconds_count", tiny)] >= 3
    assert after[("ovchat_e2e_request_latency_seconds_count", tiny)] >= 3
    for gauge in (
        "ovchat_requests_running",
        "ovchat_requests_waiting",
        "ovchat_kv_cache_usage_ratio",
    ):
        assert (gauge, tiny) in after
    assert after[("ovchat_model_loaded", tiny)] == 1
    assert after[("ovchat_model_loads_total", tiny)] == 1


def test_unknown_paths_and_models_do_not_create_series(client: TestClient) -> None:
    for i in range(5):
        client.get(f"/random/{i}")
        client.post(
            "/v1/chat/completions",
            json={"model": f"made-up-{i}", "messages": [{"role": "user", "content": "x"}]},
        )
    labels = [dict(labels) for name, labels in samples(client) if name == "ovchat_requests_total"]
    assert all(label["endpoint"] != "/random/1" for label in labels)
    assert {label["model"] for label in labels} == {""}


def test_the_gateway_reads_what_waits_in_ovchat_and_what_runs(
    client: TestClient, engine: FakeEngine
) -> None:
    """vLLM's series, as the inference gateway's endpoint picker scrapes them: two of five
    streams run (the engine's batch is full), three wait for it, and /get_load is their
    sum; once they are done every gauge is back to 0."""
    engine.max_running = 2
    engine.paused = True
    engine.kv_usage = 0.25
    engine.block_size, engine.kv_blocks = 32, 2452
    body = {"model": "tiny", "messages": [{"role": "user", "content": "x"}], "stream": True}
    statuses: list[int] = []

    def stream() -> None:
        with client.stream("POST", "/v1/chat/completions", json=body) as response:
            statuses.append(response.status_code)
            response.read()

    threads = [threading.Thread(target=stream) for _ in range(5)]
    for thread in threads:
        thread.start()
    model = (("model_name", "tiny"),)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        now = samples(client)
        if now.get(("vllm:num_requests_running", model)) == 2:
            break
        time.sleep(0.01)
    now = samples(client)
    load = client.get("/get_load").json()
    engine.paused = False
    for thread in threads:
        thread.join()
    assert now[("vllm:num_requests_running", model)] == 2
    assert now[("vllm:num_requests_waiting", model)] == 3
    assert now[("ovchat_requests_waiting", (("model", "tiny"),))] == 3
    assert now[("vllm:kv_cache_usage_perc", model)] == 0.25
    info = (("block_size", "32"), ("model_name", "tiny"), ("num_gpu_blocks", "2452"))
    assert now[("vllm:cache_config_info", info)] == 1
    assert load == {"load": 5}
    assert statuses == [200] * 5
    after = samples(client)
    assert after[("vllm:num_requests_running", model)] == 0
    assert after[("vllm:num_requests_waiting", model)] == 0
    assert client.get("/get_load").json() == {"load": 0}


def test_the_gateway_series_are_gauges_by_vllms_names(client: TestClient) -> None:
    families = {
        family.name: family.type
        for family in text_string_to_metric_families(client.get("/metrics").text)
    }
    for name in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
    ):
        assert families[name] == "gauge"
    # The fake engine does not know its cache's layout: no made-up block count.
    assert "vllm:cache_config_info" not in {
        name for name, _ in samples(client) if name == "vllm:cache_config_info"
    }


def test_get_load_is_open_like_metrics(tiny_model_dir: Path, engine: FakeEngine) -> None:
    keyed = Settings(model=str(tiny_model_dir), served_model_name="tiny", api_key=["secret"])
    app = create_app(keyed, engine_factory=lambda _s, _m: engine)
    with TestClient(app) as keyed_client:
        assert keyed_client.get("/get_load").json() == {"load": 0}
        assert keyed_client.get("/v1/models").status_code == 401
