"""docs/CONFIGURATION.md, generated from the Settings class so it cannot drift from it
(a test compares the file with this output). `make docs` rewrites it."""

from __future__ import annotations

import sys

from app.cli import flag
from app.settings import REPO_ROOT, Settings

OUTPUT = REPO_ROOT / "docs" / "CONFIGURATION.md"

HEADER = """# Configuration

Every setting of `ovchat serve` is, in increasing priority: its default, a line in a `.env`
file in the working directory, an environment variable `OVCHAT_<NAME>`, and a command-line
flag. Lists (API keys, CORS origins) are comma-separated in the environment and repeated
flags on the command line.

This file is generated from `app/settings.py` by `make docs`; do not edit it by hand.

| flag | environment | default | meaning |
|---|---|---|---|
"""


def _default(name: str) -> str:
    value = Settings.default_of(name)
    if name == "model_store":
        return "`model_store/` in the repository"
    if name == "state_dir":
        return "`$XDG_STATE_HOME/ovchat` (`~/.local/state/ovchat`)"
    if value is None:
        return "(none)"
    if isinstance(value, list) and not value:
        return "(empty)"
    return f"`{value!r}`" if isinstance(value, str) else f"`{value}`"


def render() -> str:
    rows = []
    for name, field in Settings.model_fields.items():
        description = (field.description or "").replace("|", "\\|")
        rows.append(
            f"| `{flag(name)}` | `OVCHAT_{name.upper()}` | {_default(name)} | {description} |"
        )
    return HEADER + "\n".join(rows) + "\n"


def main() -> int:
    OUTPUT.parent.mkdir(exist_ok=True)
    OUTPUT.write_text(render())
    sys.stdout.write(f"wrote {OUTPUT}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
