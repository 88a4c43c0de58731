"""`ovchat serve | export | model build`. Serve flags are generated from the Settings class,
so every setting has exactly one flag and flags can only override it."""

from __future__ import annotations

import argparse
import logging
import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BeforeValidator

from app import logs
from app.modelstore.export import PROFILES, SAMPLE_PROFILE
from app.settings import Settings

logger = logging.getLogger("app.cli")

MODELS = (
    "default",
    "all-minilm-l6-v2",
    "qwen2.5-coder-1.5b-instruct",
    "tiny-phi3",
    "tiny-phi3-window",
    "tiny-qwen2",
    "phi3-shaped",
)


# The recipes whose export a profile may choose; the others' flags are part of what they
# are (the test models' exact outputs, the embedding model's fp32).
PROFILE_MODELS = ("qwen2.5-coder-1.5b-instruct",)


def _profiles_help() -> str:
    # argparse %-formats help strings, and the summaries quote percentages.
    return "; ".join(f"{p.name}: {p.summary}" for p in PROFILES.values()).replace("%", "%%")


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _flag_kwargs(annotation: Any) -> dict[str, Any]:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _flag_kwargs(args[0])
    if origin is list:
        return {"action": "append"}  # repeat the flag for more values
    if annotation is bool:
        return {"action": argparse.BooleanOptionalAction}
    if origin is typing.Literal:
        return {"choices": list(typing.get_args(annotation))}
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _flag_kwargs(args[0])
    if annotation in (int, float):
        return {"type": annotation}
    if annotation is Path:
        return {"type": Path}
    return {"type": str}


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    for name, field in Settings.model_fields.items():
        env = f"OVCHAT_{name.upper()}"
        kwargs = _flag_kwargs(field.annotation)
        # A number pydantic parses from text (a duration, "5m"): the flag passes text on.
        if kwargs.get("type") in (int, float) and any(
            isinstance(meta, BeforeValidator) for meta in field.metadata
        ):
            kwargs = {"type": str}
        parser.add_argument(
            flag(name),
            dest=name,
            default=argparse.SUPPRESS,
            help=f"{field.description} [env {env}; default {Settings.default_of(name)!r}]",
            **kwargs,
        )


def settings_from(args: argparse.Namespace) -> Settings:
    overrides = {k: v for k, v in vars(args).items() if k in Settings.model_fields}
    return Settings(**overrides)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="ovchat", description="OpenAI-compatible server for OpenVINO causal LMs."
    )
    sub = root.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="Serve a model over the OpenAI API.")
    add_settings_flags(serve)

    export = sub.add_parser(
        "export",
        help="Export a hub model or local HF folder to int4 OpenVINO (the sample's flags).",
    )
    export.add_argument("source", help="Hub id (e.g. microsoft/Phi-3-mini-4k-instruct) or folder")
    export.add_argument(
        "--output",
        type=Path,
        default=None,
        help="Output folder (default: model_store/<name>/int4; Phi-3-mini -> phi3-instruct)",
    )
    export.add_argument(
        "--group-size", type=int, default=None, help="int4 group size (default: the profile's)"
    )
    export.add_argument(
        "--profile",
        choices=list(PROFILES),
        default=SAMPLE_PROFILE,
        help=f"Export profile (default {SAMPLE_PROFILE}, the sample's flags): {_profiles_help()}",
    )

    model = sub.add_parser("model", help="Build the models ovchat ships recipes for.")
    model_sub = model.add_subparsers(dest="model_command", required=True)
    build = model_sub.add_parser("build", help="Build a model into the model store.")
    build.add_argument(
        "name",
        choices=MODELS,
        help="default: SmolLM2-135M-Instruct; "
        "tiny-phi3: the test model; tiny-phi3-window: a test model with a 64-token "
        "attention window; tiny-qwen2: a Qwen2-shaped test model with Qwen2.5-Coder's "
        "chat template (tools); phi3-shaped: Phi-3-mini sizes, random weights; "
        "all-minilm-l6-v2: the embedding model (sentence-transformers all-MiniLM-L6-v2); "
        "qwen2.5-coder-1.5b-instruct: the real 1.5B chat model (1.1 GB download)",
    )
    build.add_argument("--force", action="store_true", help="Rebuild even if complete")
    build.add_argument(
        "--profile",
        choices=list(PROFILES),
        default=None,
        help=f"Export profile, for {', '.join(PROFILE_MODELS)} (default {SAMPLE_PROFILE}); "
        "a model built with another is rebuilt. docs/BENCHMARKS.md measures each.",
    )
    build.add_argument("--model-store", type=Path, default=None, help="Model store folder")
    model_sub.add_parser("list", help="List the models in the model store.")
    return root


def _default_export_dir(source: str, store: Path) -> Path:
    from app.modelstore.store import PREFERRED_MODEL, model_dir

    if source.rstrip("/").lower().endswith("phi-3-mini-4k-instruct"):
        return model_dir(store, PREFERRED_MODEL)
    return model_dir(store, Path(source.rstrip("/")).name.lower())


def main(argv: list[str] | None = None) -> int:
    root = parser()
    args = root.parse_args(argv)
    building = args.command == "model" and args.model_command == "build"
    if building and args.profile is not None and args.name not in PROFILE_MODELS:
        root.error(f"--profile applies to {', '.join(PROFILE_MODELS)}, not {args.name}")
    if args.command == "serve":
        settings = settings_from(args)
        logs.configure(settings.log_level, settings.log_format)
        from app.engine.base import EngineStartError
        from app.modelstore.store import ModelNotFoundError
        from app.server import serve

        try:
            serve(settings)
        except (ModelNotFoundError, EngineStartError) as exc:
            logger.error("Cannot start: %s", exc)
            return 2
        return 0

    logs.configure("info")
    store_dir = Settings().model_store
    if args.command == "export":
        from app.modelstore.export import export_with_profile, profile

        out = args.output or _default_export_dir(args.source, store_dir)
        export_with_profile(args.source, out, profile(args.profile), group_size=args.group_size)
        return 0
    if args.model_command == "list":
        from app.modelstore import store

        # Dot folders are caches (the wheels a build downloads), not models.
        entries = (p for p in store_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
        for entry in sorted(entries):
            folder = store.model_dir(store_dir, entry.name)
            state = "ready" if store.is_complete(folder) else "incomplete"
            print(f"{entry.name}\t{store.kind_of(folder)}\t{state}\t{folder}")
        return 0
    return build_model(
        args.name,
        args.model_store or store_dir,
        force=args.force,
        profile_name=args.profile or SAMPLE_PROFILE,
    )


def build_model(
    name: str, store_dir: Path, force: bool = False, profile_name: str = SAMPLE_PROFILE
) -> int:
    if name == "default":
        from app.modelstore import smollm2

        smollm2.build(store_dir, force=force)
    elif name == "all-minilm-l6-v2":
        from app.modelstore import minilm

        minilm.build(store_dir, force=force)
    elif name == "qwen2.5-coder-1.5b-instruct":
        from app.modelstore import qwen_coder

        qwen_coder.build(store_dir, force=force, profile_name=profile_name)
    elif name == "tiny-qwen2":
        from app.modelstore import tiny_qwen2

        tiny_qwen2.build(store_dir, force=force)
    else:
        from app.modelstore import tiny_phi3

        shapes = {s.name: s for s in (tiny_phi3.TINY, tiny_phi3.TINY_WINDOW, tiny_phi3.PHI3_MINI)}
        tiny_phi3.build(store_dir, shapes[name], force=force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
