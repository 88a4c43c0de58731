"""Every knob of the server in one place. Environment variables (OVCHAT_*) and a .env file
set them; CLI flags, generated from these fields, only override."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OVCHAT_", env_file=".env", extra="ignore")

    # Serving
    host: str = Field("127.0.0.1", description="Address to bind; loopback unless told.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port to listen on.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level of ovchat and uvicorn."
    )

    # Model
    model: str | None = Field(
        None,
        description=(
            "Folder of an OpenVINO export, or a model name in the model store. Default: "
            "phi3-instruct when exported there, else the embedded default model."
        ),
    )
    model_store: Path = Field(
        REPO_ROOT / "model_store", description="Folder holding built and exported models."
    )
    served_model_name: str | None = Field(
        None, description="Model id clients use and /v1/models lists (default: its name)."
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
        32, ge=1, description="Most sequences the genai scheduler batches in one step."
    )
    max_num_batched_tokens: int = Field(
        256,
        ge=1,
        description="Token budget of one genai step; with split-fuse, long prompts are "
        "prefilled in chunks of this size so running streams keep decoding.",
    )
    kv_cache_gb: float = Field(1.0, gt=0, description="KV cache size of the genai engine, in GB.")
    kv_cache_precision: Literal["auto", "u8", "f16", "bf16", "f32"] = Field(
        "auto", description="KV cache element type (auto: the plugin's default)."
    )
    enable_prefix_caching: bool = Field(
        True, description="Reuse KV cache blocks of prompts that share a prefix."
    )
    dynamic_split_fuse: bool = Field(
        True, description="Mix prefill chunks and decode steps in one batch (genai)."
    )
    inference_threads: int = Field(
        0, ge=0, description="INFERENCE_NUM_THREADS for the engine; 0 lets OpenVINO choose."
    )

    # Request limits
    max_n: int = Field(8, ge=1, description="Largest `n` a request may ask for.")
    max_stop_sequences: int = Field(16, ge=0, description="Most stop strings per request.")
    max_messages: int = Field(1024, ge=1, description="Most messages in one chat request.")
    max_tool_calls: int = Field(
        4, ge=1, description="Most parallel tool calls in one forced (required) reply."
    )

    def engine_properties(self) -> dict[str, str]:
        """OpenVINO properties shared by both backends; defaults are the sample's ov_config."""
        props = {
            "PERFORMANCE_HINT": self.performance_hint,
            "NUM_STREAMS": self.num_streams,
            "CACHE_DIR": self.cache_dir,
        }
        if self.kv_cache_precision != "auto":
            props["KV_CACHE_PRECISION"] = self.kv_cache_precision
        if self.inference_threads:
            props["INFERENCE_NUM_THREADS"] = str(self.inference_threads)
        return props
