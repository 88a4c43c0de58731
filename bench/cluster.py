"""N ovchat replicas on loopback behind a real router, sharing one PostgreSQL Responses
store: what `make cluster` runs, and what tests/cluster drives.

    python -m bench.cluster --replicas 2 --router vllm-router   # Ctrl-C stops everything

Each replica serves the default model on its own port with one inference thread (two
replicas on a two-core machine get a core each) and its access log in the work folder.
The routers' configuration is deploy/'s: deploy/vllm-router/vllm-router.sh (its command
line) and deploy/haproxy/haproxy.cfg (whose `#@servers` lines get one `server` line per
replica)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from app.modelstore import store
from app.settings import REPO_ROOT
from bench import postgres

logger = logging.getLogger("bench.cluster")

ROUTERS = ("vllm-router", "haproxy")
DEPLOY = REPO_ROOT / "deploy"
VLLM_ROUTER = DEPLOY / "vllm-router" / "vllm-router.sh"
HAPROXY_CFG = DEPLOY / "haproxy" / "haproxy.cfg"
ROUTER_VENV = REPO_ROOT / ".venv-router"
MODEL = "smollm2"
STARTUP_TIMEOUT_S = 240


def free_port() -> int:
    return postgres.free_port()


@dataclass
class Replica:
    index: int
    port: int
    work: Path
    state_url: str
    extra: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.work / f"replica{self.index}.log"

    def start(self) -> None:
        """Starts it (again, after a stop, on the same port); returns at once."""
        self.starts += 1
        cmd = [
            sys.executable,
            "-m",
            "app",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--model",
            str(store.model_dir(REPO_ROOT / "model_store", store.DEFAULT_MODEL)),
            "--served-model-name",
            MODEL,
            "--inference-threads",
            "1",
            "--state-url",
            self.state_url,
            "--state-dir",
            str(self.work / f"state{self.index}"),
            *self.extra,
        ]
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        with self.log.open("ab") as sink:
            # A session of its own: kill() takes the server and its engine processes at
            # once, as a container's death would.
            self.process = subprocess.Popen(
                cmd,
                stdout=sink,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
                env=env,
                start_new_session=True,
            )

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_healthy(self, timeout_s: float = STARTUP_TIMEOUT_S) -> float:
        """Seconds it took; raises if the process exits or the time runs out."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"replica {self.index} exited:\n{self.log_tail()}")
            if self.healthy():
                return time.monotonic() - started
            time.sleep(0.2)
        raise RuntimeError(f"replica {self.index} not healthy in {timeout_s:.0f} s")

    def signal(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL to the replica's whole process group: no drain, nothing closed."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def wait_exit(self, timeout_s: float = 120) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout_s)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def served(self, endpoint: str = "/v1/chat/completions") -> int:
        """Requests this replica answered 200 on `endpoint`, from its own /metrics (0 while
        it is down: what counts is the difference over a scenario it stayed up for)."""
        try:
            text = httpx.get(f"{self.url}/metrics", timeout=5).text
        except httpx.HTTPError:
            return 0
        wanted = ("ovchat_requests_total{", f'endpoint="{endpoint}"', 'status="200"')
        return sum(
            int(float(line.rsplit(" ", 1)[1]))
            for line in text.splitlines()
            if line.startswith(wanted[0]) and wanted[1] in line and wanted[2] in line
        )

    def load(self) -> int:
        try:
            return int(httpx.get(f"{self.url}/get_load", timeout=5).json()["load"])
        except httpx.HTTPError:
            return -1


@dataclass
class Router:
    kind: str
    port: int
    work: Path
    policy: str = "power_of_two"  # vllm-router's; HAProxy's is in its configuration
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.work / f"{self.kind}.log"

    def start(self, replicas: list[Replica]) -> None:
        if self.kind == "vllm-router":
            cmd = ["bash", str(VLLM_ROUTER), *(r.url for r in replicas)]
            env = {
                **os.environ,
                "OVCHAT_ROUTER_PORT": str(self.port),
                "OVCHAT_ROUTER_POLICY": self.policy,
                "OVCHAT_ROUTER_BIN": str(router_binary()),
            }
        else:
            cfg = self.work / "haproxy.cfg"
            servers = "\n".join(f"    server r{r.index} 127.0.0.1:{r.port} check" for r in replicas)
            cfg.write_text(HAPROXY_CFG.read_text().replace("    #@servers", servers))
            haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
            cmd = [haproxy, "-db", "-f", str(cfg)]
            env = {**os.environ, "OVCHAT_ROUTER_BIND": f"127.0.0.1:{self.port}"}
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, replicas: int, timeout_s: float = 120) -> None:
        """Until a request through it is answered by a replica (both routers check the
        replicas' health before they send them anything)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.kind} exited:\n{self.log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/v1/models", timeout=2).status_code == 200:
                    return
            time.sleep(0.3)
        raise RuntimeError(f"{self.kind} not ready in {timeout_s:.0f} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def router_binary() -> Path:
    return ROUTER_VENV / "bin" / "vllm-router"


def missing_router(kind: str) -> str | None:
    """What to install for `kind`, or None when it is there."""
    if kind == "vllm-router" and not router_binary().exists():
        return "vllm-router: `make router` (PyPI vllm-router 0.1.17 in .venv-router)"
    if (
        kind == "haproxy"
        and shutil.which("haproxy") is None
        and not Path("/usr/sbin/haproxy").exists()
    ):
        return "haproxy: `sudo apt-get install haproxy`"
    return None


@dataclass
class Cluster:
    """PostgreSQL, the replicas and the router, started in that order, stopped in reverse."""

    router_kind: str = "vllm-router"
    replicas_n: int = 2
    policy: str = "power_of_two"
    router_port: int = 0
    first_replica_port: int = 0  # replicas on this port and the next ones; 0: free ports
    extra: tuple[str, ...] = ()
    work: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ovchat-cluster-")))
    db: postgres.PostgresServer | None = None
    replicas: list[Replica] = field(default_factory=list)
    router: Router | None = None

    def start(self) -> None:
        self.db = postgres.start()
        state_url = self.db.create_database("ovchat")
        self.replicas = [
            Replica(
                i + 1,
                self.first_replica_port + i if self.first_replica_port else free_port(),
                self.work,
                state_url,
                self.extra,
            )
            for i in range(self.replicas_n)
        ]
        for replica in self.replicas:
            replica.start()
        for replica in self.replicas:
            replica.wait_healthy()
        self.router = Router(self.router_kind, self.router_port or free_port(), self.work)
        self.router.policy = self.policy
        self.router.start(self.replicas)
        self.router.wait_ready(self.replicas_n)

    def restart_router(self, policy: str) -> None:
        """The same replicas behind a router of another policy (vllm-router)."""
        assert self.router is not None
        self.router.stop()
        self.router.policy = policy
        self.router.start(self.replicas)
        self.router.wait_ready(self.replicas_n)

    @property
    def url(self) -> str:
        assert self.router is not None
        return self.router.url

    def stop(self) -> None:
        if self.router is not None:
            self.router.stop()
        for replica in self.replicas:
            replica.stop()
        if self.db is not None:
            self.db.stop()

    def __enter__(self) -> Cluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


@dataclass
class Outcome:
    """One streamed chat request as its client saw it."""

    started: float  # time.monotonic() when it was sent
    status: int | str  # the HTTP status, or the transport error's name
    complete: bool  # the stream ended with [DONE] and carried no error event
    ttft_s: float | None  # to the first content chunk
    text: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.complete


def stream_chat(
    url: str,
    messages: list[dict[str, str]],
    max_tokens: int = 32,
    headers: dict[str, str] | None = None,
    timeout_s: float = 300,
    stop: threading.Event | None = None,
) -> Outcome:
    """Streams one chat completion; `stop`, once set, ends it from the client's side
    (the server then cancels it), an outcome with status 200 and complete False."""
    body = {
        "model": MODEL,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }
    started = time.monotonic()
    first: float | None = None
    text: list[str] = []
    try:
        with httpx.stream(
            "POST",
            f"{url}/v1/chat/completions",
            json=body,
            headers=headers,
            timeout=timeout_s,
        ) as response:
            if response.status_code != 200:
                response.read()
                return Outcome(started, response.status_code, False, None, response.text[:300])
            done = errored = False
            for line in response.iter_lines():
                if stop is not None and stop.is_set():
                    break
                if line == "data: [DONE]":
                    done = True
                elif line.startswith("data: ") and '"error"' in line[:40]:
                    errored = True
                elif '"content":"' in line:
                    pieces = re.findall(r'"content":"((?:[^"\\]|\\.)*)"', line)
                    if any(pieces):  # the role's opening chunk carries an empty content
                        first = first or time.monotonic()
                    text.extend(pieces)
            ttft = first - started if first is not None else None
            return Outcome(started, 200, done and not errored, ttft, "".join(text))
    except httpx.HTTPError as exc:
        return Outcome(started, type(exc).__name__, False, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--router", choices=ROUTERS, default="vllm-router")
    parser.add_argument("--policy", default="power_of_two", help="vllm-router's policy")
    parser.add_argument(
        "--port", type=int, default=8100, help="the router's port; replicas on the next ones"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the harness's own polling
    missing = missing_router(args.router)
    if missing:
        sys.exit(f"Missing {missing}")
    cluster = Cluster(args.router, args.replicas, args.policy, args.port, args.port + 1)

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt  # SIGTERM stops the cluster as Ctrl-C does

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)  # also where it was started with SIGINT ignored
    try:
        cluster.start()
        assert cluster.db is not None
        logger.info("Router (%s): %s", args.router, cluster.url)
        for replica in cluster.replicas:
            logger.info("Replica %d: %s (log %s)", replica.index, replica.url, replica.log)
        logger.info("Responses store: %s", cluster.db.url("ovchat"))
        logger.info("Ctrl-C stops everything.")
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        logger.info("Stopping")
    finally:
        cluster.stop()
        shutil.rmtree(cluster.work, ignore_errors=True)


if __name__ == "__main__":
    main()
