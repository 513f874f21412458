"""The values a setting may take (``Check``s, as data) and how a variable's text is read."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from limits import parse_many

from imaging.formats import OUTPUT_FORMATS

# -- allowed values, as data ---------------------------------------------------------------


class Check(Protocol):
    """The values one setting may take: what is wrong with a value, and how the docs say it."""

    def problems(self, env: str, value: Any) -> list[str]: ...

    def allowed(self) -> str: ...


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _either(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


@dataclass(frozen=True)
class OneOf:
    """One of ``values``; ``bare`` writes keywords (DEBUG, LIKELY) without quotes."""

    values: tuple[str, ...]
    bare: bool = False
    optional: bool = False  # empty is allowed too: the feature is off

    def problems(self, env: str, value: Any) -> list[str]:
        if value in self.values or (self.optional and not value):
            return []
        shown = list(self.values) if self.bare else [repr(v) for v in self.values]
        return [f"{env} must be {_either(shown)}"]

    def allowed(self) -> str:
        words = [f"`{v}`" for v in self.values] + (["empty (off)"] if self.optional else [])
        return _either(words)


@dataclass(frozen=True)
class Between:
    """A number from ``low`` to ``high``, both included; ``unit`` ends the message."""

    low: float
    high: float
    unit: str = ""

    def problems(self, env: str, value: Any) -> list[str]:
        if self.low <= value <= self.high:
            return []
        unit = f" {self.unit}" if self.unit else ""
        return [f"{env} must be between {_number(self.low)} and {_number(self.high)}{unit}"]

    def allowed(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        return f"{_number(self.low)} to {_number(self.high)}{unit}"


@dataclass(frozen=True)
class AtLeast:
    """A number no smaller than ``low``; ``words`` says it when "at least N" reads badly."""

    low: float
    words: str = ""

    def problems(self, env: str, value: Any) -> list[str]:
        if value >= self.low:
            return []
        if self.words:
            return [f"{env} must be {self.words}"]
        if self.low == 0:
            return [f"{env} must not be negative"]
        return [f"{env} must be at least {_number(self.low)}"]

    def allowed(self) -> str:
        return f"{_number(self.low)} or more"


@dataclass(frozen=True)
class Shaped:
    """Empty (off), or text that passes ``test``: it ``must be`` this, as the docs ``show``."""

    test: Callable[[str], bool]
    must_be: str
    show: str

    def problems(self, env: str, value: Any) -> list[str]:
        return [f"{env} must be {self.must_be}"] if value and not self.test(value) else []

    def allowed(self) -> str:
        return self.show


@dataclass(frozen=True)
class SomeOf:
    """A comma-separated choice among ``values``; ``optional``: none at all is allowed too."""

    values: tuple[str, ...]
    optional: bool = False

    def problems(self, env: str, value: Any) -> list[str]:
        unknown = [word for word in value if word not in self.values]
        if unknown:
            return [f"{env} has unknown values: {', '.join(unknown)}"]
        if not value and not self.optional:
            return [f"{env} must name at least one of {', '.join(self.values)}"]
        return []

    def allowed(self) -> str:
        words = ", ".join(f"`{v}`" for v in self.values)
        return f"comma-separated, from {words}" + (", or `none`" if self.optional else "")


@dataclass(frozen=True)
class KnownFormats:
    """At least one format, each one the registry can write."""

    def problems(self, env: str, value: Any) -> list[str]:
        if not value:
            return [f"{env} must name at least one format"]
        unknown = [f for f in value if f not in OUTPUT_FORMATS]
        return [f"{env} has unknown formats: {', '.join(unknown)}"] if unknown else []

    def allowed(self) -> str:
        return "comma-separated, from " + ", ".join(f"`{name}`" for name in OUTPUT_FORMATS)


def _is_url(value: str) -> bool:
    return value.startswith(("https://", "http://"))


def _is_rate_limit(value: str) -> bool:
    try:
        return bool(parse_many(value))
    except ValueError:
        return False


#: The storages flask-limiter may count in here: one process, or Redis shared by all.
LIMITER_STORAGE_SCHEMES = ("memory://", "redis://", "rediss://")


def _is_limiter_storage(value: str) -> bool:
    return value == "memory://" or (
        value.startswith(LIMITER_STORAGE_SCHEMES[1:]) and len(value.split("://", 1)[1]) > 0
    )


def _is_origin(value: str) -> bool:
    scheme, _, rest = value.partition("://")
    host = rest.removesuffix("/")
    return scheme in ("https", "http") and bool(host) and not any(c in host for c in "/?#@ ")


def _is_queue_name(value: str) -> bool:
    parts = value.split("/")
    return (
        len(parts) == 6 and parts[0::2] == ["projects", "locations", "queues"] and "" not in parts
    )


# -- reading values from text ----------------------------------------------------------------


def _boolean(raw: str) -> bool:
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"must be a boolean (1/0, true/false), got {raw!r}")


def _whole(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"must be a whole number, got {raw!r}") from None


def _decimal(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"must be a number, got {raw!r}") from None


def _words(raw: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in raw.split(",") if p.strip())


#: How a value is read from its text, by the type of its default (bool before int: it is one),
#: with how the docs describe such values.
READERS: tuple[tuple[type, Callable[[str], Any], str], ...] = (
    (bool, _boolean, "`1` or `0` (also true/false, yes/no, on/off)"),
    (int, _whole, "whole number"),
    (float, _decimal, "number"),
    (Path, Path, "path"),
    (tuple, _words, "comma-separated list"),
    (str, str, ""),
)


def _reader(default: object) -> tuple[Callable[[str], Any], str]:
    for kind, read, described in READERS:
        if isinstance(default, kind):
            return read, described
    raise TypeError(f"no reader for a {type(default).__name__} setting")
