"""The Grafana dashboard (deploy/grafana/ovchat.json) and the Prometheus adapter's rule
(deploy/prometheus-adapter/values.yaml) query only series the app exports: the names
are read from a running app's /metrics, as Prometheus scrapes them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
# Series names as a scrape has them: ovchat's own, and vLLM's (which carry a colon).
SERIES = re.compile(r"\b(ovchat_[a-zA-Z0-9_]+|vllm:[a-zA-Z0-9_:]+)")
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
}


def exported(client: TestClient) -> set[str]:
    """Every series name /metrics declares, with the suffixes each type's samples have
    (a labelled histogram has no samples until it is observed, but its TYPE is there)."""
    client.post(
        "/v1/chat/completions",
        json={"model": "tiny", "messages": [{"role": "user", "content": "x"}]},
    )
    text = client.get("/metrics").text
    names = set()
    for family in text_string_to_metric_families(text):
        names |= {family.name + suffix for suffix in SUFFIXES.get(family.type, ("",))}
    return names


def dashboard_queries() -> list[str]:
    board = json.loads((ROOT / "deploy" / "grafana" / "ovchat.json").read_text())
    queries = [t["expr"] for panel in board["panels"] for t in panel["targets"]]
    queries += [
        v["query"]["query"] for v in board["templating"]["list"] if isinstance(v["query"], dict)
    ]
    return queries


def test_the_dashboard_queries_only_exported_series(client: TestClient) -> None:
    names = exported(client)
    assert "ovchat_requests_total" in names  # the scrape was read
    queries = dashboard_queries()
    assert len(queries) > 10
    used = set()
    for query in queries:
        found = set(SERIES.findall(query))
        assert found, f"queries no ovchat series: {query}"
        used |= found
    assert used <= names, sorted(used - names)
    # The dashboard covers the series a replica's health is read from.
    for series in (
        "ovchat_requests_waiting",
        "ovchat_requests_running",
        "ovchat_kv_cache_usage_ratio",
        "ovchat_time_to_first_token_seconds_bucket",
        "ovchat_time_per_output_token_seconds_bucket",
        "ovchat_generation_tokens_total",
    ):
        assert series in used, series


def test_the_autoscaling_rule_reads_an_exported_series(client: TestClient) -> None:
    values = yaml.safe_load((ROOT / "deploy" / "prometheus-adapter" / "values.yaml").read_text())
    (rule,) = values["rules"]["custom"]
    (series,) = SERIES.findall(rule["seriesQuery"])
    assert series in exported(client)
