"""What the catalog holds, summed for the admin: uploads per day, bytes, formats, label sources.

Computed from the records themselves (``Catalog.scan``), not from counters: the catalog is the
one truth (a deleted or approved image changes every figure at once, with no counter to drift
or to repair after a crash), at O(records) reads up to STATS_MAX_RECORDS, newest first. Past
the cap the figures say they cover only the newest records read. No Flask, no Pillow.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from imaging.catalog import ImageRecord, Scan, id_time, is_valid_id

#: Days shown in the uploads chart, ending today (UTC).
CHART_DAYS = 30
#: What a record without labels counts as among the label sources.
NO_LABELS = "none"


@dataclass(frozen=True)
class CatalogStats:
    images: int  # records read (public and held back)
    held: int  # of those, held back by SafeSearch
    unreadable: int  # records that would not parse (counted in nothing else)
    complete: bool  # False: the scan stopped at ``limit`` records
    limit: int
    uploads_per_day: tuple[tuple[date, int], ...]  # the last CHART_DAYS days, oldest first
    bytes_original: int  # what the uploads were
    bytes_stored: int  # every file kept: the variants, the thumbnails, the kept originals
    bytes_best: int  # each image's smallest variant, summed
    formats: tuple[tuple[str, int], ...]  # variants per output format, most asked first
    label_sources: tuple[tuple[str, int], ...]  # images per labeler (NO_LABELS: none)

    @property
    def bytes_saved(self) -> int:
        """What conversion saved: each original against its smallest variant (negative when
        the variants came out larger, e.g. a small JPEG asked for as PNG)."""
        return self.bytes_original - self.bytes_best


def uploaded_on(record: ImageRecord) -> date | None:
    """The UTC day a record was made: its ``created_at``, or the time in its id (older or
    hand-made records); None when neither can be read."""
    try:
        return datetime.strptime(record.created_at, "%Y-%m-%dT%H:%M:%SZ").date()
    except (TypeError, ValueError):
        pass
    if isinstance(record.id, str) and is_valid_id(record.id):
        return datetime.fromtimestamp(id_time(record.id), UTC).date()
    return None


def summarize(scan: Scan, *, limit: int, today: date | None = None) -> CatalogStats:
    """The figures of one scan; ``today`` (UTC) ends the uploads chart."""
    today = today or datetime.now(UTC).date()
    first_day = today - timedelta(days=CHART_DAYS - 1)
    per_day: Counter[date] = Counter()
    formats: Counter[str] = Counter()
    sources: Counter[str] = Counter()
    original = stored = best = unreadable = 0
    held = 0
    for record in scan.records:
        try:
            # Every figure of one record first: a hand-edited one with a text where a number
            # belongs counts as unreadable, and adds to nothing.
            figures = (
                int(record.bytes),
                sum(int(v.bytes) for v in record.files()) + int(record.original.get("bytes", 0)),
                min((int(v.bytes) for v in record.variants), default=int(record.bytes)),
            )
            asked = [str(v.format) for v in record.variants]
            by = list(dict.fromkeys(str(label.source) for label in record.labels)) or [NO_LABELS]
        except (TypeError, ValueError, AttributeError):
            unreadable += 1
            continue
        day = uploaded_on(record)
        if day is not None and first_day <= day <= today:
            per_day[day] += 1
        original, stored, best = original + figures[0], stored + figures[1], best + figures[2]
        formats.update(asked)
        sources.update(by)
        held += bool(record.hidden)
    days = tuple(
        (first_day + timedelta(days=n), per_day[first_day + timedelta(days=n)])
        for n in range(CHART_DAYS)
    )
    return CatalogStats(
        images=len(scan.records) - unreadable,
        held=held,
        unreadable=scan.unreadable + unreadable,
        complete=scan.complete,
        limit=limit,
        uploads_per_day=days,
        bytes_original=original,
        bytes_stored=stored,
        bytes_best=best,
        formats=tuple(formats.most_common()),
        label_sources=tuple(sources.most_common()),
    )
