"""Settings: every knob of the app, declared once with its meaning, typed and validated at start-up.

Each field is one environment variable, declared with ``setting(default, meaning, group, ...)``
(``declare``) in its group's module (``limits``, ``labels``, ``storage``, ``access``; the ``ops``
group in ``settings``): its allowed values are a ``Check`` beside it (``checks``), the rules
between settings are ``RULES`` (``rules``), and docs/configuration.md is generated from these
declarations (``docs``; ``python -m imaging.config``). ``Settings.from_env`` is the only place
that reads the environment; everything else receives a ``Settings`` value, so tests build exactly
the configuration they need.

Everything public is re-exported here: ``from imaging.config import Settings``.
"""

from __future__ import annotations

from imaging.config.checks import AtLeast, Between, Check, KnownFormats, OneOf, Shaped, SomeOf
from imaging.config.declare import (
    DEFAULT_PRESETS,
    GROUPS,
    PRODUCTION_RATE_LIMIT,
    WEBP_MAX_SIDE,
    Definition,
    Preset,
    SettingsError,
    setting,
)
from imaging.config.docs import DOCS_COMMAND, configuration_markdown
from imaging.config.rules import RULES, Rule
from imaging.config.settings import DEFINITIONS, Settings

__all__ = [
    "DEFAULT_PRESETS",
    "DEFINITIONS",
    "DOCS_COMMAND",
    "GROUPS",
    "PRODUCTION_RATE_LIMIT",
    "RULES",
    "WEBP_MAX_SIDE",
    "AtLeast",
    "Between",
    "Check",
    "Definition",
    "KnownFormats",
    "OneOf",
    "Preset",
    "Rule",
    "Settings",
    "SettingsError",
    "Shaped",
    "SomeOf",
    "configuration_markdown",
    "setting",
]
