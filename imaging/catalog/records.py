"""The record of one image (``ImageRecord``, its ``Variant`` files) and how a new one is built.

A record is the JSON kept at ``rec/<id>.json`` (``held/rec/<id>.json`` while held back): it
names every file and marker the image owns, so a reader always goes through it.
"""

from __future__ import annotations

import builtins
import dataclasses
import hashlib
import json
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, get_args, get_origin, get_type_hints

from imaging.catalog.keys import LABEL_PREFIX, held_key, label_slug, new_id, record_key, variant_key
from imaging.labeling import TEXT_UNREAD, Box, Label, LabelResult
from imaging.labeling.caption import clean_caption
from imaging.processing.palette import Appearance, Swatch
from imaging.search import index_keys
from imaging.untrusted import same_secret

if TYPE_CHECKING:
    from imaging.processing import Probe, Rendition


def new_delete_key() -> str:
    """A fresh delete key: shown once to the uploader, while the record keeps only its hash."""
    return secrets.token_urlsafe(24)


def hash_delete_key(delete_key: str) -> str:
    """What a record keeps of the delete key shown once to the uploader."""
    return hashlib.sha256(delete_key.encode()).hexdigest()


@dataclass(frozen=True)
class Variant:
    name: str  # "webp", "jpeg", ..., or "thumb"
    format: str
    key: str
    content_type: str
    bytes: int
    width: int
    height: int
    frames: int = 1


@dataclass(frozen=True)
class ImageRecord:
    id: str
    name: str
    created_at: str
    source_format: str
    width: int
    height: int
    bytes: int
    variants: tuple[Variant, ...]
    thumbnail: Variant
    labels: tuple[Label, ...] = ()
    label_status: str = "off"  # ok | empty | error | off
    safe_search: dict[str, str] = field(default_factory=dict)
    hidden: bool = False
    content_key: str = ""
    delete_key_hash: str = ""
    warnings: tuple[str, ...] = ()
    receipt: dict[str, Any] = field(default_factory=dict)
    thumbhash: str = ""  # base64 ThumbHash painted while the thumbnail loads; "" on old records
    camera: dict[str, Any] = field(default_factory=dict)  # processing.Camera's fields; never GPS
    people: int = 0  # faces found by the labeler
    faces: tuple[Box, ...] = ()  # the best of their boxes, fractions of width and height
    text: str = ""  # text read in the picture, capped
    #: ok | empty | off, or why the text was not read (TEXT_UNREAD: busy, timeout, cpu,
    #: failed; ``flask relabel --unread`` reads it); "" in records from before it was kept
    text_status: str = ""
    colours: tuple[Swatch, ...] = ()  # dominant colours, largest share first
    phash: str = ""  # 64-bit dHash as 16 hex digits; "" in records from before hashing
    caption: str = ""  # the captioner's sentence (untrusted model output, cleaned and capped)
    #: The kept original, for re-cropping (never in the API): {"key", "bytes", "options"}, the
    #: options being the upload's own (width, height, fit, quality, lossless); {} when none.
    original: dict[str, Any] = field(default_factory=dict)

    def files(self) -> tuple[Variant, ...]:
        """Every image file of the record: the requested variants, then the thumbnail."""
        return (*self.variants, self.thumbnail)

    def stored_key(self, key: str) -> str:
        """Where one of this record's keys is kept now: under ``held/`` while it is hidden."""
        return held_key(key) if self.hidden else key

    def location(self) -> str:
        """The key this record itself is kept at: ``rec/<id>.json`` or ``held/rec/<id>.json``."""
        return self.stored_key(record_key(self.id))

    def file_keys(self) -> list[str]:
        """Where this record's image files are kept now."""
        return [self.stored_key(v.key) for v in self.files()]

    def keys(self) -> list[str]:
        """Every object this record owns besides itself and its claim."""
        return self.file_keys() + self.marker_keys() + self.source_keys()

    def source_keys(self) -> list[str]:
        """The kept original's key, if one was kept (private, whether held back or not)."""
        key = self.original.get("key")
        return [key] if isinstance(key, str) and key else []

    def marker_keys(self) -> list[str]:
        """The label, search and hash-band markers ``save`` writes (the claim was written
        before the files); none while the image is held back."""
        return [] if self.hidden else self.public_marker_keys()

    def public_marker_keys(self) -> list[str]:
        """The label, search and hash-band markers a record has while it is public.

        A held-back image has none: label pages and searches list markers, so it must not
        appear there, not even as an id.
        """
        slugs = dict.fromkeys(label_slug(label.description) for label in self.labels)
        return [f"{LABEL_PREFIX}{slug}/{self.id}" for slug in slugs if slug] + index_keys(self)

    def unread(self) -> bool:
        """Whether something the labeler should have read was not: its labels, or its text."""
        return self.label_status == "error" or self.text_status in TEXT_UNREAD

    def accepts_delete_key(self, delete_key: str) -> bool:
        """Whether ``delete_key`` is the one this record's uploader was given (constant time)."""
        return bool(self.delete_key_hash) and same_secret(
            hash_delete_key(delete_key), self.delete_key_hash
        )

    def to_json(self) -> builtins.bytes:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: builtins.bytes) -> ImageRecord:
        data = json.loads(raw)
        data["variants"] = tuple(Variant(**v) for v in data["variants"])
        data["thumbnail"] = Variant(**data["thumbnail"])
        data["labels"] = tuple(Label(**label) for label in data.get("labels", ()))
        data["warnings"] = tuple(data.get("warnings", ()))
        data["faces"] = tuple(Box(**face) for face in data.get("faces", ()))
        data["colours"] = tuple(Swatch(**swatch) for swatch in data.get("colours", ()))
        record = cls(**data)
        if not _checker(cls)(record):
            # JSON of the right keys but the wrong kinds (a hand edit: "bytes": "many") would
            # fail later, in a page or the API: it is as unreadable as a truncated record.
            raise TypeError("a record field holds a value of the wrong type")
        return record

    def public(self, url_for_key: Callable[[str], str]) -> dict[str, Any]:
        """The JSON the API returns (and the pages render): no storage internals, no secrets."""

        def variant(v: Variant) -> dict[str, Any]:
            return {
                "name": v.name,
                "format": v.format,
                "url": url_for_key(v.key),
                "content_type": v.content_type,
                "bytes": v.bytes,
                "width": v.width,
                "height": v.height,
                "frames": v.frames,
            }

        return {
            "id": self.id,
            "name": self.name,
            "created_at": self.created_at,
            "source_format": self.source_format,
            "width": self.width,
            "height": self.height,
            "bytes": self.bytes,
            "variants": [variant(v) for v in self.variants],
            "thumbnail": variant(self.thumbnail),
            "labels": [
                {
                    "description": label.description,
                    "score": round(label.score, 4),
                    "source": label.source,
                    "slug": label_slug(label.description),
                }
                for label in self.labels
            ],
            "label_status": self.label_status,
            "safe_search": dict(self.safe_search),
            "hidden": self.hidden,
            "warnings": list(self.warnings),
            "receipt": dict(self.receipt),
            "thumbhash": self.thumbhash,
            "camera": dict(self.camera),
            "people": self.people,
            "faces": [asdict(face) for face in self.faces],
            "text": self.text,
            "text_status": self.text_status,
            "colours": [{"hex": s.hex, "name": s.name, "share": s.share} for s in self.colours],
            "phash": self.phash,
            "caption": self.caption,
        }


Checker = Callable[[Any], bool]
_CHECKERS: dict[Any, Checker] = {}


def _checker(hint: Any) -> Checker:
    """A test of whether a value is of the declared type ``hint`` (the kinds a record holds),
    built once per type: a record is checked on every read."""
    if hint not in _CHECKERS:
        _CHECKERS[hint] = _build_checker(hint)
    return _CHECKERS[hint]


def _build_checker(hint: Any) -> Checker:
    if hint is Any:
        return lambda value: True
    origin = get_origin(hint)
    if origin is dict:
        key, item = map(_checker, get_args(hint))
        return lambda value: (
            isinstance(value, dict) and all(key(k) and item(v) for k, v in value.items())
        )
    if origin is tuple:
        each = _checker(get_args(hint)[0])
        return lambda value: isinstance(value, tuple) and all(map(each, value))
    if hint is bool:
        return lambda value: value is True or value is False
    if hint is float:  # a hand edit may well write 1 for 1.0
        return lambda value: isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return lambda value: isinstance(value, int) and not isinstance(value, bool)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        fields = [(name, _checker(h)) for name, h in get_type_hints(hint).items()]
        return lambda value: (
            isinstance(value, hint) and all(check(getattr(value, name)) for name, check in fields)
        )
    return lambda value: isinstance(value, hint)


def new_record(
    source: Probe,
    renditions: Mapping[str, Rendition],
    *,
    labels: LabelResult,
    label_status: str,
    hidden: bool,
    name: str,
    content_key: str,
    delete_key: str,
    conversion: Mapping[str, Any],
    warnings: Iterable[str] = (),
    image_id: str | None = None,
    thumbhash: str = "",
    camera: Mapping[str, Any] | None = None,
    appearance: Appearance | None = None,
    caption: str = "",
) -> ImageRecord:
    """The record of a new upload under ``image_id`` (the one its claim names; default: a fresh
    id), with its variants' keys laid out.

    ``renditions`` maps each variant's name to its bytes; ``"thumb"`` is the gallery thumbnail.
    ``conversion`` is what decoding did (orientation, colour profile, ...); the receipt adds the
    source's figures and every variant's size to it. Only the delete key's hash is kept.
    ``thumbhash`` and ``camera`` are what the render step read of the pixels and the EXIF.
    """
    image_id = image_id or new_id()
    variants = {
        variant: Variant(
            name=variant,
            format=r.format,
            key=variant_key(image_id, variant, r.ext),
            content_type=r.mime,
            bytes=len(r.data),
            width=r.width,
            height=r.height,
            frames=r.frames,
        )
        for variant, r in renditions.items()
    }
    receipt = {
        **conversion,
        "source_format": source.format,
        "source_width": source.width,
        "source_height": source.height,
        "source_bytes": source.bytes,
        "source_frames": source.frames,
        "bytes": {variant: v.bytes for variant, v in variants.items()},
    }
    return ImageRecord(
        id=image_id,
        name=display_name(name),
        created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        source_format=source.format,
        width=source.width,
        height=source.height,
        bytes=source.bytes,
        variants=tuple(v for variant, v in variants.items() if variant != "thumb"),
        thumbnail=variants["thumb"],
        labels=labels.labels,
        label_status=label_status,
        safe_search=dict(labels.safe_search),
        hidden=hidden,
        content_key=content_key,
        delete_key_hash=hash_delete_key(delete_key),
        warnings=tuple(dict.fromkeys(warnings)),
        receipt=receipt,
        thumbhash=thumbhash,
        camera=dict(camera or {}),
        people=labels.people,
        faces=labels.faces,
        text=labels.text,
        text_status=labels.text_status,
        colours=appearance.colours if appearance else (),
        phash=appearance.phash if appearance else "",
        caption=clean_caption(caption),
    )


def display_name(name: str) -> str:
    """A display name only: never a path. Control characters go, length is capped."""
    cleaned = "".join(ch for ch in name if ch.isprintable()).strip()
    return cleaned[:200] or "untitled"


@dataclass(frozen=True)
class Page:
    records: list[ImageRecord]
    next_cursor: str | None


@dataclass(frozen=True)
class Scan:
    """What ``Catalog.scan`` read: the records, how many would not parse, and whether it read
    every record there is (False: it stopped at its cap)."""

    records: list[ImageRecord]
    unreadable: int
    complete: bool
