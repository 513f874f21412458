"""The settings of who may call the app: uploaders, admins, storage events and Cloud Tasks
(groups ``security``, ``events``)."""

from __future__ import annotations

from dataclasses import dataclass

from imaging.config.checks import (
    Between,
    Shaped,
    _is_limiter_storage,
    _is_origin,
    _is_queue_name,
    _is_rate_limit,
    _is_url,
)
from imaging.config.declare import (
    EVENTS,
    PRODUCTION_RATE_LIMIT,
    SECURITY,
    setting,
)


@dataclass(frozen=True)
class SecuritySettings:
    """Who may upload, delete and approve, and how often."""

    secret_key: str = setting(
        "",
        "signs sessions and CSRF tokens",
        SECURITY,
        shown="generated into `instance/secret_key`",
    )
    upload_tokens: tuple[str, ...] = setting(
        (),
        "comma-separated tokens; when set, uploading needs one",
        SECURITY,
        env="UPLOAD_TOKEN",
    )
    admin_token: str = setting("", "may delete any image and approve held-back ones", SECURITY)
    rate_limit: str = setting(
        "",
        "upload work per client, e.g. `30/minute`: each upload costs files × formats, from one "
        "budget shared by every upload door; other writes (and all of admin) count requests "
        "per route; empty turns it off",
        SECURITY,
        shown=f"(none; `{PRODUCTION_RATE_LIMIT}` on Cloud Run)",
        check=Shaped(_is_rate_limit, "a limit such as 30/minute", "`<n>/<period>`, `;`-separated"),
    )
    rate_limit_storage_uri: str = setting(
        "memory://",
        "where rate-limit budgets are counted: `memory://` keeps one per process; "
        "`redis://host:6379/0` (or `rediss://`) shares one across every process and instance",
        SECURITY,
        check=Shaped(
            _is_limiter_storage,
            "memory:// or a redis:// or rediss:// URI",
            "`memory://`, `redis://...`, `rediss://...`",
        ),
    )
    trusted_proxy_hops: int = setting(
        0,
        "proxies in front whose `X-Forwarded-For` and `-Proto` are trusted (`X-Forwarded-Host` "
        "never is): 1 on Cloud Run, 2 behind a load balancer in front of Cloud Run",
        SECURITY,
        shown="`0` (1 on Cloud Run)",
    )
    public_url: str = setting(
        "",
        "this service's own URL (`https://host`): every absolute URL in an answer is built from "
        "it, whatever `Host` or `X-Forwarded-Host` a request carries",
        SECURITY,
        shown="(the request's `Host`; `EVENTS_AUDIENCE` on Cloud Run when set)",
        check=Shaped(
            _is_origin,
            "an origin such as https://images.example.com (no path)",
            "an `https://` origin, no path",
        ),
    )
    metrics_token: str = setting(
        "",
        "when set, `GET /metrics` needs `Authorization: Bearer <token>` (401 without, 403 wrong)",
        SECURITY,
    )


@dataclass(frozen=True)
class EventSettings:
    """Conversions started by storage events and Cloud Tasks."""

    uploads_bucket: str = setting(
        "",
        "comma-separated buckets whose storage events are converted; events from any other "
        "bucket get 403",
        EVENTS,
    )
    events_audience: str = setting(
        "",
        "this service's URL: the audience of the OIDC tokens on `/events/storage` and "
        "`/tasks/convert`; empty turns both off (404)",
        EVENTS,
        check=Shaped(_is_url, "the service's URL (https://...)", "an `https://` URL"),
    )
    events_service_account: str = setting(
        "",
        "the only service account (token `email`) allowed to deliver storage events",
        EVENTS,
    )
    oidc_certs_url: str = setting(
        "https://www.googleapis.com/oauth2/v1/certs",
        "where the token-signing certificates come from (tests point it at a local issuer)",
        EVENTS,
    )
    event_workers: int = setting(
        2,
        "conversions from storage events at once per process, without `TASKS_QUEUE` (as many "
        "again may wait; beyond that 503)",
        EVENTS,
        check=Between(1, 32),
    )
    tasks_queue: str = setting(
        "",
        "hand each event's conversion to this Cloud Tasks queue instead of converting in the "
        "event's request",
        EVENTS,
        check=Shaped(
            _is_queue_name,
            "projects/<p>/locations/<l>/queues/<q>",
            "`projects/P/locations/L/queues/Q`",
        ),
    )
    tasks_target_url: str = setting(
        "", "the URL Cloud Tasks calls", EVENTS, shown="`EVENTS_AUDIENCE` + `/tasks/convert`"
    )
    tasks_service_account: str = setting(
        "",
        "service account whose OIDC token Cloud Tasks sends (and the only one `/tasks/convert` "
        "accepts)",
        EVENTS,
    )
    tasks_api_endpoint: str = setting(
        "",
        "Cloud Tasks endpoint override (`http://...` uses anonymous credentials: for local "
        "stand-ins)",
        EVENTS,
    )
