"""lm-evaluation-harness end to end: its `local-completions` model scores a small
multiple-choice task (tests/integration/data/lm_eval/mc.jsonl, no hub) through a real
ovchat server, by `echo` + `logprobs` (the exact scoring engine), and its accuracy equals
the accuracy computed here, in process, from optimum-intel's logits for the same ids."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.settings import Settings
from tests.integration.conftest import Server

DATA = Path(__file__).parent / "data" / "lm_eval" / "mc.jsonl"
TASK = "ovchat_mc"


def task_yaml(folder: Path) -> Path:
    """The task, as lm-eval's YAML: the local JSON lines as its only split."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{TASK}.yaml"
    path.write_text(
        "\n".join(
            [
                f"task: {TASK}",
                "dataset_path: json",
                "dataset_kwargs:",
                "  data_files:",
                f"    test: {DATA}",
                "test_split: test",
                "output_type: multiple_choice",
                'doc_to_text: "Question: {{question}}\\nAnswer:"',
                'doc_to_choice: "{{choices}}"',
                'doc_to_target: "{{answer}}"',
                "metric_list:",
                "  - metric: acc",
                "  - metric: acc_norm",
            ]
        )
        + "\n"
    )
    return path


def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's split of a (context, continuation) pair for a causal model: trailing
    spaces of the context move to the continuation, the whole is encoded, and the
    continuation is what follows the context's own encoding (no special tokens)."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        continuation = context[-spaces:] + continuation
        context = context[:-spaces]
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    head = tokenizer(context, add_special_tokens=False)["input_ids"]
    return head, whole[len(head) :]


def in_process_accuracy(export: Path) -> tuple[float, float]:
    """acc and acc_norm from OVModelForCausalLM's logits, compiled with the server's own
    OpenVINO properties, as lm-eval defines them: the choice whose continuation has the
    highest summed log-probability (per character of the choice, for acc_norm)."""
    import torch
    from optimum.intel import OVModelForCausalLM
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(export)
    properties = Settings().engine_properties()
    properties.pop("CACHE_DIR", None)
    model = OVModelForCausalLM.from_pretrained(export, device="CPU", ov_config=properties)
    correct = correct_norm = 0
    docs = [json.loads(line) for line in DATA.read_text().splitlines()]
    for doc in docs:
        context = f"Question: {doc['question']}\nAnswer:"
        scores = []
        for choice in doc["choices"]:
            head, tail = encode_pair(tokenizer, context, f" {choice}")
            ids = head + tail
            with torch.no_grad():
                logits = model(
                    input_ids=torch.tensor([ids]),
                    attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                ).logits[0]
            rows = logits.double().numpy()
            rows = rows - np.logaddexp.reduce(rows, axis=1, keepdims=True)
            scores.append(sum(rows[len(head) + i - 1, t] for i, t in enumerate(tail)))
        lengths = np.array([float(len(c)) for c in doc["choices"]])
        correct += int(np.argmax(scores) == doc["answer"])
        correct_norm += int(np.argmax(np.array(scores) / lengths) == doc["answer"])
    return correct / len(docs), correct_norm / len(docs)


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No hub: datasets reads the local file only, and caches in the test's folder."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    return tmp_path


def test_lm_eval_local_completions_accuracy_equals_the_models_own(
    default_server: Server, default_model_dir: Path, offline: Path
) -> None:
    import lm_eval
    from lm_eval.tasks import TaskManager

    export = next(default_model_dir.rglob("openvino_model.xml")).parent
    task_yaml(offline / "tasks")
    results = lm_eval.simple_evaluate(
        model="local-completions",
        model_args={
            "model": default_server.model,
            "base_url": f"{default_server.url}/v1/completions",
            "tokenizer": str(export),
            "tokenizer_backend": "huggingface",
            "num_concurrent": 1,
            "max_retries": 1,
        },
        tasks=[TASK],
        task_manager=TaskManager(include_path=str(offline / "tasks")),
        batch_size=4,
    )
    assert results is not None
    measured = results["results"][TASK]
    acc, acc_norm = in_process_accuracy(export)
    # Greedy and deterministic on both sides: the same documents right, not a tolerance.
    assert measured["acc,none"] == pytest.approx(acc, abs=1e-9)
    assert measured["acc_norm,none"] == pytest.approx(acc_norm, abs=1e-9)
    assert 0.0 < acc < 1.0  # a task the model neither always passes nor always fails
    assert "Scoring engine loaded" in default_server.log_text()
