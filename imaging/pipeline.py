"""ingest(): THE path every upload takes, whatever door it came through, as five steps.

1. probe: sniff the real format from the bytes and check every limit on the header alone;
2. dedupe: claim the content key (same bytes, same options) create-only for a new id; if another
   upload holds it, wait for that upload's record and answer with it (``duplicate``);
3. render: decode once, then every requested format and the gallery thumbnail, under a conversion
   slot, while the labeler reads a small copy beside the encodes; the dominant colours and the
   perceptual hash come from one 32 px copy (an upload that looks like a stored image says so);
4. store: write the variants, create-only (under ``held/`` when SafeSearch holds the image back),
   and, when a cover output was cropped, the upload's own bytes under a private ``src/`` key, so
   the owner can move the focal point later (imaging/refocus.py);
5. commit: save the record LAST. If anything fails after the claim, the claim is released and
   every object a write was tried for is removed, best effort and briefly (``flask gc`` sweeps
   what that misses), and the caller gets a clear error; a record never points at a missing
   object.

All of it runs within one deadline (UPLOAD_DEADLINE), from the moment ingest starts: every store
call gets the time left, and the clean-up after a failure gets CLEANUP_SECONDS more, one attempt
per call. The catalog lays out the record and its keys; this module decides only what happens
in which order.
"""

from __future__ import annotations

import contextvars
import dataclasses
import hashlib
import json
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, NoReturn

from imaging import observability, processing, storage
from imaging.catalog import (
    Catalog,
    ImageRecord,
    id_time,
    new_delete_key,
    new_id,
    new_record,
    source_key,
)
from imaging.config import Settings
from imaging.errors import (
    BadRequest,
    Busy,
    ImagingError,
    LabelerUnavailable,
    NotFound,
    StorageUnavailable,
    UnreadableRecord,
)
from imaging.formats import OUTPUT_FORMATS
from imaging.labeling import FindsFaces, Labeler, LabelResult, ReadsText
from imaging.labeling.caption import Captioner, NullCaptioner
from imaging.processing import Focus, LabelImage, Limits, Probe, RenderSpec, Rendition
from imaging.processing import parse_fit as parse_fit  # the option readers' one fit rule
from imaging.search import Search
from imaging.storage import IMMUTABLE_CACHE_CONTROL, ObjectStore

log = logging.getLogger(__name__)

FIT_MODES = processing.FIT_MODES
QUALITY_RANGE = (1, 100)
LIKELIHOODS = ("UNKNOWN", "VERY_UNLIKELY", "UNLIKELY", "POSSIBLE", "LIKELY", "VERY_LIKELY")
#: What the clean-up after a failed upload may take in all (one attempt per call): enough on a
#: healthy store, and short in an outage, when ``flask gc`` removes what it could not.
CLEANUP_SECONDS = 2.0
#: How often an upload looks whether the upload holding its content key has committed: the
#: first look soon (most conversions take well under a second), then less and less often.
CLAIM_POLL = (0.05, 0.5)  # first wait, longest wait (seconds)
#: How many near copies an upload's warnings name at most (the look stops once it has found them).
NEAR_COPIES_NAMED = 3
NOTHING_SAVED = "Storage is unavailable; nothing was saved. Please retry shortly."


@dataclass(frozen=True)
class UploadOptions:
    """What the uploader asked for. Limits are never options: they come from Settings."""

    formats: tuple[str, ...]
    width: int | None = None
    height: int | None = None
    fit: str = "contain"
    quality: int | None = None
    lossless: bool = False
    name: str = ""
    focus: tuple[float, float] | None = None  # the owner's focal point (x, y in 0..1)

    def content_key(self, data: bytes) -> str:
        """Same bytes + same conversion options = same key (the name does not matter)."""
        digest = hashlib.sha256(data)
        options = [list(self.formats), self.width, self.height, self.fit, self.quality]
        # A focal point joins the key only when given: keys made before it stay the same.
        focus = [list(self.focus)] if self.focus is not None else []
        digest.update(json.dumps([*options, self.lossless, *focus]).encode())
        return digest.hexdigest()

    def recipe(self) -> dict[str, Any]:
        """What a re-crop needs of these options besides the formats (the record's variants)."""
        keep = ("width", "height", "fit", "quality", "lossless")
        return {name: getattr(self, name) for name in keep}

    @classmethod
    def from_recipe(cls, formats: tuple[str, ...], recipe: dict[str, Any]) -> UploadOptions:
        """The options ``recipe`` (``UploadOptions.recipe``) was made of, for ``formats``."""
        return cls(
            formats=formats,
            width=recipe.get("width"),
            height=recipe.get("height"),
            fit=str(recipe.get("fit", "contain")),
            quality=recipe.get("quality"),
            lossless=bool(recipe.get("lossless", False)),
        )


@dataclass(frozen=True)
class IngestResult:
    record: ImageRecord
    duplicate: bool = False
    delete_key: str | None = None  # shown to the uploader once; only its hash is stored
    renditions: dict[str, Rendition] = field(default_factory=dict)


@dataclass(frozen=True)
class Rendered:
    """What the render step hands on: the variants' bytes, and what the catalog records of them."""

    renditions: dict[str, Rendition]  # variant name -> bytes; "thumb" is the gallery thumbnail
    conversion: dict[str, Any]  # what decoding did: the receipt's first half
    warnings: list[str]
    labels: LabelResult
    label_status: str  # ok | empty | error | off
    appearance: processing.Appearance  # dominant colours and perceptual hash
    thumbhash: str = ""  # the gallery's placeholder
    camera: dict[str, Any] = field(default_factory=dict)  # what the camera recorded (no GPS)
    caption: str = ""  # the captioner's sentence, cleaned; "" when off or failed


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        store: ObjectStore,
        labeler: Labeler,
        catalog: Catalog,
        captioner: Captioner | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.labeler = labeler
        self.captioner: Captioner = captioner if captioner is not None else NullCaptioner()
        self.catalog = catalog
        self.search = Search(catalog)
        self.limits = Limits(
            max_bytes=settings.max_upload_bytes,
            max_pixels=settings.max_pixels,
            max_side=settings.max_side,
            max_frames=settings.max_frames,
        )
        # The CPU-bound work (decode + encode) runs in at most `slots` threads per process, so
        # extra requests queue here instead of oversubscribing the cores.
        self._slots = threading.BoundedSemaphore(settings.slots)
        # The variants' downscale: libvips' when asked for and it loads (else one log line).
        vips = settings.resampler == "vips" and processing.libvips_available()
        self._resample = "lanczos3" if vips else "lanczos"
        self._label_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="label")
        # Apart from the labels' pool: a caption waits on the network, labels on the CPU.
        self._caption_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="caption")
        self._write_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="store")
        # A pending claim older than this has an owner that can no longer write: every store
        # call of its upload ended by its deadline, and its clean-up soon after.
        self.claim_stale_after = 2 * settings.upload_deadline + CLEANUP_SECONDS

    def ingest(
        self, data: bytes, options: UploadOptions, *, max_bytes: int | None = None
    ) -> IngestResult:
        """Convert, label, store and catalog one upload; return its committed record.

        ``max_bytes`` raises the file-size limit for doors that bypass the request cap
        (direct uploads); every other limit stays the configured one.
        """
        try:
            result = self._ingest(data, options, max_bytes)
        except ImagingError as exc:
            observability.count_upload(exc.code)
            raise
        except Exception:
            observability.count_upload("internal")
            raise
        observability.record_upload(result.record, duplicate=result.duplicate)
        return result

    def conversion_slot(self) -> Slot:
        """One of the process's conversion slots, held for a ``with`` block (503 when busy)."""
        return Slot(self._slots, self.settings.conversion_wait)

    def _ingest(self, data: bytes, options: UploadOptions, max_bytes: int | None) -> IngestResult:
        with storage.within(self.settings.upload_deadline):
            probed = self._probe(data, max_bytes)
            content_key = options.content_key(data)
            image_id = new_id()
            existing = observability.traced("dedupe", self._dedupe)(content_key, image_id)
            if existing is not None:
                return IngestResult(existing, duplicate=True)
            written: list[str] = []  # every key a write was tried for (it may have landed)
            try:
                rendered = self._render(data, probed, options)
                delete_key = new_delete_key()
                record = new_record(
                    probed,
                    rendered.renditions,
                    labels=rendered.labels,
                    label_status=rendered.label_status,
                    hidden=self._held_back(rendered.labels),
                    name=options.name,
                    content_key=content_key,
                    delete_key=delete_key,
                    conversion=rendered.conversion,
                    warnings=[*rendered.warnings, *self._near_copy_warnings(rendered.appearance)],
                    image_id=image_id,
                    thumbhash=rendered.thumbhash,
                    camera=rendered.camera,
                    appearance=rendered.appearance,
                    caption=rendered.caption,
                )
                if "crop" in rendered.conversion:  # a cover output was cut: keep the original
                    original = {"key": source_key(image_id), "bytes": len(data)}
                    original["options"] = options.recipe()
                    record = dataclasses.replace(record, original=original)
                observability.traced("store", self._store)(
                    record, rendered.renditions, written, original=data
                )
                observability.traced("commit", self._commit)(record, written)
            except BaseException:
                self._abandon(content_key, image_id, written)
                raise
        return IngestResult(record, delete_key=delete_key, renditions=rendered.renditions)

    # -- the five steps --------------------------------------------------------------------
    def _probe(self, data: bytes, max_bytes: int | None) -> Probe:
        """The real format and size, read from the header, checked against every limit."""
        limits = self.limits
        if max_bytes is not None:
            limits = dataclasses.replace(limits, max_bytes=max_bytes)
        return processing.probe(data, limits)

    def _dedupe(self, content_key: str, image_id: str) -> ImageRecord | None:
        """Claim ``content_key`` for ``image_id`` (None), or the record another upload made of it.

        Create-only, so of any number of identical uploads at once exactly one wins; the others
        wait (with backoff, within the deadline) for its record. A claim whose upload failed is
        released, and one whose owner died is taken over once it is ``claim_stale_after`` old.
        """
        wait = CLAIM_POLL[0]
        try:
            while True:
                holder = self.catalog.claimant(content_key)
                if holder is None:
                    if self.catalog.claim(content_key, image_id):
                        return None
                    # Another upload claimed it between our look and our write (or the claim
                    # is unreadable: then gc removes it); look again, not at once.
                    time.sleep(wait)
                    continue
                try:
                    return self.catalog.get(holder)
                except UnreadableRecord:
                    # Committed but damaged: no upload is in flight to wait for. Take the claim
                    # over, so these bytes are saved anew (the damaged record is left as it is).
                    self.catalog.release(content_key, holder)
                    continue
                except NotFound:
                    pass  # not (or not yet) committed
                if time.time() - id_time(holder) > self.claim_stale_after:
                    log.warning("taking over the stale claim of %s on %s", holder, content_key)
                    self.catalog.release(content_key, holder)
                    continue
                deadline = storage.current_deadline()
                if deadline is not None and deadline.remaining() <= wait:
                    raise Busy(
                        "The same image is still being saved by another upload. "
                        "Please retry in a few seconds.",
                        detail=f"{holder} holds {content_key} past this upload's deadline",
                        retry_after=5,
                    )
                time.sleep(wait)
                wait = min(wait * 2, CLAIM_POLL[1])
        except BaseException as exc:
            _raise_as_storage_error(exc)

    def _render(self, data: bytes, probed: Probe, options: UploadOptions) -> Rendered:
        """Every requested format plus the thumbnail, with the labels found meanwhile."""
        specs = self._specs(options)
        with self.conversion_slot(), observability.converting(probed.format):
            # LABEL_TIMEOUT and CAPTION_TIMEOUT count from here, not from before the wait for
            # the slot (CONVERSION_WAIT has its own bound): a long wait must not spend the time
            # the text reader was promised (OCR_TIMEOUT < LABEL_TIMEOUT).
            started = time.monotonic()
            source = self._decode(data, probed, specs)
            decoded = self._shared_fit(source, specs)
            label_copy = self._label_copy(decoded, source)
            if label_copy is not None:
                label_copy.deadline = started + self.settings.label_timeout
            specs, framing = self._frame(decoded, specs, options, label_copy)
            labelling = self._start_labelling(label_copy)
            captioning = self._start_captioning(label_copy)
            appearance = processing.appearance(decoded)
            # A traced format first: when it refuses the picture (a photo as SVG), no other
            # output was encoded for nothing. The record keeps the order asked for.
            first = sorted(
                specs, key=lambda n: OUTPUT_FORMATS[specs[n].format].renderer == "pillow"
            )
            done = {name: self._encode(decoded, specs[name]) for name in first}
            renditions = {name: done[name] for name in specs}
            conversion = decoded.receipt()
            if framing is not None:
                conversion["crop"] = framing.method
                if options.focus is not None:
                    conversion["focus"] = list(options.focus)
            warnings = list(decoded.warnings)
            thumbhash, camera = processing.thumbhash(decoded), decoded.camera.as_dict()
            # The full-size pixels are the biggest thing we hold: free them now (a text read
            # still under way holds the decode through its own copy's reference).
            del decoded, source, label_copy
        warnings += [r.warning for r in renditions.values() if r.warning]
        labels, label_status = self._collect_labels(labelling, started)
        caption = self._collect_caption(captioning, started)
        return Rendered(
            renditions,
            conversion,
            warnings,
            labels,
            label_status,
            appearance,
            thumbhash,
            camera,
            caption,
        )

    def _near_copy_warnings(self, appearance: processing.Appearance) -> list[str]:
        """Say so when the upload looks like an image already in the gallery (search.py)."""
        distance = self.settings.near_copy_distance
        if not distance:
            return []
        near = self.search.near_copies(
            appearance.phash, appearance.colours, distance=distance, limit=NEAR_COPIES_NAMED
        )
        return [f"This image looks like a near copy of image {r.id}." for r in near]

    def _store(
        self,
        record: ImageRecord,
        renditions: dict[str, Rendition],
        written: list[str],
        *,
        original: bytes = b"",
    ) -> None:
        """Write every variant create-only, in parallel, each key added to ``written`` first;
        and ``original`` (the upload's bytes) too when the record keeps it (a private key)."""
        lock = threading.Lock()

        def put(key: str, data: bytes, mime: str, cache_control: str | None) -> None:
            with lock:
                written.append(key)
            self.store.put(key, data, content_type=mime, cache_control=cache_control)

        # A held-back record's files go to held/ (catalog/index.py): never public, not even briefly.
        # Each write runs in a copy of our context: within the upload's deadline.
        files: list[tuple[str, bytes, str, str | None]] = [
            (record.stored_key(v.key), r.data, r.mime, IMMUTABLE_CACHE_CONTROL)
            for v in record.files()
            for r in (renditions[v.name],)
        ]
        files += [(key, original, "application/octet-stream", None) for key in record.source_keys()]
        futures = [
            self._write_pool.submit(contextvars.copy_context().run, put, key, data, mime, cache)
            for key, data, mime, cache in files
        ]
        errors = [f.exception() for f in futures]  # wait for all: none may land after clean-up
        first = next((e for e in errors if e is not None), None)
        if first is not None:
            _raise_as_storage_error(first)

    def _commit(self, record: ImageRecord, written: list[str]) -> None:
        """Save the markers and the record LAST, each key added to ``written`` as it is tried.

        A failed write may still have landed (a lost response on GCS, a sidecar that a full
        disk refused after the link), and the caller is told nothing was saved, so the
        clean-up removes every key tried, the record's too: nothing may stay listed.
        """
        try:
            self.catalog.save(record, written=written)
        except BaseException as exc:
            _raise_as_storage_error(exc)

    def _abandon(self, content_key: str, image_id: str, written: list[str]) -> None:
        """After a failure: release the claim (first: waiting uploads may go on), then remove
        what was written. Best effort within CLEANUP_SECONDS, one attempt per call; what is
        left has no record, so nothing shows it, and ``flask gc`` sweeps it."""
        with storage.within(CLEANUP_SECONDS, retries=False):
            try:
                self.catalog.release(content_key, image_id)
            except Exception as exc:
                log.warning("could not release the claim of %s: %s", image_id, exc)
            self.catalog.discard(written)

    # -- within the steps ------------------------------------------------------------------
    def _specs(self, options: UploadOptions) -> dict[str, RenderSpec]:
        if not options.formats:
            raise BadRequest("Ask for at least one output format.")
        fit = parse_fit(options.fit)
        specs = {
            fmt: RenderSpec(
                format=fmt,
                width=options.width,
                height=options.height,
                fit=fit,
                quality=options.quality if OUTPUT_FORMATS[fmt].default_quality else None,
                lossless=options.lossless and fmt == "webp",
                effort=self.settings.encoder_effort,
                resample=self._resample,
            )
            for fmt in options.formats
        }
        # The gallery's 480 px copy, mostly resampled from the output's own pixels: bilinear
        # costs a third of Lanczos there (16.8 -> 5.3 ms at 2 MP) at SSIM 0.99 to it.
        thumb = self._preset_spec("thumb", "webp")
        specs["thumb"] = dataclasses.replace(thumb, resample="bilinear")
        return specs

    def _preset_spec(self, preset: str, fmt: str) -> RenderSpec:
        p = self.settings.presets[preset]
        return RenderSpec(format=fmt, width=p.width, height=p.height, fit=p.fit, animate=False)

    def _decode(
        self, data: bytes, probed: Probe, specs: dict[str, RenderSpec]
    ) -> processing.Decoded:
        return observability.traced("decode", processing.decode)(
            data,
            probed,
            specs=list(specs.values()),
            max_side=self.settings.max_output_side,
            keep_copyright=self.settings.keep_copyright,
            libvips=self._resample == "lanczos3",
        )

    def _shared_fit(
        self, decoded: processing.Decoded, specs: dict[str, RenderSpec]
    ) -> processing.Decoded:
        """When every requested output has the same size: ``decoded`` resampled to it once, to
        render all of them from; the thumbnail and the label copy then resample the output's
        pixels, not the full decode (when the output is at least the thumbnail's size)."""
        return processing.shared_fit(
            decoded,
            [spec for name, spec in specs.items() if name != "thumb"],
            derived=[specs["thumb"]],
            max_side=self.settings.max_output_side,
        )

    def _label_copy(
        self, decoded: processing.Decoded, source: processing.Decoded
    ) -> processing.LabelImage | None:
        """The labelers' small copy (None when nobody reads it): the decoded pixels
        box-reduced (no JPEG round trip); each reader makes the form it needs (pixels, a JPEG)
        from it in its own thread, once for all of them; the text reader reads ``source``, the
        decode itself."""
        if self.labeler.name == "none" and self.captioner.name == "none":
            return None
        preset = self.settings.presets["label"]
        return processing.LabelImage.of(
            decoded,
            box=(preset.width, preset.height),
            background=self.settings.background,
            source=source,
        )

    def _frame(
        self,
        decoded: processing.Decoded,
        specs: dict[str, RenderSpec],
        options: UploadOptions,
        label_copy: LabelImage | None,
    ) -> tuple[dict[str, RenderSpec], processing.Framing | None]:
        """Where each cover output's crop window goes (``processing.frame``): the owner's
        focus, else the faces on the labelers' copy, else the salient part, else the centre.

        Faces are looked for only when a crop cuts something and no focus was given: detected
        here, before the encodes, on the copy the labeler then reads them from (never twice).
        """
        max_side = self.settings.max_output_side
        smart = self.settings.smart_crop == "on"
        focus = Focus(*options.focus) if options.focus is not None else None
        faces: tuple[Focus, ...] = ()
        finder = self.labeler if isinstance(self.labeler, FindsFaces) else None
        if (
            smart
            and focus is None
            and finder is not None
            and label_copy is not None
            and processing.cropping(decoded, list(specs.values()), max_side=max_side)
        ):
            try:
                boxes = observability.traced("faces", finder.faces_in)(label_copy)
            except LabelerUnavailable as exc:  # the crop falls back to saliency
                log.warning("smart crop: no faces: %s", exc)
                boxes = ()
            except Exception:  # a detector bug must not cost the user their upload either
                log.exception("smart crop: the face detector raised unexpectedly")
                boxes = ()
            faces = tuple(Focus(b.left, b.top, b.width, b.height) for b in boxes)
        return processing.frame(
            decoded, specs, max_side=max_side, focus=focus, faces=faces, smart=smart
        )

    def _start_labelling(
        self, label_copy: processing.LabelImage | None
    ) -> Future[LabelResult] | None:
        """Label the small copy while the variants encode: labels cost no extra latency."""
        if self.labeler.name == "none" or label_copy is None:
            return None
        return self._label_pool.submit(observability.timed_label(self.labeler), label_copy)

    def _start_captioning(self, label_copy: processing.LabelImage | None) -> Future[str] | None:
        """Caption the same copy beside the labeler (CAPTIONER; off by default)."""
        if self.captioner.name == "none" or label_copy is None:
            return None
        return self._caption_pool.submit(observability.timed_caption(self.captioner), label_copy)

    def _encode(self, decoded: processing.Decoded, spec: RenderSpec) -> Rendition:
        return observability.traced("encode", processing.render, format=spec.format)(
            decoded,
            spec,
            max_side=self.settings.max_output_side,
            background=self.settings.background,
            tracing=processing.TraceLimits(
                max_side=self.settings.svg_trace_side, max_bytes=self.settings.svg_max_kb * 1024
            ),
        )

    def _collect_labels(
        self, future: Future[LabelResult] | None, started: float
    ) -> tuple[LabelResult, str]:
        """The labels and the label status; a labeler that failed as a whole leaves a result
        whose ``text_status`` says the text was not read either (when it reads text)."""
        if future is None:
            return LabelResult(), "off"
        remaining = max(0.0, self.settings.label_timeout - (time.monotonic() - started))
        reads_text = isinstance(self.labeler, ReadsText) and self.labeler.reads_text
        failed = LabelResult(text_status="failed" if reads_text else "off")
        try:
            result = future.result(timeout=remaining)
        except FutureTimeout:
            future.cancel()
            log.warning("labeler %s timed out after %.1fs", self.labeler.name, remaining)
            return failed, "error"
        except LabelerUnavailable as exc:
            log.warning("labeler %s failed: %s", self.labeler.name, exc)
            return failed, "error"
        except Exception:  # a labeler bug must not cost the user their upload
            log.exception("labeler %s raised unexpectedly", self.labeler.name)
            return failed, "error"
        return result, ("ok" if result.labels else "empty")

    def _collect_caption(self, future: Future[str] | None, started: float) -> str:
        """The caption, or "" when off, failed or later than CAPTION_TIMEOUT: never an error."""
        if future is None:
            return ""
        remaining = max(0.0, self.settings.caption_timeout - (time.monotonic() - started))
        try:
            return future.result(timeout=remaining)
        except FutureTimeout:
            future.cancel()  # a call under way ends by the client's own timeout
            log.warning("captioner %s timed out after %.1fs", self.captioner.name, remaining)
        except LabelerUnavailable as exc:
            log.warning("captioner %s failed: %s", self.captioner.name, exc)
        except Exception:  # a captioner bug must not cost the user their upload
            log.exception("captioner %s raised unexpectedly", self.captioner.name)
        return ""

    def _held_back(self, result: LabelResult) -> bool:
        threshold = self.settings.safe_search_hide
        if not threshold or not result.safe_search:
            return False
        level = LIKELIHOODS.index(threshold)
        return any(
            LIKELIHOODS.index(result.safe_search.get(category, "UNKNOWN")) >= level
            for category in ("adult", "violence", "racy")
            if result.safe_search.get(category, "UNKNOWN") in LIKELIHOODS
        )


class Slot:
    """A conversion slot: waits up to ``wait`` seconds, then refuses with 503 Retry-After."""

    def __init__(self, semaphore: threading.BoundedSemaphore, wait: float) -> None:
        self._semaphore = semaphore
        self._wait = wait

    def __enter__(self) -> None:
        if not self._semaphore.acquire(timeout=self._wait):
            raise Busy(
                "Every conversion slot is busy. Please retry in a few seconds.", retry_after=5
            )

    def __exit__(self, *exc: object) -> None:
        self._semaphore.release()


def _raise_as_storage_error(exc: BaseException) -> NoReturn:
    """Raise ``exc`` as what the uploader must hear: a storage failure (ours or a raw one) as
    StorageUnavailable saying that nothing was saved, any other error of ours as it is."""
    if isinstance(exc, StorageUnavailable):
        if exc.public_message == NOTHING_SAVED:
            raise exc
        raise type(exc)(NOTHING_SAVED, detail=exc.detail, retry_after=exc.retry_after) from exc
    if isinstance(exc, ImagingError) or not isinstance(exc, Exception):
        raise exc
    raise StorageUnavailable(NOTHING_SAVED, detail=f"{type(exc).__name__}: {exc}") from exc


def _shared_box(specs: list[RenderSpec]) -> tuple[int, int] | None:
    """The one box every output fits into, when all are ``contain`` fits with a box."""
    if not specs or any(s.fit != "contain" or s.upscale for s in specs):
        return None
    if any(s.width is None and s.height is None for s in specs):
        return None  # a full-size output needs the full pixels
    big = 1 << 30  # a missing side does not constrain
    return (
        max(s.width or big for s in specs),
        max(s.height or big for s in specs),
    )
