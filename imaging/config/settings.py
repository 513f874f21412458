"""``Settings``: every group's settings in one frozen value, read from the environment once and
validated; the ``ops`` group is declared here."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from imaging.config.access import EventSettings, SecuritySettings
from imaging.config.checks import Between, OneOf
from imaging.config.declare import (
    _DEFINITION,
    _INTERNAL,
    OPS,
    PRODUCTION_RATE_LIMIT,
    Definition,
    SettingsError,
    _keyword,
    _present,
    setting,
)
from imaging.config.labels import LabelSettings
from imaging.config.limits import LimitSettings, OutputSettings
from imaging.config.rules import RULES
from imaging.config.storage import DirectUploadSettings, StorageSettings
from imaging.errors import ImagingError


# A dataclass lays out its bases' fields last base first: so DEFINITIONS (and the docs' rows
# within a group) follow the docs' group order, limits to ops.
@dataclass(frozen=True)
class Settings(
    EventSettings,
    DirectUploadSettings,
    SecuritySettings,
    LabelSettings,
    StorageSettings,
    OutputSettings,
    LimitSettings,
):
    """Every setting of the app: one field per environment variable (``setting(...)``)."""

    host: str = setting("127.0.0.1", "address `make run` listens on", OPS)
    port: int = setting(8080, "port to listen on (Cloud Run sets it)", OPS)
    gc_grace_seconds: int = setting(
        3600, "age after which `flask gc` removes objects without a record", OPS
    )
    log_format: str = setting(
        "text",
        "log line format",
        OPS,
        check=OneOf(("text", "json")),
        shown="`text` (`json` on Cloud Run)",
    )
    log_level: str = setting(
        "INFO",
        "least severe level logged",
        OPS,
        check=OneOf(("DEBUG", "INFO", "WARNING", "ERROR"), bare=True),
        parse=_keyword,
    )
    google_cloud_project: str = setting(
        "",
        "project id, used in log lines' trace field (`projects/<id>/traces/<trace>`) and by "
        "Cloud Trace",
        OPS,
    )
    trace_exporter: str = setting(
        "none",
        "where traces go: nowhere, Cloud Trace (`gcp`) or stderr (`console`)",
        OPS,
        check=OneOf(("none", "gcp", "console")),
    )
    trace_sample_ratio: float = setting(
        0.1,
        "share of requests traced when the caller made no sampling decision",
        OPS,
        check=Between(0, 1),
    )
    on_cloud_run: bool = setting(
        False,
        "set by Cloud Run itself, never by hand: any value turns on the Cloud Run defaults "
        "and rules",
        OPS,
        env="K_SERVICE",
        shown="(set by Cloud Run)",
        allows="any (Cloud Run sets the service's name)",
        parse=_present,
    )
    # Not a variable: the test suite's apps set it.
    testing: bool = field(default=False, metadata={_INTERNAL: True})

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024

    @property
    def direct_upload_max_bytes(self) -> int:
        return self.direct_upload_max_mb * 1024 * 1024

    @property
    def direct_upload_tmp_max_bytes(self) -> int:
        return self.direct_upload_tmp_max_mb * 1024 * 1024

    @property
    def direct_upload_threshold_bytes(self) -> int:
        return int(self.direct_upload_threshold_mb * 1024 * 1024)

    @property
    def event_buckets(self) -> tuple[str, ...]:
        """The buckets UPLOADS_BUCKET names, whose storage events are converted."""
        return tuple(b.strip() for b in self.uploads_bucket.split(",") if b.strip())

    @property
    def slots(self) -> int:
        return self.conversion_slots or (os.cpu_count() or 1)

    @property
    def public_origin(self) -> str:
        """Where clients reach this service, or "" to take the request's Host header.

        On Cloud Run, EVENTS_AUDIENCE is the service's URL already; without either, Cloud Run's
        front end sets Host itself (it routes by it), so only a self-hosted server needs one.
        """
        origin = self.public_url or (self.events_audience if self.on_cloud_run else "")
        return origin.rstrip("/")

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied and validated (handy in tests)."""
        return replace(self, **changes).validated()

    def validated(self) -> Settings:
        """``self``, once every setting's check and every rule in ``RULES`` holds."""
        problems = [
            problem
            for definition in DEFINITIONS
            if definition.check is not None
            for problem in definition.check.problems(definition.env, getattr(self, definition.name))
        ]
        problems += [rule.problem for rule in RULES if rule.broken(self)]
        if problems:
            raise SettingsError("Invalid configuration: " + "; ".join(problems))
        return self

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every setting from ``environ`` (default ``os.environ``) and validate them."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for definition in DEFINITIONS:
            raw = env.get(definition.env)
            if raw is None or raw == "":
                continue  # unset and empty alike keep the default
            try:
                values[definition.name] = definition.read(raw)
            except ValueError as exc:
                raise SettingsError(f"Invalid configuration: {definition.env} {exc}") from None
            except ImagingError as exc:
                raise SettingsError(f"Invalid configuration: {exc.public_message}") from None
        settings = replace(cls(), **values)
        if settings.on_cloud_run and "RATE_LIMIT" not in env:
            # On the open internet by default: limit uploads unless told otherwise
            # (RATE_LIMIT= with an empty value turns it off explicitly).
            settings = replace(settings, rate_limit=PRODUCTION_RATE_LIMIT)
        if not settings.secret_key and not settings.on_cloud_run:
            settings = replace(settings, secret_key=_local_secret(settings.media_root.parent))
        return settings.validated()


#: Every declared setting, in the order of its fields.
DEFINITIONS: tuple[Definition, ...] = tuple(
    replace(f.metadata[_DEFINITION], name=f.name, env=f.metadata[_DEFINITION].env or f.name.upper())
    for f in fields(Settings)
    if _DEFINITION in f.metadata
)


def _local_secret(instance_dir: Path) -> str:
    """A secret kept beside the local media: sessions survive restarts and workers agree."""
    path = instance_dir / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    instance_dir.mkdir(parents=True, exist_ok=True)
    candidate = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another worker won the race
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(candidate)
    return candidate
