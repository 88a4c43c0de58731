"""Export profiles: the flags each one hands optimum-cli, how the CLI chooses one, and how
the store tells a build made with another profile. No export runs here."""

from __future__ import annotations

from pathlib import Path

import pytest

from app import cli
from app.modelstore import export, store
from tests.unit.test_store import fake_export

# The Phi-3 cookbook sample's export line, as it documents it.
SAMPLE_LINE = (
    "--task text-generation-with-past --weight-format int4 --ratio 0.6 --sym --group-size 128"
)


def test_the_sample_profile_is_the_samples_exact_flags() -> None:
    assert " ".join(export.profile("sample").flags()) == SAMPLE_LINE
    assert export.profile("sample").flags() == export.sample_flags()
    assert export.profile("sample").flags(64) == export.sample_flags(64)
    assert not export.profile("sample").data_aware


@pytest.mark.parametrize(
    ("name", "line"),
    [
        (
            "int4-all",
            "--task text-generation-with-past --weight-format int4 --ratio 1 --sym "
            "--group-size 128",
        ),
        (
            "int4-all-asym",
            "--task text-generation-with-past --weight-format int4 --ratio 1 --group-size 128",
        ),
        (
            "int4-all-g64",
            "--task text-generation-with-past --weight-format int4 --ratio 1 --sym --group-size 64",
        ),
        (
            "int4-all-layers",
            "--task text-generation-with-past --weight-format int4 --ratio 1 --sym "
            "--all-layers --group-size 128",
        ),
        (
            "int4-all-se",
            "--task text-generation-with-past --weight-format int4 --ratio 1 --sym --awq "
            "--scale-estimation --group-size 128",
        ),
    ],
)
def test_each_profile_has_its_flags(name: str, line: str) -> None:
    assert " ".join(export.profile(name).flags()) == line


def test_only_awq_and_scale_estimation_need_calibration() -> None:
    aware = {name for name, p in export.PROFILES.items() if p.data_aware}
    assert aware == {"int4-all-se"}


def test_calibration_is_local_text_the_bench_does_not_score() -> None:
    from app.modelstore.calibration import calibration_texts
    from bench.export_texts import TEXTS

    samples = calibration_texts()
    assert 0 < len(samples) <= export.CALIBRATION_SAMPLES
    assert all(isinstance(s, str) and len(s) > 100 for s in samples)
    assert not any(s in text or text in s for s in samples for text in TEXTS.values())


def test_an_unknown_profile_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="int4-all"):
        export.profile("int3")


def test_build_takes_a_profile_for_the_qwen_model() -> None:
    args = cli.parser().parse_args(
        ["model", "build", "qwen2.5-coder-1.5b-instruct", "--profile", "int4-all"]
    )
    assert args.profile == "int4-all"
    assert cli.parser().parse_args(["model", "build", "default"]).profile is None


def test_build_refuses_an_unknown_profile(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["model", "build", "qwen2.5-coder-1.5b-instruct", "--profile", "x"])
    assert "invalid choice" in capsys.readouterr().err


def test_a_profile_for_a_model_whose_flags_are_fixed_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Refused before anything is built: the store stays empty.
    argv = ["model", "build", "tiny-phi3", "--profile", "int4-all", "--model-store", str(tmp_path)]
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    assert "--profile applies to qwen2.5-coder-1.5b-instruct" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_export_defaults_to_the_sample_profile_and_its_group_size() -> None:
    args = cli.parser().parse_args(["export", "microsoft/Phi-3-mini-4k-instruct"])
    assert args.profile == "sample"
    assert args.group_size is None
    chosen = export.profile(args.profile)
    assert " ".join(chosen.flags(args.group_size)) == SAMPLE_LINE


def test_export_group_size_overrides_the_profiles() -> None:
    args = cli.parser().parse_args(
        ["export", "some/model", "--profile", "int4-all", "--group-size", "32"]
    )
    assert export.profile(args.profile).flags(args.group_size)[-2:] == ("--group-size", "32")


def test_a_build_with_another_profile_is_rebuilt(tmp_path: Path) -> None:
    folder = fake_export(tmp_path / "m" / "int4")
    store.write_manifest(folder, {"model": "m", "profile": "int4-all"})
    assert store.built_profile(folder) == "int4-all"
    assert not store.needs_build(folder, "m", force=False, profile="int4-all")
    assert store.needs_build(folder, "m", force=False, profile="sample")
    # Without a profile to match (the recipes whose flags are fixed), complete is enough.
    assert not store.needs_build(folder, "m", force=False)


def test_builds_from_before_profiles_were_the_samples(tmp_path: Path) -> None:
    folder = fake_export(tmp_path / "m" / "int4")
    store.write_manifest(folder, {"model": "m", "flags": list(export.sample_flags())})
    assert store.built_profile(folder) == "sample"
    assert not store.needs_build(folder, "m", force=False, profile="sample")
