"""Two replicas behind vllm-router and behind HAProxy (bench/cluster.py): where requests
go, what a rolling restart and a killed replica cost, whether affinity keeps a
conversation on the replica that has its prefix cached, and whether a stored conversation
continues on the other replica. Placement and losses are asserted exactly; times (TTFT,
restarts) are printed, never asserted."""

from __future__ import annotations

import signal
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from bench.cluster import MODEL, Cluster, Outcome, Replica, stream_chat
from tests.cluster.conftest import figure

HEALTH_INTERVAL_S = 1.0  # both routers' configurations (deploy/)
CHAT = "/v1/chat/completions"


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def served_by(cluster: Cluster, call: Callable[[], object], endpoint: str) -> int:
    """The index of the replica that answered `call` (made alone, one request)."""
    before = [r.served(endpoint) for r in cluster.replicas]
    call()
    after = [r.served(endpoint) for r in cluster.replicas]
    moved = [r.index for r, b, a in zip(cluster.replicas, before, after, strict=True) if a > b]
    assert len(moved) == 1, (before, after)
    return moved[0]


class SteadyLoad:
    """`clients` threads streaming one request after another through the router."""

    def __init__(self, url: str, clients: int, max_tokens: int = 48) -> None:
        self.url = url
        self.outcomes: list[Outcome] = []
        self._running = threading.Event()
        self._running.set()
        self._threads = [
            threading.Thread(target=self._loop, args=(i, max_tokens)) for i in range(clients)
        ]

    def _loop(self, client: int, max_tokens: int) -> None:
        n = 0
        while self._running.is_set():
            n += 1
            question = ask(f"Client {client}, request {n}: count to ten.")
            self.outcomes.append(stream_chat(self.url, question, max_tokens))

    def __enter__(self) -> SteadyLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._running.clear()
        for thread in self._threads:
            thread.join(300)

    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]


@pytest.fixture
def replicas_up(cluster: Cluster) -> Iterator[Cluster]:
    """Every scenario starts and ends with both replicas healthy and the router's default
    policy (a scenario that fails midway must not leave the next one a broken cluster)."""
    yield cluster
    for replica in cluster.replicas:
        if replica.process is None or replica.process.poll() is not None:
            replica.start()
        replica.wait_healthy()
    router = cluster.router
    if (
        cluster.router_kind == "vllm-router"
        and router is not None
        and router.policy != "power_of_two"
    ):
        cluster.restart_router("power_of_two")


def test_load_spreads_by_load(replicas_up: Cluster) -> None:
    """One replica busy with long streams; new requests go to the other. vllm-router's
    power_of_two learns it from each replica's /get_load, so the long streams go to
    replica 1 directly (another entry point's traffic, as it were); HAProxy's leastconn
    counts only the connections it made itself, so its long stream comes through it."""
    cluster = replicas_up
    direct = cluster.router_kind == "vllm-router"
    streams = 3 if direct else 1
    target = cluster.replicas[0].url if direct else cluster.url
    stop = threading.Event()
    long_story = ask("Write a very long story about the sea.")
    with ThreadPoolExecutor(streams) as pool:
        holding = [
            pool.submit(stream_chat, target, long_story, 4000, stop=stop) for _ in range(streams)
        ]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and sum(r.load() for r in cluster.replicas) < streams:
            time.sleep(0.1)
        busy, idle = sorted(cluster.replicas, key=lambda r: -r.load())
        held = busy.load()
        if direct:
            time.sleep(6)  # vllm-router polls /get_load every 5 s
        before = {r.index: r.served() for r in cluster.replicas}
        short = [stream_chat(cluster.url, ask(f"Say {i}."), 8) for i in range(12)]
        got = {r.index: r.served() - before[r.index] for r in cluster.replicas}
        stop.set()
        ended = [future.result() for future in holding]
    figure(
        cluster,
        "load spreads by load",
        f"replica {busy.index} holding {held} long streams; of 12 new requests "
        f"{got[busy.index]} went to it, {got[idle.index]} to replica {idle.index}",
    )
    assert held == streams
    assert all(o.ok for o in short)
    assert all(o.status == 200 for o in ended)  # they ran until the client left
    assert got[idle.index] == 12


def _restart(replica: Replica, sig: int) -> tuple[float, int]:
    """Signals the replica, waits for its exit, starts it again: (seconds until healthy
    again, exit code)."""
    started = time.monotonic()
    if sig == signal.SIGKILL:
        replica.kill()
        code = -9
    else:
        replica.signal(sig)
        code = replica.wait_exit()
    replica.start()
    replica.wait_healthy()
    return time.monotonic() - started, code


def test_a_rolling_restart_loses_no_request(replicas_up: Cluster) -> None:
    """SIGTERM replica 1 under steady streaming load, wait for it to be healthy again,
    then replica 2: the replica drains what it holds (its listener closes, /health says
    503 on connections still open), the router sends the rest to the other, and nothing
    is lost."""
    cluster = replicas_up
    times: list[str] = []
    with SteadyLoad(cluster.url, clients=3) as load:
        time.sleep(3)
        for replica in cluster.replicas:
            took, code = _restart(replica, signal.SIGTERM)
            assert code == 0
            times.append(f"replica {replica.index} back in {took:.1f} s")
            time.sleep(2 * HEALTH_INTERVAL_S + 1)  # the router's next checks see it
        time.sleep(3)
    failed = load.failed()
    figure(
        cluster,
        "rolling restart (SIGTERM, one at a time)",
        f"{len(load.outcomes)} streamed requests, {len(failed)} lost; " + ", ".join(times),
    )
    assert failed == []
    assert len(load.outcomes) > 10


def test_sigkill_fails_only_what_the_victim_held(replicas_up: Cluster) -> None:
    """SIGKILL replica 1 (its whole process group) under load: only the streams it held
    fail; requests sent after the router's next health check all succeed on replica 2;
    replica 1 rejoins when it is back."""
    cluster = replicas_up
    victim, survivor = cluster.replicas
    with SteadyLoad(cluster.url, clients=4, max_tokens=64) as load:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and victim.load() < 2:
            time.sleep(0.05)
        held = victim.load()
        killed_at = time.monotonic()
        victim.kill()
        time.sleep(6)
    failed = load.failed()
    late = [o for o in failed if o.started > killed_at + 2 * HEALTH_INTERVAL_S]
    victim.start()
    victim.wait_healthy()
    time.sleep(2 * HEALTH_INTERVAL_S + 1)
    rejoined = sum(
        served_by(cluster, lambda: stream_chat(cluster.url, ask("Again."), 8), CHAT) == victim.index
        for _ in range(10)
    )
    figure(
        cluster,
        "SIGKILL of one replica",
        f"it held {held} streams; {len(failed)} of {len(load.outcomes)} requests failed, "
        f"{len(late)} sent after the health interval; back, it took {rejoined} of the "
        "next 10",
    )
    assert 0 < len(failed) <= held
    assert late == []
    assert rejoined > 0
    assert survivor.healthy()


SYSTEM = (
    "You are the archivist of session {session}. Below is the archive you must answer "
    "from; quote it exactly when asked.\n"
    + "\n".join(
        f"Entry {i} of session {{session}}: the parcel numbered {i} went to the warehouse on "
        f"row {i % 7}, shelf {i % 5}, and was signed for by clerk {i % 11}."
        for i in range(40)
    )
)


def _turn(url: str, session: str, history: list[Outcome], header: bool) -> Outcome:
    """The conversation's next turn: its system prompt, every earlier turn, a question."""
    messages = [{"role": "system", "content": SYSTEM.format(session=session)}]
    for earlier, outcome in enumerate(history):
        messages.append({"role": "user", "content": f"Where did parcel {earlier * 3} go?"})
        messages.append({"role": "assistant", "content": outcome.text or "I do not know."})
    messages.append({"role": "user", "content": f"Where did parcel {len(history) * 3} go?"})
    headers = {"X-Session-ID": session} if header else None
    return stream_chat(url, messages, 12, headers=headers)


def _sessions(cluster: Cluster, tag: str, header: bool) -> tuple[list[set[int]], list[float]]:
    """Four conversations of four turns, one after another: per conversation the replicas
    that served it, and the TTFT of every turn after the first."""
    placements: list[set[int]] = []
    later_ttft: list[float] = []
    for s in range(4):
        session = f"{tag}-{s}"
        history: list[Outcome] = []
        replicas: set[int] = set()
        for _ in range(4):
            replicas.add(
                served_by(
                    cluster,
                    lambda h=history, sid=session: h.append(_turn(cluster.url, sid, h, header)),
                    CHAT,
                )
            )
        assert all(o.ok for o in history)
        placements.append(replicas)
        later_ttft.extend(o.ttft_s or 0.0 for o in history[1:])
    return placements, later_ttft


def test_session_affinity_keeps_the_prefix_cache_warm(replicas_up: Cluster) -> None:
    """Conversations with a long system prompt of their own (~1,300 tokens), turn after
    turn: with affinity on X-Session-ID (vllm-router's consistent_hash, HAProxy's
    consistent hash of the header) every turn of a conversation lands on one replica, so
    each later turn finds its prefix cached; round robin (vllm-router) or leastconn
    (HAProxy, without the header) moves turns to the replica that has never seen it."""
    cluster = replicas_up
    if cluster.router_kind == "vllm-router":
        cluster.restart_router("consistent_hash")
    sticky, sticky_ttft = _sessions(cluster, f"{cluster.router_kind}-sticky", header=True)
    if cluster.router_kind == "vllm-router":
        cluster.restart_router("round_robin")
    spread, spread_ttft = _sessions(cluster, f"{cluster.router_kind}-spread", header=False)
    contrast = "round_robin" if cluster.router_kind == "vllm-router" else "leastconn"

    def summary(ttft: list[float], placements: list[set[int]]) -> str:
        return (
            f"mean {statistics.mean(ttft) * 1000:.0f} ms, p50 "
            f"{statistics.median(ttft) * 1000:.0f} ms, max {max(ttft) * 1000:.0f} ms, "
            f"{sum(len(p) == 1 for p in placements)}/4 conversations on one replica"
        )

    figure(
        cluster,
        "session affinity: TTFT of turns 2-4, 4 conversations",
        f"affinity: {summary(sticky_ttft, sticky)}; {contrast}: {summary(spread_ttft, spread)}",
    )
    assert all(len(p) == 1 for p in sticky)
    assert all(len(p) == 2 for p in spread)


def test_a_stored_conversation_continues_on_either_replica(replicas_up: Cluster) -> None:
    """A Responses conversation (`previous_response_id`), its store on PostgreSQL: turns
    sent through the router and, to be sure both take part, every other one straight to
    the replica that did not serve the turn before. Each turn sees the whole
    conversation: its input grows by the earlier turns."""
    cluster = replicas_up
    endpoint = "/v1/responses"
    previous: str | None = None
    inputs: list[int] = []
    where: list[int] = []
    for turn in range(4):
        body: dict[str, object] = {
            "model": MODEL,
            "input": f"Turn {turn}: name a colour.",
            "max_output_tokens": 8,
            "temperature": 0,
        }
        if previous is not None:
            body["previous_response_id"] = previous
        if turn % 2 == 1:
            other = next(r for r in cluster.replicas if r.index != where[-1])
            url = other.url
        else:
            url = cluster.url
        answers: list[httpx.Response] = []
        where.append(
            served_by(
                cluster,
                lambda url=url, body=body, answers=answers: answers.append(
                    httpx.post(f"{url}/v1/responses", json=body, timeout=120)
                ),
                endpoint,
            )
        )
        assert answers[0].status_code == 200, answers[0].text
        answer = answers[0].json()
        previous = answer["id"]
        inputs.append(answer["usage"]["input_tokens"])
    for replica in cluster.replicas:  # the last one reads the same from either replica
        got = httpx.get(f"{replica.url}/v1/responses/{previous}", timeout=30)
        assert got.status_code == 200 and got.json()["id"] == previous
    figure(
        cluster,
        "stored conversation across replicas",
        f"4 turns served by replicas {where}; input tokens per turn {inputs}",
    )
    assert set(where) == {1, 2}
    assert inputs == sorted(inputs) and len(set(inputs)) == 4
