"""Prometheus metrics, one registry per app (no process-global state), so two servers in
one process, or a test's app, never share counters."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from app.engine.base import EngineStats
    from app.pool import ModelPool, ServedModel

PREFIX = "ovchat"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 1.0)


class _ModelCollector(Collector):
    """Gauges read at scrape time: each loaded model's engine report, and what is loaded."""

    def __init__(self, pool: ModelPool) -> None:
        self._pool = pool

    def collect(self) -> Iterator[Metric]:
        running = GaugeMetricFamily(
            f"{PREFIX}_requests_running", "Sequences the engine is decoding.", labels=["model"]
        )
        waiting = GaugeMetricFamily(
            f"{PREFIX}_requests_waiting",
            "Sequences admitted but not yet scheduled by the engine.",
            labels=["model"],
        )
        kv = GaugeMetricFamily(
            f"{PREFIX}_kv_cache_usage_ratio", "Fraction of the KV cache in use.", labels=["model"]
        )
        loaded = GaugeMetricFamily(
            f"{PREFIX}_model_loaded", "1 while the model is loaded, else 0.", labels=["model"]
        )
        memory = GaugeMetricFamily(
            f"{PREFIX}_model_memory_bytes",
            "Resident memory of a loaded model's engine process (its weights on disk when "
            "it runs in the server's process).",
            labels=["model"],
        )
        # vLLM's spec_decode counters, by ovchat's prefix: accepted / draft is the rate.
        draft = CounterMetricFamily(
            f"{PREFIX}_spec_decode_num_draft_tokens",
            "Speculative decoding: candidate tokens the engine verified.",
            labels=["model"],
        )
        accepted = CounterMetricFamily(
            f"{PREFIX}_spec_decode_num_accepted_tokens",
            "Speculative decoding: candidate tokens the model accepted.",
            labels=["model"],
        )
        moved = CounterMetricFamily(
            f"{PREFIX}_spec_decode_moved_requests",
            "Speculative decoding: requests moved to the plain pipeline once the batch was "
            "busy and their candidates were not accepted often enough.",
            labels=["model"],
        )
        pieces = CounterMetricFamily(
            f"{PREFIX}_prefill_pieces",
            "Prefill pacing: pieces of long prompts fed to the engine while others decoded.",
            labels=["model"],
        )
        gateway = _GatewaySeries()
        for model in self._pool.models.values():
            loaded.add_metric([model.id], 1.0 if model.loaded is not None else 0.0)
            if model.loaded is None:
                continue
            stats = model.loaded.stats()
            running.add_metric([model.id], stats.running)
            waiting.add_metric([model.id], stats.waiting)
            kv.add_metric([model.id], stats.kv_usage)
            memory.add_metric([model.id], model.footprint())
            draft.add_metric([model.id], stats.draft_tokens)
            accepted.add_metric([model.id], stats.accepted_tokens)
            moved.add_metric([model.id], stats.moved_requests)
            pieces.add_metric([model.id], stats.prefill_pieces)
            gateway.add(model.id, stats)
        yield from (running, waiting, kv, loaded, memory, draft, accepted, moved, pieces)
        yield from gateway.families()


class _GatewaySeries:
    """The series the Gateway API Inference Extension's endpoint picker (and llm-d's
    router) scrape from a model server, by vLLM's names and types: the same numbers as
    ovchat's own gauges above, aliased, with the served model's id as `model_name`."""

    def __init__(self) -> None:
        self.running = GaugeMetricFamily(
            "vllm:num_requests_running",
            "Number of requests in model execution batches.",
            labels=["model_name"],
        )
        self.waiting = GaugeMetricFamily(
            "vllm:num_requests_waiting",
            "Number of requests waiting to be processed: admitted and not running yet, "
            "ovchat's own admission queue included.",
            labels=["model_name"],
        )
        self.kv = GaugeMetricFamily(
            "vllm:kv_cache_usage_perc",
            "KV-cache usage. 1 means 100 percent usage.",
            labels=["model_name"],
        )
        self.cache = GaugeMetricFamily(
            "vllm:cache_config_info",
            "Information of the KV cache's layout (value 1).",
            labels=["model_name", "block_size", "num_gpu_blocks"],
        )

    def add(self, model: str, stats: EngineStats) -> None:
        self.running.add_metric([model], stats.running)
        self.waiting.add_metric([model], stats.waiting)
        self.kv.add_metric([model], stats.kv_usage)
        if stats.kv_blocks:
            self.cache.add_metric([model, str(stats.block_size), str(stats.kv_blocks)], 1.0)

    def families(self) -> Iterator[Metric]:
        yield from (self.running, self.waiting, self.kv, self.cache)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            f"{PREFIX}_requests",
            "HTTP requests by route, status and model (empty for routes of no model).",
            ["endpoint", "status", "model"],
            registry=self.registry,
        )
        self.ttft = Histogram(
            f"{PREFIX}_time_to_first_token_seconds",
            "Time from request arrival to its first generated token.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tpot = Histogram(
            f"{PREFIX}_time_per_output_token_seconds",
            "Mean time between generated tokens, per request.",
            ["model"],
            buckets=_TOKEN_BUCKETS,
            registry=self.registry,
        )
        self.e2e = Histogram(
            f"{PREFIX}_e2e_request_latency_seconds",
            "Time from request arrival to its last token (embeddings: to the vectors).",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.prompt_tokens = Counter(
            f"{PREFIX}_prompt_tokens",
            "Prompt tokens processed (embedding inputs included).",
            ["model"],
            registry=self.registry,
        )
        self.generation_tokens = Counter(
            f"{PREFIX}_generation_tokens", "Tokens generated.", ["model"], registry=self.registry
        )
        self.step = Histogram(
            f"{PREFIX}_engine_step_seconds",
            "Duration of one engine step (one pass over every running sequence).",
            ["model"],
            buckets=_TOKEN_BUCKETS,
            registry=self.registry,
        )
        self.loads = Counter(
            f"{PREFIX}_model_loads",
            "Times a model was loaded (at startup, on demand, or by the admin).",
            ["model"],
            registry=self.registry,
        )

    def watch_models(self, pool: ModelPool) -> None:
        self.registry.register(_ModelCollector(pool))

    def model_changed(self, model: ServedModel) -> None:
        if model.status == "loaded":
            self.loads.labels(model.id).inc()

    def observe_generation(
        self,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        ttft_s: float | None,
        e2e_s: float,
    ) -> None:
        self.prompt_tokens.labels(model).inc(prompt_tokens)
        self.generation_tokens.labels(model).inc(completion_tokens)
        self.e2e.labels(model).observe(e2e_s)
        if ttft_s is not None:
            self.ttft.labels(model).observe(ttft_s)
            if completion_tokens > 1:
                self.tpot.labels(model).observe((e2e_s - ttft_s) / (completion_tokens - 1))

    def observe_embedding(self, model: str, prompt_tokens: int, e2e_s: float) -> None:
        self.prompt_tokens.labels(model).inc(prompt_tokens)
        self.e2e.labels(model).observe(e2e_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)
