from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from app.modelstore import store


def fake_export(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name in store.REQUIRED_FILES:
        (folder / name).write_text(name)
    return folder


def test_manifest_detects_truncated_files(tmp_path: Path) -> None:
    folder = fake_export(tmp_path / "m" / "int4")
    store.write_manifest(folder, {"model": "m"})
    assert store.is_complete(folder)
    (folder / "openvino_model.bin").write_text("cut")
    assert not store.is_complete(folder)


def test_missing_file_is_incomplete(tmp_path: Path) -> None:
    folder = fake_export(tmp_path / "m" / "int4")
    (folder / "openvino_tokenizer.xml").unlink()
    assert store.missing_files(folder) == ["openvino_tokenizer.xml"]
    assert not store.is_complete(folder)


def test_default_when_no_phi3(tmp_path: Path) -> None:
    store.write_manifest(fake_export(store.model_dir(tmp_path, store.DEFAULT_MODEL)), {})
    resolved = store.resolve(None, tmp_path)
    assert resolved.name == store.DEFAULT_MODEL
    assert "embedded default" in resolved.reason


def test_phi3_preferred_when_exported(tmp_path: Path) -> None:
    store.write_manifest(fake_export(store.model_dir(tmp_path, store.DEFAULT_MODEL)), {})
    store.write_manifest(fake_export(store.model_dir(tmp_path, "phi3-instruct")), {})
    assert store.resolve(None, tmp_path).name == "phi3-instruct"


def test_half_built_phi3_is_not_preferred(tmp_path: Path) -> None:
    store.write_manifest(fake_export(store.model_dir(tmp_path, store.DEFAULT_MODEL)), {})
    fake_export(store.model_dir(tmp_path, "phi3-instruct"))
    (store.model_dir(tmp_path, "phi3-instruct") / "openvino_model.bin").unlink()
    assert store.resolve(None, tmp_path).name == store.DEFAULT_MODEL


def test_by_name_and_by_path(tmp_path: Path, tiny_model_dir: Path) -> None:
    shutil.copytree(tiny_model_dir, store.model_dir(tmp_path, "mine"))
    assert store.resolve("mine", tmp_path).path == store.model_dir(tmp_path, "mine")
    by_path = store.resolve(str(tmp_path / "mine"), tmp_path)
    assert (by_path.name, by_path.path) == ("mine", store.model_dir(tmp_path, "mine"))


def test_unknown_or_broken_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(store.ModelNotFoundError, match="nope"):
        store.resolve("nope", tmp_path)
    fake_export(store.model_dir(tmp_path, "broken"))
    (store.model_dir(tmp_path, "broken") / "config.json").unlink()
    with pytest.raises(store.ModelNotFoundError, match="incomplete"):
        store.resolve("broken", tmp_path)


def test_embedding_export_is_its_own_kind(tmp_path: Path) -> None:
    folder = tmp_path / "emb" / "int4"
    folder.mkdir(parents=True)
    for name in store.EMBEDDING_FILES:
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_text(name)
    assert store.kind_of(folder) == "embedding" and store.is_complete(folder)
    store.write_manifest(folder, {})
    (folder / "1_Pooling" / "config.json").write_text("{}")  # a different size
    assert not store.is_complete(folder)
    (folder / "1_Pooling" / "config.json").unlink()
    assert store.missing_files(folder) == ["1_Pooling/config.json"]
    (folder / "1_Pooling" / "config.json").write_text("1_Pooling/config.json")
    (folder / "tokenizer_config.json").unlink()
    assert store.missing_files(folder) == ["tokenizer_config.json"]
    assert store.kind_of(fake_export(tmp_path / "gen" / "int4")) == "generation"


def test_discover_lists_complete_models_and_skips_broken(tmp_path: Path) -> None:
    store.write_manifest(fake_export(store.model_dir(tmp_path, "b-model")), {})
    fake_export(store.model_dir(tmp_path, "a-model"))  # no manifest: someone else's export
    fake_export(store.model_dir(tmp_path, "broken"))
    (store.model_dir(tmp_path, "broken") / "config.json").unlink()
    (tmp_path / "not-a-model").mkdir()
    found = store.discover(tmp_path)
    assert [(m.name, m.path) for m in found] == [
        ("a-model", store.model_dir(tmp_path, "a-model")),
        ("b-model", store.model_dir(tmp_path, "b-model")),
    ]
    assert store.discover(tmp_path / "absent") == []


def fake_embedding_export(folder: Path) -> Path:
    for name in store.EMBEDDING_FILES:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(name)
    return folder


def test_the_defaults_are_the_chat_model_and_the_built_embedding_model(tmp_path: Path) -> None:
    store.write_manifest(fake_export(store.model_dir(tmp_path, store.DEFAULT_MODEL)), {})
    assert [m.name for m in store.resolve_all([], tmp_path)] == [store.DEFAULT_MODEL]
    fake_embedding_export(store.model_dir(tmp_path, store.DEFAULT_EMBEDDING_MODEL))
    served = store.resolve_all([], tmp_path)
    assert [(m.name, m.kind) for m in served] == [
        (store.DEFAULT_MODEL, "generation"),
        (store.DEFAULT_EMBEDDING_MODEL, "embedding"),
    ]


def test_named_models_then_the_rest_of_the_store_once_each(tmp_path: Path) -> None:
    for name in ("x", "y", "z"):
        store.write_manifest(fake_export(store.model_dir(tmp_path, name)), {})
    named = store.resolve_all(["z", str(tmp_path / "x")], tmp_path)
    assert [m.name for m in named] == ["z", "x"]
    every = store.resolve_all(["z"], tmp_path, every=True)
    assert [m.name for m in every] == ["z", "x", "y"]
    elsewhere = tmp_path / "other" / "x"
    shutil.copytree(store.model_dir(tmp_path, "x"), elsewhere)
    with pytest.raises(store.ModelNotFoundError, match="two models would be served as x"):
        store.resolve_all(["x", str(elsewhere)], tmp_path)
