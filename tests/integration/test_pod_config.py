"""The Deployment's configuration (deploy/kubernetes/configmap.yaml) on a real server: its
OVCHAT_* variables, with the pod's paths mapped into a temporary folder, serve the
default models; the probes answer; the server writes where the pod's emptyDir volumes
are; and /metrics carries, with samples, every series the dashboard and the HPA read."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from app.settings import REPO_ROOT
from tests.integration.conftest import Server, launch, stop_server

DEPLOY = REPO_ROOT / "deploy"
SERIES = re.compile(r"\b(ovchat_[a-zA-Z0-9_]+)")


def pod_env(tmp: Path) -> dict[str, str]:
    """The ConfigMap and the container's own env, with the pod's mounts in `tmp`."""
    data: dict[str, str] = yaml.safe_load((DEPLOY / "kubernetes" / "configmap.yaml").read_text())[
        "data"
    ]
    deployment = yaml.safe_load((DEPLOY / "kubernetes" / "deployment.yaml").read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = data | {e["name"]: e["value"] for e in container["env"]}
    mounts = {"/models": str(REPO_ROOT / "model_store"), "/cache": str(tmp / "cache")}
    for name, value in env.items():
        for mount, local in mounts.items():
            if value == mount or value.startswith(mount + "/"):
                env[name] = local + value[len(mount) :]
    env["OVCHAT_HOST"] = "127.0.0.1"  # loopback here; the pod binds all addresses
    return env


@pytest.fixture(scope="module")
def pod(
    tmp_path_factory: pytest.TempPathFactory,
    default_model_dir: Path,
    minilm_dir: Path,
) -> Iterator[tuple[Server, dict[str, str]]]:
    tmp = tmp_path_factory.mktemp("pod")
    env = pod_env(tmp)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        server = launch(tmp, "smollm2-135m-instruct")
    yield server, env
    stop_server(server)


def test_the_pod_serves_and_writes_only_to_its_volumes(pod: tuple[Server, dict[str, str]]) -> None:
    server, env = pod
    health = httpx.get(f"{server.url}/health", timeout=5)
    assert health.status_code == 200
    assert set(health.json()["models"]) == set(env["OVCHAT_MODEL"].split(","))
    assert httpx.get(f"{server.url}/health/live", timeout=5).json() == {"status": "ok"}
    response = httpx.post(
        f"{server.url}/v1/responses",
        json={"model": "smollm2-135m-instruct", "input": "Say hi.", "max_output_tokens": 8},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    # The Responses store and OpenVINO's compile cache are on the /cache emptyDir.
    assert (Path(env["OVCHAT_STATE_DIR"]) / "responses.sqlite3").is_file()
    assert any(Path(env["OVCHAT_CACHE_DIR"]).iterdir())


def test_metrics_carry_what_the_dashboard_reads(pod: tuple[Server, dict[str, str]]) -> None:
    server, _ = pod
    body = {
        "model": "smollm2-135m-instruct",
        "messages": [{"role": "user", "content": "Count to five."}],
        "max_tokens": 16,
        "stream": True,
    }
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200
        assert [line for line in r.iter_lines() if line][-1] == "data: [DONE]"
    scrape = httpx.get(f"{server.url}/metrics", timeout=5).text
    sampled = {
        sample.name
        for family in text_string_to_metric_families(scrape)
        for sample in family.samples
    }
    board = json.loads((DEPLOY / "grafana" / "ovchat.json").read_text())
    used = {
        name
        for panel in board["panels"]
        for target in panel["targets"]
        for name in SERIES.findall(target["expr"])
    }
    rule = yaml.safe_load((DEPLOY / "prometheus-adapter" / "values.yaml").read_text())
    used |= set(SERIES.findall(rule["rules"]["custom"][0]["seriesQuery"]))
    assert len(used) > 10
    assert used <= sampled, sorted(used - sampled)
