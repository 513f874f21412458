"""What every blueprint says and reads alike: records as JSON, upload answers, request readers.

Blueprints import from here (and from security.py), never from each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from typing import Any
from urllib.parse import urljoin

from flask import Response, request, url_for
from flask.typing import ResponseReturnValue
from werkzeug.datastructures import MultiDict

from imaging.catalog import ImageRecord, Page
from imaging.errors import BadRequest, ImagingError
from imaging.formats import OUTPUT_FORMATS
from imaging.labeling import text_note
from imaging.pipeline import IngestResult
from imaging.refocus import refocusable
from imaging.search import Results, Search
from imaging.web import FILE_POLICY, services
from imaging.web.forms import read_files, read_options, requested_formats

#: The most records one JSON page holds (``?limit=``).
MAX_PAGE = 100


# -- records and uploads as clients see them ---------------------------------------------------
def image_json(record: ImageRecord) -> dict[str, Any]:
    """A record as clients see it, with absolute public URLs and its page."""
    store = services().store

    def public_url(key: str) -> str:
        # LocalStore's URLs are paths on this app; clients (curl) need them absolute.
        return urljoin(request.host_url, store.public_url(key))

    data = record.public(public_url)
    data["detail_url"] = url_for("pages.detail", image_id=record.id, _external=True)
    # Whether the owner can move the crop (POST /api/images/<id>/focus): a cropped cover
    # variant and a kept original.
    data["refocusable"] = refocusable(record)
    data["alt"] = alt_text(data)
    # For people: a sentence when the words in the picture were not read (text_status).
    data["text_note"] = text_note(record.text_status)
    return data


#: What a plain ``<img srcset>`` may offer: formats every browser shows (no <picture> type
#: switch there). AVIF waits for the <picture> of "copy HTML"; GIF may be an animation; an SVG
#: is a trace, not the picture's own pixels.
SRCSET_TYPES = ("image/webp", "image/jpeg", "image/png")
#: ``<picture>`` sources, best first, and the ``<img>`` fallback's order: most compatible first.
PICTURE_SOURCES = ("image/avif", "image/webp")
PICTURE_FALLBACK = (
    "image/jpeg",
    "image/png",
    "image/gif",
    "image/svg+xml",
    "image/webp",
    "image/avif",
)


def thumbnail_srcset(image: dict[str, Any]) -> str:
    """The gallery thumbnail's ``srcset``: the thumbnail and every still variant of its shape.

    One candidate a width (the fewest bytes wins), so the browser picks by width alone; a
    variant cropped to another shape would jump when chosen, so only same-shape ones count.
    """
    thumb = image["thumbnail"]
    best: dict[int, dict[str, Any]] = {}
    for v in [thumb, *image["variants"]]:
        if v["content_type"] not in SRCSET_TYPES or v["frames"] != 1 or not v["width"]:
            continue
        across, down = v["width"] * thumb["height"], v["height"] * thumb["width"]
        if abs(across - down) > across / 100:  # not within 1 % of the thumbnail's aspect ratio
            continue
        kept = best.get(v["width"])
        if kept is None or v["bytes"] < kept["bytes"]:
            best[v["width"]] = v
    return ", ".join(f"{best[w]['url']} {w}w" for w in sorted(best))


#: How many labels an ``alt`` names: the best ones run from broad to specific ("animal, cat,
#: tabby cat"), so one alone is often too broad to say what the picture shows.
ALT_LABELS = 3


def alt_text(image: dict[str, Any]) -> str:
    """What an image shows, for ``alt``: its caption, else its best labels, else its name.

    Plain text: each template escapes it (the caption is untrusted model output)."""
    if image.get("caption"):
        return str(image["caption"])
    labels = [str(label["description"]) for label in image.get("labels") or []]
    return ", ".join(labels[:ALT_LABELS]) if labels else str(image["name"])


def picture_html(image: dict[str, Any]) -> str:
    """The detail page's "copy HTML": a ``<picture>`` of the variants there are.

    AVIF, then WebP, as ``<source>``s; the most widely shown format as the ``<img>`` with its
    width, height and alt text (every value escaped).
    """
    by_type = {v["content_type"]: v for v in image["variants"]}
    fallback = next((by_type[t] for t in PICTURE_FALLBACK if t in by_type), image["thumbnail"])
    lines = ["<picture>"]
    for kind in PICTURE_SOURCES:
        v = by_type.get(kind)
        if v is None or v is fallback:
            continue
        size = ""
        if (v["width"], v["height"]) != (fallback["width"], fallback["height"]):
            size = f' width="{v["width"]}" height="{v["height"]}"'
        lines.append(f'  <source type="{kind}" srcset="{escape(v["url"])}"{size}>')
    lines.append(
        f'  <img src="{escape(fallback["url"])}" width="{fallback["width"]}" '
        f'height="{fallback["height"]}" alt="{escape(alt_text(image))}" loading="lazy" '
        'decoding="async">'
    )
    lines.append("</picture>")
    return "\n".join(lines)


def result_json(result: IngestResult) -> dict[str, Any]:
    data = image_json(result.record)
    data["duplicate"] = result.duplicate
    if result.delete_key:
        data["delete_key"] = result.delete_key
    return data


@dataclass(frozen=True)
class Refusal:
    """One file of a multi-file upload that was not stored, and why (its own 4xx/503)."""

    index: int  # the file's place in the form, from 0
    filename: str
    error: ImagingError

    def json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "file": self.filename,
            "status": self.error.status,
            "error": self.error.code,
            "message": self.error.public_message,
        }


@dataclass(frozen=True)
class Uploaded:
    """What one form post did: the files stored (or found stored) and the files refused."""

    results: list[IngestResult]
    refusals: list[Refusal] = field(default_factory=list)


def upload_response(uploaded: Uploaded | list[IngestResult]) -> ResponseReturnValue:
    """201 with the record(s) when anything is new, 200 when every file was a duplicate.

    Each file of a multi-file post stands alone: when some were stored and others refused,
    the answer is still 201 (or 200), with the stored ones in ``images`` (delete keys and all)
    and each refusal in ``errors``; only when none was stored is the answer the first refusal's
    own error.
    """
    if isinstance(uploaded, list):
        uploaded = Uploaded(uploaded)
    results = uploaded.results
    if not results:
        if uploaded.refusals:
            raise uploaded.refusals[0].error
        raise BadRequest("No file was uploaded.")
    if wants_inline():
        if uploaded.refusals:
            raise uploaded.refusals[0].error
        return inline_response(results)
    status = 201 if any(not r.duplicate for r in results) else 200
    if len(results) == 1 and not uploaded.refusals:
        body = result_json(results[0])
        return body, status, {"Location": url_for("api.show", image_id=results[0].record.id)}
    body = {"images": [result_json(r) for r in results]}
    if uploaded.refusals:
        body["errors"] = [refusal.json() for refusal in uploaded.refusals]
    return body, status


INLINE_NEEDS_ONE = "inline=1 needs exactly one file and one output format."


def wants_inline() -> bool:
    """``?inline=1``: the answer is the converted bytes, not the record."""
    return request.args.get("inline") in ("1", "true")


def inline_response(results: list[IngestResult]) -> Response:
    """``?inline=1``: answer with the converted bytes of the one format asked for."""
    if len(results) != 1 or len(results[0].record.variants) != 1:
        raise BadRequest(INLINE_NEEDS_ONE)
    result = results[0]
    variant = result.record.variants[0]
    rendition = result.renditions.get(variant.name)
    if rendition is not None:
        data = rendition.data
    else:
        data = services().store.get(result.record.stored_key(variant.key))
    ext = OUTPUT_FORMATS[variant.format].ext
    return Response(
        data,
        status=201 if not result.duplicate else 200,
        mimetype=variant.content_type,
        headers={
            "X-Image-Id": result.record.id,
            "Location": url_for("api.show", image_id=result.record.id),
            "Content-Disposition": f'inline; filename="{result.record.id}.{ext}"',
            "Content-Security-Policy": FILE_POLICY,
        },
    )


# -- reading requests ----------------------------------------------------------------------------
def ingest_request() -> Uploaded:
    """Run every file of the current form post through the pipeline: the one path of every
    form door (``POST /api/images``, ``/convert``, the upload page). The caller has already
    checked who may upload, each door in its own way.

    A file that is refused (bad format, over a limit, storage down) does not undo the files
    stored before it, nor stop the ones after: each gets its own result (``Uploaded``).
    """
    svc = services()
    files = read_files(svc.settings)
    # ?inline=1 answers with one file's bytes: refuse a post it cannot answer before storing
    # anything, or the files it stored would never be shown to their uploader.
    if wants_inline() and (
        len(files) != 1 or len(requested_formats(svc.settings, request.values)) != 1
    ):
        raise BadRequest(INLINE_NEEDS_ONE)
    uploaded = Uploaded([])
    for index, upload in enumerate(files):
        try:
            options = read_options(svc.settings, filename=upload.filename)
            uploaded.results.append(svc.pipeline.ingest(upload.data, options))
        except ImagingError as exc:
            uploaded.refusals.append(Refusal(index, upload.filename, exc))
    return uploaded


def gallery_page(*, limit: int) -> Page | Results:
    """The page the request's ``?q=`` (a search), ``?label=`` and ``?cursor=`` ask for."""
    cursor = request.args.get("cursor") or None
    query = request.args.get("q", "").strip()
    if query:
        return Search(services().catalog).find(query, cursor=cursor, limit=limit)
    label = request.args.get("label") or None
    return services().catalog.page(cursor=cursor, limit=limit, label=label)


def page_limit(default: int) -> int:
    """``?limit=``, clamped to 1..MAX_PAGE; a 400 when it is not a whole number."""
    try:
        return min(MAX_PAGE, max(1, int(request.args.get("limit", str(default)))))
    except ValueError:
        raise BadRequest("limit must be a whole number.") from None


def request_body() -> MultiDict[str, str]:
    """The form fields, or a JSON object's members as fields (lists repeat a field)."""
    if not request.is_json:
        return MultiDict(request.form)
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequest("Send a JSON object (or form fields).")
    fields = MultiDict[str, str]()
    for name, value in body.items():
        for item in value if isinstance(value, list) else [value]:
            if item is None:
                continue
            if isinstance(item, bool):
                fields.add(name, "true" if item else "false")
            elif isinstance(item, str | int | float):
                fields.add(name, str(item))
            else:
                raise BadRequest(f"{name} must be a string, a number or a list of them.")
    return fields
