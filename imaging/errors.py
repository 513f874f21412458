"""The error family every domain module raises: a status, a stable code and a public message.

Domain code never calls ``abort()`` and never builds an HTTP body; the web layer turns these into
JSON or a page. ``detail`` is for the log only and is never shown to a client.
"""

from __future__ import annotations


class ImagingError(Exception):
    """Base of every error a client may be told about."""

    status: int = 400
    code: str = "bad_request"

    def __init__(
        self,
        public_message: str,
        *,
        detail: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(public_message)
        self.public_message = public_message
        self.detail = detail
        self.retry_after = retry_after


class BadRequest(ImagingError):
    status, code = 400, "bad_request"


class BadBody(BadRequest):
    """The request's body could not be read as sent: a broken chunk, a body that ends early."""

    code = "bad_body"


class MissingFile(ImagingError):
    status, code = 400, "missing_file"


class Unauthorized(ImagingError):
    status, code = 401, "unauthorized"


class Forbidden(ImagingError):
    status, code = 403, "forbidden"


class NotFound(ImagingError):
    status, code = 404, "not_found"


class UnreadableRecord(NotFound):
    """A record in storage that no longer parses (hand-edited or truncated storage).

    A 404, not a 503: retrying cannot mend it (503 would invite retries and read as an outage),
    and every listing already leaves it out, so the image reads as absent everywhere. One kept
    under ``held/`` answers exactly as a missing image does: without its record nobody can be
    shown to be allowed to know it exists.
    """

    code = "unreadable_record"

    def __init__(self, public_message: str, *, private: bool = False) -> None:
        super().__init__(public_message)
        if private:
            self.code = NotFound.code


class Conflict(ImagingError):
    """The request is well-formed but the resource cannot do it in its present state."""

    status, code = 409, "conflict"


class Gone(ImagingError):
    status, code = 410, "gone"


class TooLarge(ImagingError):
    status, code = 413, "too_large"

    @classmethod
    def over(cls, limit_bytes: int, *, what: str = "file", scope: str = "") -> TooLarge:
        """The one wording of a size refusal: "The file is larger than the 20 MB limit."."""
        return cls(limit_message(limit_bytes, what=what, scope=scope))


def limit_message(limit_bytes: int, *, what: str = "file", scope: str = "") -> str:
    """``The <what> is larger than the <N> MB limit[ <scope>].`` (N in MiB, rounded down)."""
    suffix = f" {scope}" if scope else ""
    return f"The {what} is larger than the {limit_bytes // (1024 * 1024)} MB limit{suffix}."


class UnsupportedFormat(ImagingError):
    status, code = 415, "unsupported_format"


class LimitExceeded(ImagingError):
    """The image is a valid image but over a pixel, side or frame limit."""

    status, code = 422, "limit_exceeded"


class TooDetailed(LimitExceeded):
    """A picture asked for as SVG that would trace into too many paths (a photo, not flat art)."""

    code = "too_detailed"


class RateLimited(ImagingError):
    status, code = 429, "rate_limited"


class Unavailable(ImagingError):
    """A dependency or capacity problem the client may retry later."""

    status, code = 503, "unavailable"

    def __init__(
        self,
        public_message: str = "The service is busy. Please retry shortly.",
        *,
        detail: str | None = None,
        retry_after: int | None = 5,
    ) -> None:
        super().__init__(public_message, detail=detail, retry_after=retry_after)


class Busy(Unavailable):
    """A per-process capacity is taken: every conversion slot for longer than the configured
    wait, or every direct-upload PUT slot (``DIRECT_UPLOAD_MAX_PUTS``)."""

    code = "busy"


class StorageUnavailable(Unavailable):
    """The object store failed or did not answer in time; an upload adds "nothing was saved"."""

    code = "storage_unavailable"

    def __init__(
        self,
        public_message: str = "Storage is unavailable. Please retry shortly.",
        *,
        detail: str | None = None,
        retry_after: int | None = 5,
    ) -> None:
        super().__init__(public_message, detail=detail, retry_after=retry_after)


class DiskFull(StorageUnavailable):
    """The local disk has less free space than MIN_FREE_DISK_MB (not ready for uploads), or
    ``tmp/`` has no room for one more direct upload (DIRECT_UPLOAD_TMP_MAX_MB). A 503, not a
    413: the same request fits once space is freed, so it says when to retry."""

    code = "disk_full"


class ObjectNotFound(NotFound):
    """A storage key that does not exist."""

    code = "object_not_found"


class ObjectExists(ImagingError):
    """A create-only write hit an existing object with different content."""

    status, code = 409, "object_exists"


class LabelerUnavailable(Exception):
    """A labeler could not label an image. Never reaches a client: the upload goes on."""
