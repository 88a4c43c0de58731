"""The cluster tests (`make test-cluster`, opt-in: several minutes, the whole machine):
two replicas of the default model behind each real router, sharing a PostgreSQL store
(bench/cluster.py). Every scenario adds its figures to one table, printed at the end."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from bench.cluster import Cluster, missing_router

FIGURES: list[tuple[str, str, str]] = []  # router, scenario, what was seen


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if os.environ.get("OVCHAT_TEST_CLUSTER") == "1":
        return
    skip = pytest.mark.skip(reason="opt-in: `make test-cluster` (several minutes)")
    for item in items:
        if "tests/cluster/" in str(item.path):
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not FIGURES:
        return
    terminalreporter.section("cluster figures")
    terminalreporter.write_line("| router | scenario | figures |")
    terminalreporter.write_line("|---|---|---|")
    for router, scenario, seen in FIGURES:
        terminalreporter.write_line(f"| {router} | {scenario} | {seen} |")


def figure(cluster: Cluster, scenario: str, seen: str) -> None:
    FIGURES.append((cluster.router_kind, scenario, seen))
    print(f"[{cluster.router_kind}] {scenario}: {seen}")


@pytest.fixture(scope="module", params=["vllm-router", "haproxy"])
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    missing = missing_router(request.param)
    if missing:
        pytest.fail(f"make test-cluster needs {missing}")
    with Cluster(request.param, replicas_n=2) as running:
        yield running
    # Its logs (replicas', router's) stay behind only when a scenario failed.
    if not request.session.testsfailed:
        shutil.rmtree(running.work, ignore_errors=True)
