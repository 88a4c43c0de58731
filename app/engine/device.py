"""Choosing the OpenVINO device the way the cookbook sample does (GPU.0), without failing
on the many machines that have no Intel GPU."""

from __future__ import annotations

import logging

from app.engine.base import EngineStartError

logger = logging.getLogger(__name__)

AUTO = "auto"
PREFERRED = "GPU.0"
FALLBACK = "CPU"


def available_devices() -> list[str]:
    import openvino as ov

    return list(ov.Core().available_devices)


def _present(device: str, available: list[str]) -> bool:
    # "GPU" names the first GPU, which OpenVINO lists as "GPU" or "GPU.0".
    if device in available:
        return True
    if device == "GPU":
        return any(d.startswith("GPU") for d in available)
    if device == "GPU.0":
        return "GPU" in available
    # Composite devices (AUTO:..., HETERO:..., MULTI:...) are OpenVINO's to resolve.
    return ":" in device or device in {"AUTO", "HETERO", "MULTI", "BATCH"}


def resolve_device(setting: str, available: list[str] | None = None) -> str:
    available = available_devices() if available is None else available
    if setting.lower() == AUTO:
        if _present(PREFERRED, available):
            logger.info("Device: %s (preferred by default)", PREFERRED)
            return PREFERRED
        logger.warning(
            "Device: %s is not available (OpenVINO lists %s); falling back to %s",
            PREFERRED,
            ", ".join(available) or "nothing",
            FALLBACK,
        )
        return FALLBACK
    if not _present(setting, available):
        raise EngineStartError(
            f"device {setting!r} was requested but OpenVINO lists only "
            f"{', '.join(available) or 'no devices'}; use --device CPU or --device auto"
        )
    logger.info("Device: %s (requested)", setting)
    return setting
