"""Real servers: `ovchat serve` as a uvicorn subprocess on loopback, one per model and
engine, shared by the tests of a session."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

from bench import servers

STARTUP_TIMEOUT_S = 180
JS = Path(__file__).resolve().parent.parent / "js"  # the JavaScript clients (npm)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here is an integration test (`-m "not integration"` is the fast lane)."""
    here = Path(__file__).resolve().parent
    for item in items:
        if here in item.path.resolve().parents:
            item.add_marker(pytest.mark.integration)


@dataclass
class Server:
    url: str
    model: str
    log: Path
    process: subprocess.Popen[bytes]

    def client(self, **kwargs: object) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key="unused", max_retries=0, **kwargs)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start_server(tmp: Path, model: Path, name: str, *extra: str) -> Server:
    """One model, served as `name`."""
    return launch(tmp, name, "--model", str(model), "--served-model-name", name, *extra)


def launch(tmp: Path, name: str, *args: str) -> Server:
    """`ovchat serve` with `args` (the models included); `name` labels its log and is the
    model its client speaks to by default."""
    port = servers.free_port()
    log = tmp / f"{name}-{port}.log"
    process, _ = servers.spawn(
        servers.ovchat_serve_cmd(port, *args),
        f"http://127.0.0.1:{port}/health",
        log,
        STARTUP_TIMEOUT_S,
        env=servers.ovchat_env(),
        poll_s=0.3,
    )
    return Server(f"http://127.0.0.1:{port}", name, log, process)


def stop_server(server: Server) -> None:
    servers.stop(server.process, timeout_s=30)


@pytest.fixture(scope="session")
def server_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("servers")


@pytest.fixture(scope="session")
def tiny_server(server_logs: Path, tiny_model_dir: Path) -> Iterator[Server]:
    server = start_server(server_logs, tiny_model_dir, "tiny-phi3")
    yield server
    stop_server(server)


@pytest.fixture(scope="session")
def tiny_optimum_server(server_logs: Path, tiny_model_dir: Path) -> Iterator[Server]:
    server = start_server(server_logs, tiny_model_dir, "tiny-phi3", "--engine", "optimum")
    yield server
    stop_server(server)


@pytest.fixture(scope="session")
def default_server(server_logs: Path, default_model_dir: Path) -> Iterator[Server]:
    server = start_server(server_logs, default_model_dir, "smollm2")
    yield server
    stop_server(server)


@pytest.fixture(scope="session")
def js_sdk() -> Path:
    """Node, with the JavaScript SDKs of tests/js/package.json installed from its lock."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("Node.js and npm are needed for the JavaScript SDK tests (Debian: nodejs npm)")
    wanted = json.loads((JS / "package.json").read_text())["dependencies"]
    if not all((JS / "node_modules" / name / "package.json").is_file() for name in wanted):
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=JS,
            check=True,
            timeout=300,
        )
    return Path(node)


def run_js(node: Path, script: str, server: Server) -> dict[str, Any]:
    """Runs a client script of tests/js against `server`; its last line is what it saw, as
    JSON."""
    result = subprocess.run(
        [str(node), str(JS / script), server.url, server.model],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return out


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # Loopback only: a proxy from the environment must never see test traffic.
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    os.environ.setdefault("no_proxy", "127.0.0.1,localhost")
