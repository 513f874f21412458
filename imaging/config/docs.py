"""docs/configuration.md, generated from the declarations (``python -m imaging.config``)."""

from __future__ import annotations

from imaging.config.declare import GROUPS
from imaging.config.rules import RULES
from imaging.config.settings import DEFINITIONS

DOCS_COMMAND = "python -m imaging.config > docs/configuration.md"


def configuration_markdown() -> str:
    """docs/configuration.md: every setting by group, from the declarations above."""
    lines = [
        "# Configuration",
        "",
        "Generated from the declarations in `imaging/config/`; after changing a setting there,",
        f"run `{DOCS_COMMAND}` (`tests/test_config.py` fails while this file is stale).",
        "",
        "Every setting is an environment variable; outside tests a `.env` file fills in those",
        "not set. Settings are checked once at start-up: with any value out of bounds the app",
        "does not start, and its error names every problem at once.",
    ]
    rules: dict[str, list[str]] = {}
    for rule in RULES:
        rules.setdefault(rule.setting, []).append(rule.says)
    for group, about in GROUPS.items():
        lines += [
            "",
            f"## {group.capitalize()}",
            "",
            about,
            "",
            "| variable | default | meaning | allowed values |",
            "|---|---|---|---|",
        ]
        for d in DEFINITIONS:
            if d.group == group:
                allowed = "; ".join(filter(None, [d.allowed(), *rules.get(d.name, [])]))
                lines.append(f"| `{d.env}` | {d.shown_default()} | {d.doc} | {allowed} |")
    return "\n".join(lines) + "\n"
