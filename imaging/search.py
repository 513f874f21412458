"""Search: the words each image is found by, an inverted index of them in the object store, and
the perceptual-hash bands that find near copies. No database, and no scan of the catalog.

The keys (empty markers, like the label index; only a public record has them)::

    idx/<word>/<id>               the record is found by ``word``
    phash/<band>/<value>/<id>     one 16-bit band (0-3) of the record's 64-bit dHash, as 4 hex

Ids sort newest first (``catalog.new_id``), so listing ``idx/<word>/`` gives that word's images
newest first and a cursor is the last id seen, exactly like the gallery's pages.

Words. ``words(text)`` is the one rule that turns text into index words, for a record's text
and for a query alike: Unicode-folded to lower case without accents, cut at anything that is not
a letter or digit, plurals trimmed (Harman's "S" stemmer: cats -> cat, puppies -> puppy), a few
common synonyms mapped to one word (kitten -> cat, gray -> grey), and a handful of filler words
dropped. A record's words come from every registered ``word_source``: its labels with their
vocabulary parents (tabby cat -> cat -> animal), its name, its colour names. A later feature
(detected text, a caption, people) adds its words by registering one more source; the index
itself does not change.

Query: several words mean all of them. One word's list drives: the shortest when one is short
enough to be listed whole, else the densest. Its ids are walked newest first and each is checked
against the other words' lists (listed a chunk at a time alongside, or past that by reading one
marker), and every match is confirmed against its record, which is
read anyway to show it (so a marker left behind by a crash or a relabel never shows a wrong
image, and a held-back record never appears). Results are newest first, not by score: a score
would need every match read before the first page (O(matches)); newest first pages with a plain
cursor and never shifts while new images arrive. One request walks at most ``MAX_SCAN`` ids of
the driving list; when that ends before a page is full, the page comes back short with a cursor
to go on from.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from imaging.errors import BadRequest, ObjectNotFound
from imaging.labeling.vocabulary import vocabulary
from imaging.processing import palette, phash

if TYPE_CHECKING:
    from imaging.catalog import Catalog, ImageRecord

INDEX_PREFIX, PHASH_PREFIX = "idx/", "phash/"
#: A query longer than this, or with more words, is refused (400), not cut silently.
MAX_QUERY_CHARS = 500
MAX_QUERY_WORDS = 8
#: A word is cut to this many characters (a key segment must stay under 255 bytes).
MAX_WORD_CHARS = 60
#: At most this many words per record: its markers are written with every upload.
MAX_RECORD_WORDS = 100
#: How many ids of the driving word's list one request walks at most, and per listing call.
MAX_SCAN = 5000
SCAN_CHUNK = 500
#: How many more listing calls a word's list may take to keep up with each chunk of the driver.
EXTEND_CALLS = 2
#: The hash is cut into this many bands of 16 bits; a near copy shares at least one of them.
BANDS = 4
#: Hamming distance (of 64 bits) up to which the detail page lists an image as similar (an
#: upload's near-copy warning uses NEAR_COPY_DISTANCE, a setting).
SIMILAR_DISTANCE = 12
#: Near copies also share their dominant colour: dHash reads only brightness differences, so a
#: flat red square and a flat blue one have the same hash. CIELAB distance.
NEAR_COPY_COLOUR = 25.0
#: How many ids one band's listing reads, and how many of those candidates' records are read
#: (the catalog's one wave of parallel reads).
BAND_CANDIDATES = 50
RECORDS_READ = 24
#: An upload's near-copy check reads its candidates in waves this size, most bands shared
#: first, and stops at the wave that finds as many near copies as the warning names: a burst of
#: look-alike uploads then costs each one a wave of reads, not RECORDS_READ (docs/benchmarks.md).
NEAR_COPY_WAVE = 6

#: Words that find nothing useful (in names and in queries alike).
FILLER = frozenset({"a", "an", "and", "the", "of", "in", "on", "with", "img", "image", "photo"})
#: Common words mapped to the one the index keeps: applied to records and queries alike.
SYNONYMS = {
    "kitten": "cat",
    "kitty": "cat",
    "puppy": "dog",
    "pup": "dog",
    "doggy": "dog",
    "people": "person",
    "human": "person",
    "automobile": "car",
    "gray": "grey",
    "colour": "color",
    "sofa": "couch",
    "bike": "bicycle",
    "plane": "airplane",
    "aeroplane": "airplane",
    "ocean": "sea",
}
_TOKEN = re.compile(r"[^\W_]+")
_EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,5}$")


def stem(token: str) -> str:
    """Harman's S stemmer (1991): only plural endings, so it never conflates unrelated words."""
    if len(token) <= 3:
        return token
    if token.endswith("ies") and not token.endswith(("eies", "aies")):
        return token[:-3] + "y"
    if token.endswith("es") and not token.endswith(("aes", "ees", "oes")):
        return token[:-1]
    if token.endswith("s") and not token.endswith(("us", "ss")):
        return token[:-1]
    return token


def words(text: str) -> list[str]:
    """The index words of ``text``, in order, each once (the one rule for records and queries)."""
    folded = unicodedata.normalize("NFKD", text.casefold())
    folded = "".join(c for c in folded if not unicodedata.combining(c))
    found: dict[str, None] = {}
    for token in _TOKEN.findall(folded):
        word = stem(token[:MAX_WORD_CHARS])
        word = SYNONYMS.get(word, word)
        if word not in FILLER:
            found[word] = None
    return list(found)


# -- where a record's words come from --------------------------------------------------------
WordSource = Callable[["ImageRecord"], Iterable[str]]
#: Every source of a record's searchable text, by name; ``word_source`` adds one.
WORD_SOURCES: dict[str, WordSource] = {}


def word_source(name: str) -> Callable[[WordSource], WordSource]:
    """Register a function giving a record's searchable text (phrases; ``words`` splits them)."""

    def register(source: WordSource) -> WordSource:
        WORD_SOURCES[name] = source
        return source

    return register


@functools.cache
def _parents() -> dict[str, tuple[str, ...]]:
    """Every vocabulary word (class name or parent) -> the words above it, nearest first."""
    above: dict[str, tuple[str, ...]] = {}
    for entry in vocabulary().classes:
        chain = (entry.name, *entry.parents)
        for i, word in enumerate(chain):
            above.setdefault(word, chain[i + 1 :])
    return above


def parents(description: str) -> tuple[str, ...]:
    """The vocabulary's words above a label (``"Tabby cat"`` -> cat, animal); () if unknown."""
    return _parents().get(description.strip().lower(), ())


@word_source("labels")
def _label_text(record: ImageRecord) -> Iterable[str]:
    for label in record.labels:
        yield label.description
        yield from parents(label.description)


@word_source("name")
def _name_text(record: ImageRecord) -> Iterable[str]:
    yield _EXTENSION.sub("", record.name)


@word_source("colours")
def _colour_text(record: ImageRecord) -> Iterable[str]:
    for swatch in record.colours:
        yield swatch.name


@word_source("caption")
def _caption_text(record: ImageRecord) -> Iterable[str]:
    """The captioner's sentence (CAPTIONER): a person's words for the picture."""
    yield record.caption


@word_source("text")
def _picture_text(record: ImageRecord) -> Iterable[str]:
    """The words read in the picture (OCR or Vision): after the others, so the cap trims these."""
    yield record.text


def record_words(record: ImageRecord) -> list[str]:
    """Every word ``record`` is found by (at most MAX_RECORD_WORDS, sources in order)."""
    found: dict[str, None] = {}
    for source in WORD_SOURCES.values():
        for text in source(record):
            found.update(dict.fromkeys(words(text)))
    return list(found)[:MAX_RECORD_WORDS]


# -- the keys ---------------------------------------------------------------------------------
def index_keys(record: ImageRecord) -> list[str]:
    """The search markers of a public record: its words, then its hash bands."""
    keys = [f"{INDEX_PREFIX}{word}/{record.id}" for word in record_words(record)]
    if phash.is_hash(record.phash):
        keys += [f"{prefix}{record.id}" for prefix in band_prefixes(record.phash)]
    return keys


def band_prefixes(value: str) -> list[str]:
    """``phash/<band>/<4 hex>/`` for each of the hash's bands."""
    return [f"{PHASH_PREFIX}{band}/{value[4 * band : 4 * band + 4]}/" for band in range(BANDS)]


def parse_query(query: str) -> list[str]:
    """The words of a query; a 400 when it is too long to be one."""
    if len(query) > MAX_QUERY_CHARS:
        raise BadRequest(f"A search is at most {MAX_QUERY_CHARS} characters.")
    terms = words(query)
    if len(terms) > MAX_QUERY_WORDS:
        raise BadRequest(f"A search has at most {MAX_QUERY_WORDS} words.")
    return terms


# -- asking the index -------------------------------------------------------------------------
@dataclass(frozen=True)
class Results:
    records: list[ImageRecord]
    next_cursor: str | None


@dataclass
class _Listing:
    """What is known of one word's list: the ids seen, and whether that is all of it."""

    prefix: str
    ids: list[str]
    complete: bool

    def covers(self, image_id: str) -> bool:
        # Ids ascend along a list: one at or before the last seen is known present or absent.
        return self.complete or (bool(self.ids) and image_id <= self.ids[-1])


class Search:
    """Queries over the index markers one catalog's store holds."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.store = catalog.store

    def find(self, query: str, *, cursor: str | None = None, limit: int = 24) -> Results:
        """Public images found by every word of ``query``, newest first, after ``cursor``."""
        terms = parse_query(query)
        if not terms:
            return Results([], None)
        if cursor is not None and not self.catalog.is_id(cursor):
            cursor = None
        first = limit + 1 if len(terms) == 1 else SCAN_CHUNK
        listings = list(self.catalog.map(lambda w: self._listing(w, cursor, first), terms))
        driver = _driver(listings)
        others = [listing for listing in listings if listing is not driver]
        matches: list[str] = []
        scanned = 0
        chunk, complete = driver.ids, driver.complete
        last = cursor
        while True:
            if chunk:
                self.catalog.map(functools.partial(self._extend, upto=chunk[-1]), others)
            for image_id in self._all_present(chunk, others):
                matches.append(image_id)
            scanned += len(chunk)
            if chunk:
                last = chunk[-1]
            if len(matches) > limit or complete or scanned >= MAX_SCAN:
                break
            more = self._listing_after(driver.prefix, last, SCAN_CHUNK)
            chunk, complete = more.ids, more.complete
        records = self._confirmed(matches[:limit], terms)
        if len(matches) > limit:
            next_cursor: str | None = matches[limit - 1]
        elif not complete and last is not None:
            next_cursor = last  # the walk stopped at MAX_SCAN: go on from where it stopped
        else:
            next_cursor = None
        return Results(records, next_cursor)

    def near_copies(
        self, value: str, colours: tuple[palette.Swatch, ...], *, distance: int, limit: int
    ) -> list[ImageRecord]:
        """Up to ``limit`` public images whose hash is within ``distance`` bits of ``value`` and
        whose dominant colour matches: what an upload warns about. Closest first among the
        candidates read, which come in waves of NEAR_COPY_WAVE (the most bands shared first)
        until ``limit`` are found or RECORDS_READ were read."""
        found: list[tuple[int, str, ImageRecord]] = []
        ids = self._candidates(value, exclude="")
        for start in range(0, len(ids), NEAR_COPY_WAVE):
            wave = self._close(value, ids[start : start + NEAR_COPY_WAVE], distance)
            found += [c for c in wave if _same_main_colour(c[2].colours, colours)]
            if len(found) >= limit:
                break
        return [r for _, _, r in sorted(found, key=lambda c: c[:2])[:limit]]

    def similar(self, record: ImageRecord, limit: int = 8) -> list[ImageRecord]:
        """Public images that look like ``record``: its hash within SIMILAR_DISTANCE."""
        if not phash.is_hash(record.phash):
            return []
        return self._by_hash(record.phash, SIMILAR_DISTANCE, exclude=record.id)[:limit]

    # -- within ----------------------------------------------------------------------------
    def _listing(self, word: str, cursor: str | None, limit: int) -> _Listing:
        return self._listing_after(f"{INDEX_PREFIX}{word}/", cursor, limit)

    def _listing_after(self, prefix: str, after: str | None, limit: int) -> _Listing:
        start = f"{prefix}{after}" if after else ""
        keys = self.store.list(prefix, start_after=start, limit=limit)
        return _Listing(prefix, [k[len(prefix) :] for k in keys], len(keys) < limit)

    def _extend(self, listing: _Listing, upto: str) -> None:
        """List on (at most EXTEND_CALLS calls) until ``listing`` covers ids up to ``upto``.

        One listing call answers for up to SCAN_CHUNK ids; past that, markers are read one by
        one (in parallel), which is cheaper where the lists are far apart.
        """
        for _ in range(EXTEND_CALLS):
            if listing.covers(upto):
                return
            more = self._listing_after(listing.prefix, listing.ids[-1], SCAN_CHUNK)
            listing.ids += more.ids
            listing.complete = more.complete

    def _all_present(self, ids: list[str], others: list[_Listing]) -> list[str]:
        """The ids of ``ids`` every other word's list holds (reading a marker when not known)."""
        known = [set(other.ids) for other in others]

        def present(image_id: str) -> bool:
            for other, seen in zip(others, known, strict=True):
                if image_id in seen:
                    continue
                if other.covers(image_id) or not self._exists(f"{other.prefix}{image_id}"):
                    return False
            return True

        return [i for i, ok in zip(ids, self.catalog.map(present, ids), strict=True) if ok]

    def _exists(self, key: str) -> bool:
        try:
            self.store.get(key)
        except ObjectNotFound:
            return False
        return True

    def _confirmed(self, ids: list[str], terms: list[str]) -> list[ImageRecord]:
        """The public records of ``ids`` that really have every word (the record decides)."""
        wanted = set(terms)
        return [
            r
            for r in self.catalog.public_records(ids)
            if r is not None and wanted <= set(record_words(r))
        ]

    def _by_hash(self, value: str, distance: int, *, exclude: str) -> list[ImageRecord]:
        close = self._close(value, self._candidates(value, exclude=exclude), distance)
        return [r for _, _, r in close]

    def _candidates(self, value: str, *, exclude: str) -> list[str]:
        """The ids sharing a band with ``value``, the most bands shared first, RECORDS_READ at
        most (a common hash, a flat image's, fills every band)."""
        prefixes = band_prefixes(value)
        listed = self.catalog.map(lambda p: self.store.list(p, limit=BAND_CANDIDATES), prefixes)
        shared = Counter(k.rsplit("/", 1)[-1] for keys in listed for k in keys)
        shared.pop(exclude, None)
        # The more bands a candidate shares, the closer it is likely to be: those are read first.
        return sorted(shared, key=lambda i: (-shared[i], i))[:RECORDS_READ]

    def _close(
        self, value: str, ids: list[str], distance: int
    ) -> list[tuple[int, str, ImageRecord]]:
        """(distance, id, record) of the public records of ``ids`` (read in parallel) within
        ``distance`` of ``value``, closest first."""
        close = [
            (phash.distance(value, r.phash), r.id, r)
            for r in self.catalog.public_records(ids)
            if r is not None and phash.is_hash(r.phash)
        ]
        return [c for c in sorted(close, key=lambda c: c[:2]) if c[0] <= distance]


def _driver(listings: list[_Listing]) -> _Listing:
    """The list to walk: the shortest one listed whole, else the densest (the one whose first
    listing ends soonest), so the others' first listings already cover most of its walk."""
    whole = [listing for listing in listings if listing.complete]
    if whole:
        return min(whole, key=lambda listing: len(listing.ids))
    return min(listings, key=lambda listing: listing.ids[-1])


def _same_main_colour(a: tuple[palette.Swatch, ...], b: tuple[palette.Swatch, ...]) -> bool:
    if not a or not b:
        return True  # a record from before colours: the hash alone decides
    return palette.colour_distance(a[0].hex, b[0].hex) <= NEAR_COPY_COLOUR
