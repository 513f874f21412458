"""The HTML pages: gallery, image detail, upload (with CSRF-protected form posts)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from flask import Blueprint, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from imaging.errors import Forbidden
from imaging.formats import ACCEPT_ATTRIBUTE, accepted_inputs_sentence, describe_outputs
from imaging.pipeline import FIT_MODES
from imaging.search import Search
from imaging.web import check_csrf, services, wants_json
from imaging.web.forms import required_focus
from imaging.web.presentation import (
    gallery_page,
    image_json,
    ingest_request,
    picture_html,
    result_json,
    thumbnail_srcset,
    upload_response,
)
from imaging.web.security import (
    admin_session,
    authorize_delete,
    page_upload_allowed,
    require_page_upload,
    unlock_session,
    visible_record,
)

bp = Blueprint("pages", __name__)

PAGE_SIZE = 24

bp.add_app_template_filter(thumbnail_srcset, "srcset")
bp.add_app_template_filter(picture_html, "picture_html")


@bp.get("/")
def gallery() -> ResponseReturnValue:
    """The gallery grid, newest first; ``?q=`` searches, ``?label=`` filters, ``?cursor=`` pages."""
    query = request.args.get("q", "").strip()
    label = None if query else request.args.get("label") or None
    cursor = request.args.get("cursor") or None
    page = gallery_page(limit=PAGE_SIZE)
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
        query=query,
        label_chips=chips,
        next_cursor=page.next_cursor,
        is_first_page=cursor is None,
    )


@bp.get("/images/<image_id>")
def detail(image_id: str) -> ResponseReturnValue:
    """One image: every variant's public URL, sizes, labels and the processing receipt.

    A held-back image only for the admin and its uploader: the upload page links it with
    ``?key=<delete key>``, which the browser kept from the upload response."""
    catalog = services().catalog
    record = catalog.get(image_id)
    visible_record(services().settings, record, request.args.get("key"))
    # A held-back image lists none: its page is private, the others' are not.
    similar = [] if record.hidden else Search(catalog).similar(record)
    image = image_json(record)
    # One chip per colour name (largest share first), with a square for each of its shades.
    colours: dict[str, list[dict[str, Any]]] = {}
    for colour in image["colours"]:
        colours.setdefault(colour["name"], []).append(colour)
    return render_template(
        "detail.html",
        image=image,
        admin=admin_session(services().settings),
        colour_names=[
            {"name": name, "shades": shades, "share": sum(s["share"] for s in shades)}
            for name, shades in colours.items()
        ],
        similar=[image_json(r) for r in similar],
    )


@bp.get("/upload")
def upload() -> ResponseReturnValue:
    """The upload page: drag and drop, several files, a progress bar each."""
    settings = services().settings
    if not page_upload_allowed(settings):
        return redirect(url_for("pages.unlock"))
    return render_template(
        "upload.html",
        formats=describe_outputs(),
        default_formats=list(settings.default_formats),
        max_upload_bytes=settings.max_upload_bytes,
        accept=ACCEPT_ATTRIBUTE,
        accepted_inputs=accepted_inputs_sentence(),
        max_side=settings.max_output_side,
        fits=list(FIT_MODES),
        upload_token_required=bool(settings.upload_tokens),
    )


@bp.post("/upload")
def upload_post() -> ResponseReturnValue:
    """The page's form post: JSON for the page's script, a redirect for a plain form."""
    require_page_upload(services().settings)
    uploaded = ingest_request()
    if wants_json():
        return upload_response(uploaded)
    results = uploaded.results
    if len(results) == 1 and not uploaded.refusals:
        return redirect(url_for("pages.detail", image_id=results[0].record.id), 303)
    if not results:
        raise uploaded.refusals[0].error
    # Several files: show each one's result, with the delete keys shown only this once.
    images = [result_json(r) for r in results]
    refusals = [r.json() for r in uploaded.refusals]
    status = 201 if any(not r.duplicate for r in results) else 200
    return render_template("uploaded.html", images=images, refusals=refusals), status


@bp.route("/unlock", methods=["GET", "POST"])
def unlock() -> ResponseReturnValue:
    """Ask once for the upload token (UPLOAD_TOKEN); the session keeps only its hash."""
    settings = services().settings
    error = None
    if request.method == "POST":
        check_csrf()
        try:
            unlock_session(settings, request.form.get("token", ""))
        except Forbidden as exc:
            error = exc.public_message
        else:
            return redirect(url_for("pages.upload"), 303)
    status = 403 if error else 200
    return render_template("unlock.html", error=error), status


@bp.post("/images/<image_id>/focus")
def focus(image_id: str) -> ResponseReturnValue:
    """The detail page's focal point: ``x`` and ``y`` in per cent (a click on the picture fills
    them in), with the delete key this browser kept (or typed in), or an admin session."""
    check_csrf()
    svc = services()
    admin = admin_session(svc.settings)
    delete_key = request.form.get("delete_key") or None
    record = visible_record(svc.settings, svc.catalog.get(image_id), delete_key, admin=admin)
    authorize_delete(svc.settings, record, delete_key, admin=admin)
    refocused = svc.refocus.refocus(record, required_focus(request.form))
    if wants_json():
        return image_json(refocused)
    # A held-back image's page shows only with its key (the admin's session needs none).
    key = delete_key if refocused.hidden and not admin else None
    return redirect(url_for("pages.detail", image_id=image_id, key=key, _anchor="focus"), 303)


@bp.post("/images/<image_id>/delete")
def delete(image_id: str) -> ResponseReturnValue:
    """The detail page's delete button: the browser sends the key it kept at upload time."""
    check_csrf()
    catalog = services().catalog
    delete_key = request.form.get("delete_key")
    record = visible_record(services().settings, catalog.get(image_id), delete_key)
    authorize_delete(services().settings, record, delete_key)
    catalog.delete(image_id)
    if wants_json():
        return "", 204
    return redirect(url_for("pages.gallery"), 303)
