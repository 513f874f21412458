"""The HTML pages: gallery, image detail, upload (with CSRF-protected form posts)."""

from __future__ import annotations

from collections import Counter

from flask import Blueprint, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from imaging.formats import ACCEPT_ATTRIBUTE, OUTPUT_FORMATS
from imaging.pipeline import FIT_MODES
from imaging.web import check_csrf, services, wants_json
from imaging.web.api import image_json, ingest_request, upload_response

bp = Blueprint("pages", __name__)

PAGE_SIZE = 24


@bp.get("/")
def gallery() -> ResponseReturnValue:
    """The gallery grid, newest first; ``?label=`` filters, ``?cursor=`` pages."""
    label = request.args.get("label") or None
    cursor = request.args.get("cursor") or None
    page = services().catalog.page(cursor=cursor, limit=PAGE_SIZE, label=label)
    images = [image_json(r) for r in page.records]
    counts: Counter[str] = Counter()
    names: dict[str, str] = {}
    for image in images:
        for lab in image["labels"]:
            counts[lab["slug"]] += 1
            names.setdefault(lab["slug"], lab["description"])
    chips = [
        {"slug": slug, "description": names[slug], "count": n} for slug, n in counts.most_common(20)
    ]
    return render_template(
        "gallery.html",
        images=images,
        label=label,
        label_chips=chips,
        next_cursor=page.next_cursor,
        is_first_page=cursor is None,
    )


@bp.get("/images/<image_id>")
def detail(image_id: str) -> ResponseReturnValue:
    """One image: every variant's public URL, sizes, labels and the processing receipt."""
    return render_template("detail.html", image=image_json(services().catalog.get(image_id)))


@bp.get("/upload")
def upload() -> ResponseReturnValue:
    """The upload page: drag and drop, several files, a progress bar each."""
    settings = services().settings
    return render_template(
        "upload.html",
        formats=[
            {
                "name": f.name,
                "label": f.label,
                "mime": f.mime,
                "ext": f.ext,
                "alpha": f.alpha,
                "animation": f.animation,
            }
            for f in OUTPUT_FORMATS.values()
        ],
        default_formats=list(settings.default_formats),
        max_upload_bytes=settings.max_upload_bytes,
        accept=ACCEPT_ATTRIBUTE,
        max_side=settings.max_side,
        fits=list(FIT_MODES),
    )


@bp.post("/upload")
def upload_post() -> ResponseReturnValue:
    """The page's form post: JSON for the page's script, a redirect for a plain form."""
    check_csrf()
    results = ingest_request()
    if wants_json():
        return upload_response(results)
    if len(results) == 1:
        return redirect(url_for("pages.detail", image_id=results[0].record.id), 303)
    return redirect(url_for("pages.gallery"), 303)
