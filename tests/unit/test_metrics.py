from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families


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
