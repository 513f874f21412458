"""Reading an upload request: the files and the conversion options, checked at the edge."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import IO

from flask import Request, current_app, request
from werkzeug.datastructures import FileStorage, MultiDict

from imaging.config import Settings
from imaging.errors import BadRequest, MissingFile, TooLarge
from imaging.formats import parse_format_list
from imaging.pipeline import QUALITY_RANGE, UploadOptions, parse_fit

FILE_FIELD = "image"


@dataclass(frozen=True)
class UploadedFile:
    filename: str
    data: bytes


#: The most output formats one request may ask for.
MAX_FORMATS = 5
#: How much of the body the form parser's reader pulls from the server at once. Werkzeug asks
#: for 64 KiB at a time, and gunicorn's reader, which receives up to 1 MiB per recv(), copies
#: what it holds beyond each 64 KiB piece again on every read: 15-21 ms of CPU for a 4.4 MB
#: body, against 5-8 ms read through this buffer (docs/benchmarks.md, "The body's reads").
FORM_READ_BUFFER = 1024 * 1024


class UploadRequest(Request):
    """Flask's request, with multipart file parts kept in memory instead of spooled to disk.

    Werkzeug writes every file part over 500 KB to a temporary file, which an upload then reads
    back at once: a disk round trip per upload for nothing. A request is never larger than
    ``MAX_CONTENT_LENGTH`` (MAX_UPLOAD_MB plus the form's overhead; Werkzeug refuses a longer
    body with 413, declared or not), so the memory its files take is bounded by that cap. A
    request allowed more than that (none is today) gets Werkzeug's spooled file again.
    """

    def _get_stream_for_parsing(self) -> IO[bytes]:
        """The body as the form parser reads it: through a 1 MiB buffer (``FORM_READ_BUFFER``),
        so the server's reader is asked for large pieces whatever size the parser reads."""
        stream = super()._get_stream_for_parsing()
        if isinstance(stream, io.RawIOBase):  # Werkzeug's LimitedStream: unbuffered
            # A smaller body gets a buffer of its own size: one read, no spare megabyte.
            declared = self.content_length or FORM_READ_BUFFER
            size = min(FORM_READ_BUFFER, max(declared, io.DEFAULT_BUFFER_SIZE))
            return io.BufferedReader(stream, size)
        return stream

    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        limit = self.max_content_length
        cap = current_app.config.get("MAX_CONTENT_LENGTH")
        if limit is not None and cap is not None and limit <= cap:
            return io.BytesIO()
        return super()._get_file_stream(
            total_content_length, content_type, filename, content_length
        )


def sent_files(settings: Settings) -> list[FileStorage]:
    """The ``image`` field's files, at most MAX_FILES_PER_REQUEST of them (else a 413, before
    anything is read or converted: each file is seconds of CPU in every format asked for)."""
    files = [f for f in request.files.getlist(FILE_FIELD) if f.filename or f.content_length]
    if len(files) > settings.max_files_per_request:
        raise TooLarge(
            f"Send at most {settings.max_files_per_request} files in one request "
            f"(this one has {len(files)})."
        )
    return files


def read_files(settings: Settings) -> list[UploadedFile]:
    """Every file in the ``image`` field, read with the per-file size limit enforced."""
    files = sent_files(settings)
    if not files:
        raise MissingFile(f"No file was sent. Send the image in the form field '{FILE_FIELD}'.")
    out = []
    for storage in files:
        stream = storage.stream
        if isinstance(stream, io.BytesIO):  # kept in memory (UploadRequest): its bytes, uncopied
            data = stream.getvalue()
        else:
            data = stream.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            raise TooLarge.over(settings.max_upload_bytes)
        out.append(UploadedFile(storage.filename or "", data))
    return out


def read_options(
    settings: Settings, *, filename: str = "", values: MultiDict[str, str] | None = None
) -> UploadOptions:
    """The conversion options from ``values`` (default: the form and query string).

    Bad values are a clear 400.
    """
    if values is None:
        values = request.values
    formats = requested_formats(settings, values)
    fit = parse_fit(values.get("fit"))
    name = values.get("name") or filename
    return UploadOptions(
        formats=formats,
        width=_int(values.get("width"), "width", 1, settings.max_output_side),
        height=_int(values.get("height"), "height", 1, settings.max_output_side),
        fit=fit,
        quality=_int(values.get("quality"), "quality", *QUALITY_RANGE),
        lossless=(values.get("lossless") or "").lower() in ("1", "true", "on", "yes"),
        name=name,
        # A JSON body's [x, y] arrives as two fields: read them as one "x,y".
        focus=parse_focus(",".join(values.getlist("focus")) or None),
    )


def requested_formats(settings: Settings, values: MultiDict[str, str]) -> tuple[str, ...]:
    """The ``format`` fields (default: DEFAULT_FORMATS); more than MAX_FORMATS is a 400."""
    formats_raw = ",".join(values.getlist("format")) or ",".join(settings.default_formats)
    formats = parse_format_list(formats_raw) or settings.default_formats
    if len(formats) > MAX_FORMATS:
        raise BadRequest(f"Ask for at most {MAX_FORMATS} output formats.")
    return formats


FOCUS_RULE = "focus must be two numbers x,y between 0 and 1."
PERCENT_RULE = "x and y must be numbers between 0 and 100 (per cent across and down)."


def parse_focus(raw: str | None) -> tuple[float, float] | None:
    """``focus=x,y`` (or JSON ``[x, y]``): the point a cover crop keeps in view, as fractions
    (0..1) of the width and height from the top left; none given: the crop chooses (smart
    crop)."""
    if raw is None or raw.strip() == "":
        return None
    parts = raw.split(",")
    try:
        x, y = (float(part.strip()) for part in parts)
    except ValueError:
        raise BadRequest(FOCUS_RULE) from None
    if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):  # also refuses nan
        raise BadRequest(FOCUS_RULE)
    return round(x, 4), round(y, 4)


def required_focus(values: MultiDict[str, str]) -> tuple[float, float]:
    """The focal point a re-crop asks for: ``focus=x,y`` (JSON ``[x, y]``) in 0..1, or the
    detail page's ``x`` and ``y`` fields in per cent (0..100); a 400 when missing or bad."""
    if "focus" not in values and ("x" in values or "y" in values):
        try:
            x, y = (float(values.get(name, "").strip()) / 100 for name in ("x", "y"))
        except ValueError:
            raise BadRequest(PERCENT_RULE) from None
        if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):  # also refuses nan
            raise BadRequest(PERCENT_RULE)
        return round(x, 4), round(y, 4)
    point = parse_focus(",".join(values.getlist("focus")) or None)
    if point is None:
        raise BadRequest(f"Send the focal point: {FOCUS_RULE}")
    return point


def _int(raw: str | None, field: str, low: int, high: int) -> int | None:
    if raw is None or raw.strip() == "":
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        raise BadRequest(f"{field} must be a whole number.") from None
    if not low <= value <= high:
        raise BadRequest(f"{field} must be between {low} and {high}.")
    return value
