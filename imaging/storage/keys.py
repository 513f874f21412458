"""The key rules every storage backend enforces, so a key that works on disk works in GCS too."""

from __future__ import annotations

#: GCS's limit on an object name; local paths would allow more but keys must work on both.
MAX_KEY_BYTES = 1024
#: Most filesystems' limit on one path segment.
MAX_SEGMENT_BYTES = 255


def check_key(key: str) -> str:
    """Return ``key`` if it is a well-formed object key, else raise ValueError.

    Keys are made by the server, never taken from a client, so a bad one is a programming error.
    Rejected: empty keys and segments, a leading ``/``, segments starting with ``.`` (so ``..``
    too), backslashes, NUL and other control characters, and names too long for GCS or a disk.
    """
    if not isinstance(key, str) or not key:
        raise ValueError(f"storage key must be a non-empty string, got {key!r}")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise ValueError(f"storage key longer than {MAX_KEY_BYTES} bytes: {key[:60]!r}...")
    if "\\" in key or any(ord(c) < 0x20 or ord(c) == 0x7F for c in key):
        raise ValueError(f"storage key has a backslash or control character: {key!r}")
    for segment in key.split("/"):
        # An empty segment also catches a leading or trailing "/" and "//".
        if not segment or segment.startswith("."):
            raise ValueError(f"storage key has an empty or dot segment: {key!r}")
        if len(segment.encode("utf-8", "surrogatepass")) > MAX_SEGMENT_BYTES:
            raise ValueError(f"storage key segment longer than {MAX_SEGMENT_BYTES} bytes: {key!r}")
    return key


def check_prefix(prefix: str) -> str:
    """Return ``prefix`` if some valid key could start with it ("" lists everything)."""
    if prefix:
        # "rec/" is fine because "rec/x" is a key; "rec//" and "../" are not.
        check_key(prefix + "x" if prefix.endswith("/") else prefix)
    return prefix
