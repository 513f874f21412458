"""``python -m imaging.config > docs/configuration.md``: print the configuration reference."""

from __future__ import annotations

from imaging.config.docs import configuration_markdown

print(configuration_markdown(), end="")
