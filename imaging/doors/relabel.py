"""``flask relabel``: run the labeler, the captioner (when CAPTIONER is on), the palette and the
perceptual hash again over the catalog.

So that an upgrade (a better model, a bigger vocabulary, colours and near copies) reaches images
uploaded before it. Each record is read from its largest stored variant (an original is kept
only for cover crops), labelled through the same label-size copy an upload uses, and written
back with ``Catalog.update``: new index markers first, then the record, then the markers it no
longer has (the record is read again just before, so a re-crop of its files meanwhile is kept).
What SafeSearch decided at upload time (held back or not) is left as it is: that is the admin's
business, not a relabel's. A relabel that cannot read the text (the reader busy, too slow)
keeps the text the record had, if it had been read: a failure loses nothing.

``--unread`` describes again only the records that say something was not read at upload time
(``label_status: error``, or a ``text_status`` of ``TEXT_UNREAD``: the text reader was busy, too
slow or failed), so words skipped under load are read later without relabelling everything.

Records are walked in key order, held-back ones (``held/rec/``) then public ones (``rec/``),
newest first; after each one the key is written to a cursor file, so a run stopped halfway (or
killed) resumes after the last record it finished. Images uploaded during a run sort before the
cursor and are skipped: the current labeler made them. A labeler, captioner or storage outage
stops the run (exit 1) with the cursor kept; run the command again to go on. With CAPTIONER=none
a record keeps the caption it has.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext

from imaging import processing
from imaging.catalog import HELD_RECORD_PREFIX, RECORD_PREFIX, Catalog, ImageRecord
from imaging.config import Settings
from imaging.errors import ImagingError, LabelerUnavailable, NotFound, UnreadableRecord
from imaging.labeling import TEXT_UNREAD, Labeler
from imaging.labeling.caption import Captioner, NullCaptioner
from imaging.processing import RenderSpec
from imaging.services import services_of
from imaging.storage import ObjectStore

#: The order records are walked in: every held-back one, then every public one.
PREFIXES = (HELD_RECORD_PREFIX, RECORD_PREFIX)


class Relabeller:
    """Reads one record's pixels back and describes them again."""

    def __init__(
        self,
        settings: Settings,
        labeler: Labeler,
        catalog: Catalog,
        captioner: Captioner | None = None,
    ) -> None:
        self.settings = settings
        self.labeler = labeler
        self.captioner: Captioner = captioner if captioner is not None else NullCaptioner()
        self.catalog = catalog
        preset = settings.presets["label"]
        self.label_box = (preset.width, preset.height)
        # Decoding for the labelers' copy may shrink on load (JPEG draft) down to its box.
        self.label_spec = RenderSpec("jpeg", preset.width, preset.height, preset.fit, animate=False)

    def described(self, record: ImageRecord) -> ImageRecord:
        """``record`` with labels, caption, colours and hash made again from its largest variant.

        Raises LabelerUnavailable when the labeler or the captioner fails (the record is then
        left as it was).
        """
        largest = max(record.files(), key=lambda v: v.width * v.height)
        data = self.catalog.store.get(record.stored_key(largest.key))
        limits = processing.Limits(
            max_bytes=len(data),  # our own output: only its pixels' limits apply
            max_pixels=self.settings.max_pixels,
            max_side=self.settings.max_side,
            max_frames=self.settings.max_frames,
        )
        probed = processing.probe(data, limits)
        decoded = processing.decode(
            data,
            probed,
            specs=[self.label_spec],
            max_side=self.settings.max_output_side,
            keep_copyright=False,
        )
        appearance = processing.appearance(decoded)
        copy = processing.LabelImage.of(
            decoded, box=self.label_box, background=self.settings.background
        )
        caption = record.caption
        if self.captioner.name != "none":
            caption = self.captioner.caption(copy)
        result = None
        if self.labeler.name != "none":
            result = self.labeler.label(copy)
        if result is None:
            return dataclasses.replace(
                record, colours=appearance.colours, phash=appearance.phash, caption=caption
            )
        described = dataclasses.replace(
            record,
            caption=caption,
            labels=result.labels,
            label_status="ok" if result.labels else "empty",
            people=result.people,
            faces=result.faces,
            text=result.text,
            text_status=result.text_status,
            colours=appearance.colours,
            phash=appearance.phash,
        )
        return _kept_text(record, described)

    def relabel(self, key: str, *, unread_only: bool = False) -> bool:
        """Describe the record at ``key`` again (``unread_only``: only if something was not read
        at upload, ``ImageRecord.unread``); True when anything changed (and was written)."""
        image_id = key.removeprefix(HELD_RECORD_PREFIX).removeprefix(RECORD_PREFIX)
        try:
            old = self.catalog.get(image_id.removesuffix(".json"))
        except UnreadableRecord:
            raise  # the run names it and goes on
        except NotFound:
            return False  # deleted since it was listed
        if unread_only and not old.unread():
            return False
        new = self.described(old)
        if new == old:
            return False
        try:
            fresh = self.catalog.get(old.id)
        except NotFound:
            return False  # deleted while it was described
        if fresh.files() != old.files():
            # Re-cropped meanwhile (imaging/refocus.py): keep the files the record names now,
            # never the ones the re-crop deleted.
            new = dataclasses.replace(
                new, variants=fresh.variants, thumbnail=fresh.thumbnail, receipt=fresh.receipt
            )
            old = fresh
        self.catalog.update(old, new)
        return True


def _kept_text(old: ImageRecord, new: ImageRecord) -> ImageRecord:
    """``new``, with ``old``'s text (and its ``text`` label) when ``new``'s read did not happen
    but ``old``'s had: a relabel that could not read the words never loses the ones read."""
    if new.text_status not in TEXT_UNREAD:
        return new
    if old.text_status not in ("ok", "empty") and not old.text:
        return new  # never read: say so (the status) rather than guess
    kept = tuple(label for label in old.labels if label.description == "text")
    people = tuple(label for label in new.labels if label.description in ("person", "people"))
    rest = tuple(one for one in new.labels if one not in people and one.description != "text")
    return dataclasses.replace(
        new,
        labels=people + kept + rest,
        text=old.text,
        text_status=old.text_status if old.text_status in ("ok", "empty") else "ok",
    )


def record_keys(store: ObjectStore, after: str) -> Iterator[str]:
    """Every record key after ``after`` in the walking order, one listing call per 1000."""
    for prefix in PREFIXES:
        start = after if after.startswith(prefix) else ""
        if after and not start and after > prefix:
            continue  # the cursor is in a later prefix: this one is done
        while True:
            keys = store.list(prefix, start_after=start, limit=1000)
            if not keys or keys[-1] <= start:
                break
            yield from keys
            start = keys[-1]


def save_cursor(path: Path, key: str) -> None:
    """Write the cursor atomically: a kill never leaves half a key behind."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(key + "\n", "utf-8")
    os.replace(temp, path)


@click.command("relabel")
@click.option(
    "--cursor-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("relabel.cursor"),
    show_default=True,
    help="Where the run keeps the last record it finished, to resume from.",
)
@click.option("--restart", is_flag=True, help="Start from the newest record, ignoring the cursor.")
@click.option(
    "--unread",
    is_flag=True,
    help="Only the records whose labels or text were not read at upload (busy, timed out, failed).",
)
@with_appcontext
def relabel_command(cursor_file: Path, restart: bool, unread: bool) -> None:
    """Run the labeler, captioner, colours and perceptual hash again over every stored image."""
    svc = services_of(current_app)
    relabeller = Relabeller(svc.settings, svc.labeler, svc.catalog, svc.captioner)
    after = "" if restart or not cursor_file.exists() else cursor_file.read_text("utf-8").strip()
    keys = list(record_keys(svc.store, after))
    changed = unreadable = 0
    with click.progressbar(
        keys, label="relabel", file=sys.stderr, show_pos=True, show_eta=True
    ) as progress:
        for key in progress:
            try:
                changed += relabeller.relabel(key, unread_only=unread)
            except UnreadableRecord:
                unreadable += 1
                click.echo(f"\nskipped {key}: the record is damaged and cannot be read", err=True)
            except LabelerUnavailable as exc:
                click.echo(
                    f"\nstopped: the labeler or captioner failed ({exc}). Run again to resume.",
                    err=True,
                )
                raise SystemExit(1) from None
            except ImagingError as exc:
                if exc.status >= 500:
                    click.echo(f"\nstopped: {exc.public_message} Run again to resume.", err=True)
                    raise SystemExit(1) from None
                click.echo(f"\nskipped {key}: {exc.public_message}", err=True)
            save_cursor(cursor_file, key)
    click.echo(f"{changed} of {len(keys)} record(s) changed.")
    if unreadable:
        click.echo(f"{unreadable} unreadable record(s) skipped (named above); mend or delete them.")
    cursor_file.unlink(missing_ok=True)  # done: the next run starts from the newest again
