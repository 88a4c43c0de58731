"""The Phi-3 cookbook sample's export step, run through optimum-cli so that what we build is
exactly what a user gets from the documented command line; other recipes (the embedding
model's feature extraction) pass their own flags through the same atomic path."""

from __future__ import annotations

import logging
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from app.modelstore import buildlog, store

logger = logging.getLogger(__name__)

# The sample's quantisation: int4 for ~60% of the linear layers, int8 for the rest.
SAMPLE_FLAGS = (
    "--task",
    "text-generation-with-past",
    "--weight-format",
    "int4",
    "--ratio",
    "0.6",
    "--sym",
)
SAMPLE_GROUP_SIZE = 128


def optimum_cli() -> str:
    """optimum-cli from the interpreter's own environment, not whatever PATH finds first."""
    beside = Path(sys.executable).with_name("optimum-cli")
    if beside.exists():
        return str(beside)
    found = shutil.which("optimum-cli")
    if not found:
        raise RuntimeError(
            "optimum-cli not found: install the export extras (pip install 'ovchat[export]')"
        )
    return found


def sample_flags(group_size: int = SAMPLE_GROUP_SIZE) -> tuple[str, ...]:
    return (*SAMPLE_FLAGS, "--group-size", str(group_size))


def export_command(
    source: str | Path, output: Path, flags: Sequence[str], trust_remote_code: bool
) -> list[str]:
    cmd = [optimum_cli(), "export", "openvino", "--model", str(source), *flags]
    if trust_remote_code:
        cmd.append("--trust-remote-code")
    cmd.append(str(output))
    return cmd


def export_model(
    source: str | Path,
    output: Path,
    *,
    group_size: int = SAMPLE_GROUP_SIZE,
    flags: Sequence[str] | None = None,
    trust_remote_code: bool = True,
    recipe: dict[str, object] | None = None,
    prepare: Callable[[Path], None] | None = None,
) -> Path:
    """Export `source` (hub id or local HF folder) into `output`, atomically.

    The export lands in a sibling `.partial` folder and is renamed into place only after
    the manifest is written, so an interrupted build never leaves a folder that looks
    servable. `flags` are optimum-cli's task and weight options; without them, the
    sample's int4 flags with `group_size`. `prepare` may adjust the exported folder before
    it is sealed."""
    output = output.resolve()
    partial = output.with_name(output.name + ".partial")
    store.discard(partial)
    partial.parent.mkdir(parents=True, exist_ok=True)
    flags = tuple(flags) if flags is not None else sample_flags(group_size)
    cmd = export_command(source, partial, flags, trust_remote_code)
    logger.info("Exporting %s -> %s", source, output)
    logger.info("Running: %s", " ".join(cmd))
    # optimum-cli writes pages of TracerWarnings per export: they go to this log, shown
    # (its tail) only when the export fails.
    log = output.with_name(output.name + ".export.log")
    started = time.monotonic()
    returncode = buildlog.run_logged(cmd, log, "optimum-cli export")
    if returncode != 0:
        store.discard(partial)
        raise RuntimeError(f"optimum-cli export failed with exit code {returncode}: see {log}")
    if prepare is not None:
        prepare(partial)
    # Checked after `prepare`: what it adds (sentence-transformers' config) decides which
    # kind of model the folder is, and so which files it needs.
    missing = store.missing_files(partial)
    if missing:
        store.discard(partial)
        raise RuntimeError(f"export finished but produced no {', '.join(missing)}")
    store.write_manifest(
        partial,
        {"source": str(source), "flags": list(flags)} | (recipe or {}),
    )
    store.discard(output)
    partial.rename(output)
    logger.info("Exported %s in %.1f s", output, time.monotonic() - started)
    return output
