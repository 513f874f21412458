"""How a setting is declared (``setting(default, meaning, group, ...)``), its groups, and the
values several groups share."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from imaging.config.checks import Check, _number, _reader, _words


class SettingsError(ValueError):
    """A configuration value is missing or malformed; the message says which and why."""


#: The per-client upload limit on Cloud Run when RATE_LIMIT is not set at all.
PRODUCTION_RATE_LIMIT = "30/minute"

#: WebP cannot encode a side longer than this, so it caps MAX_SIDE.
WEBP_MAX_SIDE = 16383


@dataclass(frozen=True)
class Preset:
    """A named box an image is fitted into (the gallery thumbnail, the labeler's copy, ...)."""

    width: int
    height: int
    fit: str = "contain"


DEFAULT_PRESETS: Mapping[str, Preset] = {
    "thumb": Preset(480, 480, "contain"),
    "medium": Preset(1024, 1024, "contain"),
    "large": Preset(2048, 2048, "contain"),
    # Cloud Vision recommends about 640x480 for label detection; the local model needs 224.
    "label": Preset(640, 640, "contain"),
}

#: The groups settings are documented in, in the docs' order, each with what it is about.
GROUPS: Mapping[str, str] = {
    "limits": "What one upload may be, and how much work a process takes on at once.",
    "output": "What the renditions are when a request does not say.",
    "storage": "Where images and their records are kept.",
    "labels": "Who names what is in an image, and what is kept of it.",
    "security": "Who may upload, delete and approve, and how often.",
    "direct uploads": "Large files sent by the browser straight to the bucket.",
    "events": "Conversions started by storage events and Cloud Tasks.",
    "ops": "Serving, logs, traces and maintenance.",
}


# -- declarations --------------------------------------------------------------------------


@dataclass(frozen=True)
class Definition:
    """One setting as declared: its variable, default, meaning, group and allowed values."""

    default: Any
    doc: str
    group: str
    env: str = ""  # the variable; the field's name in upper case unless declared otherwise
    name: str = ""  # the field's name, filled in from the dataclass
    shown: str = ""  # the default as the docs show it, when the value alone would mislead
    allows: str = ""  # the allowed values as the docs say them, when check and type cannot
    check: Check | None = None
    parse: Callable[[str], Any] | None = None  # reads the variable's text; by type if None

    def read(self, raw: str) -> Any:
        return (self.parse or _reader(self.default)[0])(raw)

    def shown_default(self) -> str:
        if self.shown:
            return self.shown
        value = self.default
        if isinstance(value, bool):
            return f"`{int(value)}`"
        if isinstance(value, Path):
            return f"`{value}`" if value.is_absolute() else f"`./{value}`"
        if isinstance(value, float):
            return f"`{_number(value)}`"
        if isinstance(value, tuple):
            return f"`{','.join(value)}`" if value else ""
        return f"`{value}`" if value != "" else ""

    def allowed(self) -> str:
        if self.allows:
            return self.allows
        return self.check.allowed() if self.check else _reader(self.default)[1]


_DEFINITION = "definition"
_INTERNAL = "internal"
T = TypeVar("T")


def setting(
    default: T,
    doc: str,
    group: str,
    *,
    check: Check | None = None,
    env: str = "",
    shown: str = "",
    allows: str = "",
    parse: Callable[[str], Any] | None = None,
) -> T:
    """Declare a setting: its default, one line of meaning, its group and its allowed values."""
    definition = Definition(
        default, doc, group, env=env, shown=shown, allows=allows, check=check, parse=parse
    )
    declared: T = field(default=default, metadata={_DEFINITION: definition})
    return declared


def _choices(raw: str) -> tuple[str, ...]:
    """``'Faces, text'`` -> ``('faces', 'text')``; ``'none'`` -> ``()`` (an empty variable
    keeps the default, so "none at all" needs a word)."""
    words = _words(raw.lower())
    return () if words == ("none",) else words


def _keyword(raw: str) -> str:
    return raw.upper()


def _present(raw: str) -> bool:
    return True  # any value: Cloud Run sets K_SERVICE to the service's name


LIMITS, OUTPUT, STORAGE, LABELS = "limits", "output", "storage", "labels"
SECURITY, DIRECT, EVENTS, OPS = "security", "direct uploads", "events", "ops"
