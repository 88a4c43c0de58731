"""The Phi-3 cookbook sample's export step, run through optimum-cli so that what we build is
exactly what a user gets from the documented command line; other recipes (the embedding
model's feature extraction) pass their own flags through the same atomic path."""

from __future__ import annotations

import logging
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
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
SAMPLE_PROFILE = "sample"
# Calibration samples the data-aware profiles feed NNCF: each a paragraph of the local text
# in app/modelstore/calibration.py, never a hub dataset.
CALIBRATION_SAMPLES = 32
# What a data-aware profile exports before NNCF quantises it in Python.
FULL_PRECISION_FLAGS = ("--task", "text-generation-with-past", "--weight-format", "fp16")


@dataclass(frozen=True)
class ExportProfile:
    """One way to quantise a causal LM's weights. Single-stream decoding on CPU is bound by
    the bytes read per token, so fewer bytes (more int4, bigger groups) is faster and less
    accurate; AWQ and scale estimation win some accuracy back from a calibration text.
    docs/BENCHMARKS.md measures each on Qwen2.5-Coder-1.5B (bench/export_profiles.py)."""

    name: str
    summary: str
    ratio: float
    group_size: int = SAMPLE_GROUP_SIZE
    sym: bool = True
    all_layers: bool = False
    awq: bool = False
    scale_estimation: bool = False

    @property
    def data_aware(self) -> bool:
        return self.awq or self.scale_estimation

    def flags(self, group_size: int | None = None) -> tuple[str, ...]:
        """optimum-cli's task and weight options. A data-aware profile's calibration is not
        among them: optimum-cli takes only hub datasets (or `auto`, text the model writes
        itself, hours on 2 cores), so its export is quantised apart (`quantize_data_aware`)."""
        if self.name == SAMPLE_PROFILE:
            return sample_flags(group_size or self.group_size)
        flags = ["--task", "text-generation-with-past", "--weight-format", "int4"]
        flags += ["--ratio", f"{self.ratio:g}"]
        flags += ["--sym"] if self.sym else []
        flags += ["--all-layers"] if self.all_layers else []
        flags += ["--awq"] if self.awq else []
        flags += ["--scale-estimation"] if self.scale_estimation else []
        return (*flags, "--group-size", str(group_size or self.group_size))


PROFILES = {
    profile.name: profile
    for profile in (
        ExportProfile(
            SAMPLE_PROFILE,
            "the Phi-3 sample's flags: int4 symmetric, group 128, 60% of the linear layers "
            "(the rest int8)",
            ratio=0.6,
        ),
        ExportProfile(
            "int4-all",
            "every linear layer int4 symmetric, group 128 (embeddings and the output layer "
            "stay int8)",
            ratio=1.0,
        ),
        ExportProfile(
            "int4-all-asym",
            "every linear layer int4 asymmetric (a zero point per group), group 128",
            ratio=1.0,
            sym=False,
        ),
        ExportProfile(
            "int4-all-g64",
            "every linear layer int4 symmetric, group 64 (finer scales, more bytes)",
            ratio=1.0,
            group_size=64,
        ),
        ExportProfile(
            "int4-all-layers",
            "int4 symmetric, group 128, the embeddings and output layer too",
            ratio=1.0,
            all_layers=True,
        ),
        ExportProfile(
            "int4-all-se",
            "int4-all with AWQ and scale estimation calibrated on a local text",
            ratio=1.0,
            awq=True,
            scale_estimation=True,
        ),
    )
}


def profile(name: str) -> ExportProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown export profile {name!r}: one of {', '.join(PROFILES)}") from None


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


def quantize_data_aware(folder: Path, chosen: ExportProfile) -> None:
    """Compresses the full-precision IR in `folder` in place with `chosen`'s options,
    calibrated on the local text: NNCF runs the model over it to find which weights'
    errors matter (AWQ scales channels, scale estimation refits each group's scale)."""
    from optimum.intel import OVModelForCausalLM, OVWeightQuantizationConfig

    from app.modelstore.calibration import calibration_texts

    config = OVWeightQuantizationConfig(
        bits=4,
        sym=chosen.sym,
        group_size=chosen.group_size,
        ratio=chosen.ratio,
        all_layers=chosen.all_layers or None,
        quant_method="awq" if chosen.awq else "default",
        scale_estimation=chosen.scale_estimation or None,
        dataset=calibration_texts(),
        tokenizer=str(folder),
        num_samples=CALIBRATION_SAMPLES,
    )
    logger.info("Quantising %s with profile %s (calibrated, data-aware)", folder, chosen.name)
    model = OVModelForCausalLM.from_pretrained(folder, quantization_config=config, compile=False)
    staged = folder / "quantized"
    model.save_pretrained(staged)
    del model
    for name in ("openvino_model.xml", "openvino_model.bin"):
        (staged / name).replace(folder / name)
    shutil.rmtree(staged)


def export_with_profile(
    source: str | Path,
    output: Path,
    chosen: ExportProfile,
    *,
    group_size: int | None = None,
    trust_remote_code: bool = True,
    recipe: dict[str, object] | None = None,
) -> Path:
    """`export_model` with a profile's flags; a data-aware profile exports full precision
    with optimum-cli (tokenizers and all) and is quantised before the folder is sealed."""
    if group_size is not None:
        chosen = replace(chosen, group_size=group_size)
    recipe = (recipe or {}) | {"profile": chosen.name}
    if not chosen.data_aware:
        return export_model(
            source,
            output,
            flags=chosen.flags(),
            trust_remote_code=trust_remote_code,
            recipe=recipe,
        )
    return export_model(
        source,
        output,
        flags=FULL_PRECISION_FLAGS,
        trust_remote_code=trust_remote_code,
        recipe=recipe | {"quantized_with": list(chosen.flags())},
        prepare=lambda folder: quantize_data_aware(folder, chosen),
    )
