"""The content key's claim: which upload owns a set of bytes with a set of options.

A claim names the id its upload will commit under and the time it was claimed (the id's own
time). While that record does not exist the claim is pending: other uploads of the same bytes
wait for it; once it exists the claim *is* the duplicate index entry, and nothing rewrites it.
A pending claim older than a bound (its owner died) may be taken over, and ``Catalog.sweep``
removes one older than the grace period. A claim is only ever removed with ``delete_if_holds``,
so nobody removes a claim that another upload has taken over in the meantime.
"""

from __future__ import annotations

import builtins
import json
from datetime import UTC, datetime

from imaging.catalog.keys import HASH_PREFIX, id_time, is_valid_id


def claim_key(content_key: str) -> str:
    """The one key all uploads of the same bytes with the same options compete for."""
    return f"{HASH_PREFIX}{content_key}.json"


def claim_body(image_id: str) -> builtins.bytes:
    """What a claim holds: the owner's id and the claim time, which is the id's own time.

    A pure function of the id, so whoever knows the record can tell (and remove) its claim.
    """
    claimed_at = datetime.fromtimestamp(id_time(image_id), UTC).isoformat(timespec="milliseconds")
    return json.dumps({"claimed_at": claimed_at, "id": image_id}, sort_keys=True).encode()


def claim_owner(body: builtins.bytes) -> str | None:
    """The id a claim names (None when it is not a claim this module wrote)."""
    try:
        image_id = json.loads(body)["id"]
    except (ValueError, KeyError, TypeError):
        return None
    return image_id if isinstance(image_id, str) and is_valid_id(image_id) else None
