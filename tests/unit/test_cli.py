from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.cli import add_settings_flags, parser, settings_from
from app.settings import Settings


def test_every_setting_has_a_serve_flag() -> None:
    serve = argparse.ArgumentParser()
    add_settings_flags(serve)
    flags = {opt for action in serve._actions for opt in action.option_strings}
    for name in Settings.model_fields:
        assert "--" + name.replace("_", "-") in flags


def test_flags_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OVCHAT_PORT", "9001")
    monkeypatch.setenv("OVCHAT_ENGINE", "optimum")
    settings = settings_from(parser().parse_args(["serve", "--port", "9002"]))
    assert settings.port == 9002
    assert settings.engine == "optimum"


def test_flag_types() -> None:
    args = parser().parse_args(
        ["serve", "--no-enable-prefix-caching", "--kv-cache-gb", "3", "--model-store", "/x"]
    )
    settings = settings_from(args)
    assert settings.enable_prefix_caching is False
    assert settings.kv_cache_gb == 3
    assert settings.model_store == Path("/x")


def test_sample_ov_config_is_the_default() -> None:
    assert Settings().engine_properties() == {
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": "1",
        "CACHE_DIR": "",
    }


def test_export_defaults_phi3_to_phi3_instruct(tmp_path: Path) -> None:
    from app.cli import _default_export_dir

    out = _default_export_dir("microsoft/Phi-3-mini-4k-instruct", tmp_path)
    assert out == tmp_path / "phi3-instruct" / "int4"


def test_configuration_doc_is_generated_from_settings() -> None:
    from app.configdoc import OUTPUT, render

    assert OUTPUT.read_text() == render(), "docs/CONFIGURATION.md is stale: run `make docs`"
    for name in Settings.model_fields:
        assert f"`OVCHAT_{name.upper()}`" in OUTPUT.read_text()


def test_fractional_kv_cache_size_is_refused_not_rounded(monkeypatch: pytest.MonkeyPatch) -> None:
    # openvino-genai takes whole GiB; 1.5 silently becoming 1 or 2 would misstate memory.
    monkeypatch.setenv("OVCHAT_KV_CACHE_GB", "1.5")
    with pytest.raises(ValidationError, match="kv_cache_gb"):
        Settings()
