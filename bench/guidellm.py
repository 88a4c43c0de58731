"""guidellm (an independent load client, in its own venv: `make bench-guidellm`) as bench/
peers.py runs it, and what is read from its JSON report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def command(
    guidellm: Path,
    target: str,
    tokenizer: Path,
    streams: int,
    requests: int,
    prompt_tokens: int,
    output_tokens: int,
    out: Path,
) -> list[str]:
    """One benchmark at a fixed number of concurrent streams: synthetic prompts of
    `prompt_tokens`, exactly `output_tokens` out (guidellm sends ignore_eos with a set
    output length), tokenized with a local tokenizer folder (nothing from a hub)."""
    return [
        str(guidellm),
        "run",
        "--backend",
        f"kind=openai_http,target={target},model=bench",
        "--tokenizer",
        f"kind=huggingface_auto,model={tokenizer}",
        "--data",
        f"kind=synthetic_text,prompt_tokens={prompt_tokens},output_tokens={output_tokens}",
        "--profile",
        f"kind=concurrent,streams={streams}",
        "--constraint",
        f"kind=max_requests,count={requests}",
        "--output",
        f"kind=json,path={out}",
        "--disable-console-interactive",
    ]


def read_report(path: Path) -> dict[str, Any]:
    """Aggregate output tokens/s (every successful request's output tokens over the
    benchmark's duration, guidellm's own "output tokens per second"), TTFT and ITL
    medians, and the request counts of the report's one benchmark."""
    benchmark = json.loads(path.read_text())["benchmarks"][0]
    metrics = benchmark["metrics"]
    totals = metrics["request_totals"]
    tokens = metrics["output_token_count"]["successful"]["total_sum"]
    return {
        "output_tok_s": tokens / benchmark["duration"] if benchmark["duration"] else 0.0,
        "ttft_p50_ms": metrics["time_to_first_token_ms"]["successful"]["median"],
        "itl_p50_ms": metrics["inter_token_latency_ms"]["successful"]["median"],
        "successful": totals["successful"],
        "failed": totals["errored"] + totals["incomplete"],
    }
