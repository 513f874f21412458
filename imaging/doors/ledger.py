"""The idempotency ledger: what each object generation became, so no delivery converts twice.

``evt/<bucket>/<sha256(name)>/<generation>`` is written create-only with the outcome (the record
id, or why the object was refused), so a redelivered event or a re-run backfill never makes a
second record, and a short-lived claim beside it stops two concurrent workers converting the same
object at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from dataclasses import dataclass

from imaging.catalog import EVENT_PREFIX
from imaging.doors.sources import ObjectRef
from imaging.errors import ObjectExists, ObjectNotFound
from imaging.storage import ObjectStore

log = logging.getLogger(__name__)

#: A claim older than this is taken to be a crashed worker's, and may be taken over. It is
#: longer than any one conversion (Cloud Run's request timeout defaults to 5 minutes).
CLAIM_TTL_SECONDS = 15 * 60


@dataclass(frozen=True)
class Outcome:
    """What one object generation became: a record, or a permanent refusal (and why)."""

    status: str  # "converted" | "refused"
    record_id: str = ""
    code: str = ""
    reason: str = ""

    def to_json(self) -> bytes:
        body = {"status": self.status, "record_id": self.record_id}
        if self.status == "refused":
            body = {"status": self.status, "code": self.code, "reason": self.reason}
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Outcome:
        data = json.loads(raw)
        return cls(
            status=str(data["status"]),
            record_id=str(data.get("record_id", "")),
            code=str(data.get("code", "")),
            reason=str(data.get("reason", "")),
        )


def outcome_key(ref: ObjectRef) -> str:
    """``evt/<bucket>/<sha256 of the name>/<generation>``: names may hold any character."""
    digest = hashlib.sha256(ref.name.encode("utf-8", "surrogatepass")).hexdigest()[:40]
    return f"{EVENT_PREFIX}{ref.bucket}/{digest}/{ref.generation}"


class EventLedger:
    """Outcomes and claims of object generations, kept in the app's own ObjectStore."""

    def __init__(self, store: ObjectStore, *, claim_ttl: float = CLAIM_TTL_SECONDS) -> None:
        self.store = store
        self.claim_ttl = claim_ttl

    def outcome(self, ref: ObjectRef) -> Outcome | None:
        """What this generation became, if anything has settled it yet."""
        try:
            raw = self.store.get(outcome_key(ref))
        except ObjectNotFound:
            return None
        try:
            return Outcome.from_json(raw)
        except (ValueError, KeyError, TypeError):
            log.warning("unreadable event outcome at %s; treating it as absent", outcome_key(ref))
            return None

    def settle(self, ref: ObjectRef, outcome: Outcome) -> Outcome:
        """Write the outcome create-only and return the one that stands (ours or an earlier)."""
        try:
            self.store.put(outcome_key(ref), outcome.to_json(), content_type="application/json")
        except ObjectExists:
            standing = self.outcome(ref)
            if standing is None:
                raise
            return standing
        return outcome

    def forget_refusal(self, ref: ObjectRef) -> None:
        """Drop a refusal so the object is tried again (after a limit was raised, say)."""
        current = self.outcome(ref)
        if current is not None and current.status == "refused":
            self.store.delete(outcome_key(ref))

    def claim(self, ref: ObjectRef) -> str | None:
        """A token if this worker now owns the conversion, None if another live worker does."""
        key = outcome_key(ref) + ".claim"
        for _ in range(2):
            token = secrets.token_hex(8)
            body = json.dumps({"at": time.time(), "token": token}).encode()
            try:
                self.store.put(key, body, content_type="application/json")
                return token
            except ObjectExists:
                pass
            if not self._stale(key):
                return None
            # Its owner died mid-conversion (nothing settled it in claim_ttl): take over. Two
            # workers doing so at once both convert, and settle() keeps exactly one record.
            self.store.delete(key)
        return None

    def release(self, ref: ObjectRef, token: str) -> None:
        """Give the claim up (best effort: a leftover claim only goes stale)."""
        key = outcome_key(ref) + ".claim"
        try:
            held = json.loads(self.store.get(key)).get("token")
            if held == token:
                self.store.delete(key)
        except Exception:  # a failed release only delays a retry by claim_ttl
            log.warning("could not release the claim %s", key, exc_info=True)

    def _stale(self, key: str) -> bool:
        try:
            claimed = float(json.loads(self.store.get(key))["at"])
        except ObjectNotFound:
            return True  # released between our put and our look
        except (ValueError, KeyError, TypeError):
            return True
        return time.time() - claimed > self.claim_ttl
