"""Every knob of the server in one place. Environment variables (OVCHAT_*) and a .env file
set them; CLI flags, generated from these fields, only override."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, SecretStr
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


def _comma_list(value: object) -> object:
    """Environment variables hold one value or a comma-separated list, not JSON."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object) -> object:
    """Seconds as a number, or Ollama's duration strings ("30s", "5m", "1h30m", "-1"): the
    same spelling for the --keep-alive flag and a request's keep_alive."""
    if not isinstance(value, str):
        return value
    text = value.strip().lower()
    try:
        return float(text)
    except ValueError:
        pass
    sign = -1.0 if text.startswith("-") else 1.0
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", text.lstrip("-"))
    if not parts or "".join(n + u for n, u in parts) != text.lstrip("-"):
        raise ValueError(f"not a duration: {value!r} (seconds, or e.g. 30s, 5m, 1h)")
    return sign * sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


Duration = Annotated[float, BeforeValidator(parse_duration)]


def _state_home() -> Path:
    xdg = os.environ.get("XDG_STATE_HOME")
    return Path(xdg) if xdg else Path.home() / ".local" / "state"


CommaList = Annotated[list[str], NoDecode, BeforeValidator(_comma_list)]
SecretList = Annotated[list[SecretStr], NoDecode, BeforeValidator(_comma_list)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OVCHAT_", env_file=".env", extra="ignore")

    # Serving
    host: str = Field("127.0.0.1", description="Address to bind; loopback unless told.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port to listen on.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level of ovchat and uvicorn."
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="Log lines as human-readable text or as JSON objects."
    )
    response_timings: bool = Field(
        False,
        description="Add llama.cpp-style `timings` to completions (streams: to the usage chunk).",
    )

    # Security
    api_key: SecretList = Field(
        default_factory=list,
        description="API keys accepted as `Authorization: Bearer <key>` (repeat the flag, or "
        "comma-separate); none set means no authentication.",
    )
    api_key_file: Path | None = Field(
        None, description="File with one API key per line, added to api_key."
    )
    admin_key: SecretList = Field(
        default_factory=list,
        description="Keys of the admin endpoints (/models/load, /models/unload), distinct "
        "from api_key; none set disables them.",
    )
    cors_origins: CommaList = Field(
        default_factory=list, description="Origins allowed by CORS; empty turns CORS off."
    )

    # Models
    model: CommaList = Field(
        default_factory=list,
        description=(
            "Folder of an OpenVINO export, or a model name in the model store; repeat the "
            "flag to serve several. Default: phi3-instruct when exported there, else the "
            "embedded default model, and beside it the default embedding model when built."
        ),
    )
    all_models: bool = Field(
        False,
        description="Serve every complete model in the model store (beside any --model).",
    )
    model_store: Path = Field(
        REPO_ROOT / "model_store", description="Folder holding built and exported models."
    )
    served_model_name: str | None = Field(
        None,
        description="Model id clients use and /v1/models lists (default: its name); only "
        "when one model is served.",
    )
    preload: Literal["all", "first", "none"] = Field(
        "all",
        description="Models loaded at startup: all, the first only, or none; the others "
        "load on their first request. Never more than max_loaded_models and the memory "
        "budget allow.",
    )
    max_loaded_models: int = Field(
        0,
        ge=0,
        description="Most models loaded at once (0: no cap); loading one more unloads the "
        "least recently used idle model.",
    )
    models_memory_gb: float = Field(
        0.0,
        ge=0,
        description="Memory budget of the loaded models in GiB (0: none): each engine "
        "process's resident memory once loaded, its weights on disk before. Loading past it "
        "unloads least recently used idle models.",
    )
    keep_alive: Duration = Field(
        -1.0,
        description="Unload a model idle this long (seconds, or 30s, 5m, 1h; negative: "
        "never; 0: right after each request). A request's `keep_alive` overrides it for its "
        "model, as Ollama's does.",
    )
    load_timeout_s: float = Field(
        120.0,
        gt=0,
        description="How long a request waits for its model to load before a 503 with "
        "Retry-After (the load goes on).",
    )

    # Engine
    engine: Literal["genai", "optimum"] = Field(
        "genai",
        description=(
            "genai: openvino-genai continuous batching in its own process. optimum: the "
            "cookbook sample's OVModelForCausalLM.generate, one request at a time."
        ),
    )
    device: str = Field(
        "auto",
        description=(
            "OpenVINO device. auto prefers GPU.0 and falls back to CPU; an explicit "
            "device that is absent stops startup."
        ),
    )
    performance_hint: str = Field("LATENCY", description="OpenVINO PERFORMANCE_HINT.")
    num_streams: str = Field("1", description="OpenVINO NUM_STREAMS.")
    cache_dir: str = Field(
        "", description="OpenVINO CACHE_DIR for compiled models; empty disables caching."
    )
    max_num_seqs: int = Field(
        16,
        ge=1,
        description="Most sequences the genai scheduler runs at once (more wait in the "
        "queue); at most max_num_batched_tokens, so every running sequence decodes in every "
        "step.",
    )
    max_num_batched_tokens: int = Field(
        256,
        ge=1,
        description="Token budget of one genai step: the running sequences' next tokens, "
        "then chunks of waiting prompts. Large prefills a burst of requests or a lone long "
        "prompt in few steps; prefill pacing (below) keeps it from freezing the streams "
        "that decode meanwhile. Where pacing cannot run (the window cache, no prefix cache) "
        "the budget is cut to max_num_seqs, as a long prompt would otherwise stall every "
        "stream (docs/BENCHMARKS.md: a 3000-token prompt raises 8 streams' ITL p99 x9 at "
        "256 unpaced, x2.6 paced, x1.5 at 16).",
    )
    prefill_pace_tokens: int = Field(
        32,
        ge=0,
        description="While any sequence decodes, at most this many new prompt tokens "
        "enter one step (whole KV blocks of 32): a longer prompt goes in as pieces that the "
        "prefix cache keeps, so streams stay smooth however large the step budget is, and "
        "max_num_batched_tokens bounds only steps in which nothing decodes (a burst of new "
        "requests, a lone long prompt). 0 leaves pacing to genai's budget alone, as given. "
        "Needs the prefix cache with every block kept (off under the window cache, and the "
        "budget then cut to max_num_seqs). docs/BENCHMARKS.md has the measurements.",
    )
    kv_cache_gb: int = Field(
        1,
        ge=1,
        description="KV cache capacity of the genai engine in GiB of memory (whole GiB, as "
        "openvino-genai takes it); blocks are allocated as they fill, up to this cap. A "
        "Phi-3-mini token takes 224 KiB at u8 and 128 KiB at u4 (bench/kvbytes.py; the "
        "default model 13.4 KiB at u8), so 1 GiB holds one full 4k Phi-3 context at u8.",
    )
    kv_cache_tokens: int = Field(
        0,
        ge=0,
        description="KV cache capacity in tokens, rounded up to whole blocks (32 on CPU); "
        "when set it replaces kv_cache_gb, so the cache can be any size. Memory is this "
        "times the model's bytes per token at kv_cache_precision (above).",
    )
    kv_cache_window: bool = Field(
        True,
        description="For a model whose every layer attends a sliding window shorter than "
        "its context (Phi-3-mini-4k: 2047 tokens, read from the exported graph), free the "
        "KV blocks a sequence can no longer attend once its prompt is in: at most ~2.2k "
        "tokens a sequence instead of 4k, the same tokens out (tests compare them). CPU "
        "only: on other devices every block is kept.",
    )
    kv_cache_precision: Literal["auto", "u4", "u8", "f16", "bf16", "f32"] = Field(
        "auto",
        description="KV cache element type (auto: the plugin's default, u8 on CPU). u4 "
        "holds 1.75x the tokens of u8 in the same memory (keys quantized per channel, "
        "values per token) at some cost in accuracy; f16 takes 1.7x u8's memory.",
    )
    inference_precision: Literal["auto", "f32", "bf16", "f16"] = Field(
        "auto",
        description="The CPU plugin's inference precision (auto: its default, bf16 where "
        "the CPU has AVX512-BF16 or AMX). f32 is slower and the most exact: with it, the "
        "dynamic quantization off and an f32 KV cache, both engines' log-probabilities agree "
        "to about 2e-4.",
    )
    enable_prefix_caching: bool = Field(
        True, description="Reuse KV cache blocks of prompts that share a prefix."
    )
    dynamic_split_fuse: bool = Field(
        True, description="Mix prefill chunks and decode steps in one batch (genai)."
    )
    speculative_decoding: Literal["off", "prompt-lookup", "draft"] = Field(
        "off",
        description="Speculative decoding in the genai engine: prompt-lookup drafts "
        "candidate tokens from n-grams of the prompt (copy-heavy work: edits, summaries, "
        "code), draft drafts them with --draft-model. The model verifies them in one pass, "
        "so greedy output is the plain decoder's: token for token with dynamic quantization "
        "off (below) and a prompt prefilled in the same chunks; with it on, copied text "
        "is identical and free text may differ where the model nearly ties. "
        "docs/BENCHMARKS.md has the measurements.",
    )
    draft_model: Path | None = Field(
        None,
        description="Export folder of the draft model for --speculative-decoding draft (it "
        "must share the model's tokenizer, as Phi-3-mini does Phi-3-medium's).",
    )
    num_assistant_tokens: int = Field(
        5, ge=1, description="Candidate tokens drafted per step by a speculating sequence."
    )
    max_ngram_size: int = Field(
        3, ge=1, description="Longest n-gram prompt lookup matches against the prompt."
    )
    speculation_busy_at: int = Field(
        4,
        ge=0,
        description="Speculation pays while compute is spare and costs when the batch is "
        "full. A request that arrives while more sequences than this run drafts one token "
        "a step instead of num_assistant_tokens, and no request drafts more than its share "
        "of the step budget; once more than this many run and the speculating ones' "
        "candidates are not accepted often enough (speculation_min_acceptance), they move "
        "to a plain pipeline the engine keeps beside the speculative one (one more copy "
        "of the weights in memory); until the speculating requests have been judged, "
        "the requests that speculated last decide.",
    )
    speculation_min_acceptance: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Share of their candidates the speculating requests must see accepted "
        "(each judged after its first 4 decoding steps) for speculation to stay on once "
        "more than speculation_busy_at sequences run; below it they move to the plain "
        "pipeline.",
    )
    dynamic_quantization: bool = Field(
        True,
        description="The CPU plugin's dynamic quantization of activations for int4/int8 "
        "weights (DYNAMIC_QUANTIZATION_GROUP_SIZE): multi-token passes (prefill, verifying "
        "speculative candidates) run on int8 kernels, 2-4x faster. Their numerics differ "
        "slightly from one-token decoding's, so a token the model nearly ties on can come "
        "out differently when speculation verifies it; with it off on both servers, "
        "speculative greedy output is plain decoding's token for token (tests).",
    )
    inference_threads: int = Field(
        0, ge=0, description="INFERENCE_NUM_THREADS for the engine; 0 lets OpenVINO choose."
    )

    # Admission and lifetime of requests
    max_queue: int = Field(
        64,
        ge=0,
        description="Requests that may wait beyond the max_num_seqs running; more get 429.",
    )
    request_timeout_s: float = Field(
        600.0,
        gt=0,
        description="Wall-clock limit of one request; on expiry it ends with what it has.",
    )
    shutdown_timeout_s: int = Field(
        30, ge=0, description="On SIGTERM, how long in-flight requests may take to finish."
    )

    # Request limits
    max_body_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="Largest request body accepted (else 413)."
    )
    max_json_depth: int = Field(
        32, ge=4, description="Deepest nesting of arrays and objects in a request body."
    )
    max_n: int = Field(8, ge=1, description="Largest `n` a request may ask for.")
    max_stop_sequences: int = Field(16, ge=0, description="Most stop strings per request.")
    max_messages: int = Field(1024, ge=1, description="Most messages in one chat request.")
    max_tool_calls: int = Field(
        4, ge=1, description="Most parallel tool calls in one forced (required) reply."
    )
    exact_scoring: bool = Field(
        True,
        description="Serve top_logprobs, logit_bias and prompt log-probabilities (echo with "
        "logprobs) by a second engine that runs the export through OpenVINO directly and sees "
        "every logit; it loads on the first such request. Off: they are a 400.",
    )
    scoring_idle_s: float = Field(
        300.0,
        gt=0,
        description="Unload the exact scoring engine after this many seconds without a "
        "request that needs it.",
    )
    grammar_check_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Longest a new grammar (response_format schema, forced tool calls) may "
        "take to compile before it is refused with 400: the engine compiles a grammar inside "
        "a step, so every stream would wait that long. Each grammar is compiled once first, "
        "by the engine's own compiler in a probe process.",
    )

    # State
    state_dir: Path = Field(
        default_factory=lambda: _state_home() / "ovchat",
        description="Folder of the server's own state: the stored Responses API responses "
        "(responses.sqlite3). Default: $XDG_STATE_HOME/ovchat or ~/.local/state/ovchat.",
    )
    state_url: SecretStr | None = Field(
        None,
        description="A PostgreSQL database for the stored Responses API responses "
        "(postgresql://user:password@host:port/dbname, libpq's URL), shared by every replica "
        "given the same URL, so a conversation continues on whichever replica takes its "
        "next turn. Unset: SQLite in state_dir, this server's own. A secret (it may hold a "
        "password): never logged.",
    )
    responses_max_stored: int = Field(
        10_000,
        ge=1,
        description="Most stored responses (`store: true`); beyond it the oldest are removed.",
    )
    responses_max_age_s: float = Field(
        30 * 24 * 3600.0,
        gt=0,
        description="Stored responses older than this are removed (default 30 days).",
    )

    @classmethod
    def default_of(cls, name: str) -> object:
        field = cls.model_fields[name]
        factory = field.default_factory
        return factory() if factory is not None else field.default  # type: ignore[call-arg]

    def api_keys(self) -> list[str]:
        keys = [key.get_secret_value() for key in self.api_key]
        if self.api_key_file is not None:
            lines = self.api_key_file.read_text().splitlines()
            keys += [line.strip() for line in lines if line.strip() and not line.startswith("#")]
        return keys

    def engine_properties(self) -> dict[str, str]:
        """OpenVINO properties shared by both backends; defaults are the sample's ov_config."""
        props = {
            "PERFORMANCE_HINT": self.performance_hint,
            "NUM_STREAMS": self.num_streams,
            "CACHE_DIR": self.cache_dir,
        }
        if self.kv_cache_precision != "auto":
            props["KV_CACHE_PRECISION"] = self.kv_cache_precision
        if not self.dynamic_quantization:
            props["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = "0"
        if self.inference_precision != "auto":
            props["INFERENCE_PRECISION_HINT"] = self.inference_precision
        if self.inference_threads:
            props["INFERENCE_NUM_THREADS"] = str(self.inference_threads)
        return props
