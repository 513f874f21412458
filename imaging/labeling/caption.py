"""Captions (CAPTIONER): one sentence describing the picture, used as its alt text and searchable.

``NullCaptioner`` (``CAPTIONER=none``, the default) writes nothing and calls nobody;
``GeminiCaptioner`` (``CAPTIONER=gemini``) sends the labelers' JPEG copy to Gemini through
Google's ``google-genai`` client, with a GEMINI_API_KEY (the Gemini API) or else through Vertex AI
in GOOGLE_CLOUD_PROJECT with the service's own credentials. The call is bounded by
CAPTION_TIMEOUT and never retried (the upload is waiting). Every failure is
``LabelerUnavailable``: the pipeline then saves the upload without a caption.

A caption is untrusted model output: ``clean_caption`` strips control characters, folds
whitespace and caps the length before it is stored; the templates escape it like any text.
"""

from __future__ import annotations

import os
import threading
import unicodedata
from typing import TYPE_CHECKING, Any, Protocol

from imaging.errors import ImagingError, LabelerUnavailable
from imaging.gclients import is_stand_in

if TYPE_CHECKING:
    from google import genai

    from imaging.config import Settings
    from imaging.processing import LabelImage

__all__ = [
    "MAX_CAPTION",
    "PROMPT",
    "Captioner",
    "GeminiCaptioner",
    "NullCaptioner",
    "build_captioner",
    "clean_caption",
]

#: Characters of caption kept: one sentence of alt text (screen readers read it whole).
MAX_CAPTION = 300
#: Output tokens asked for: a sentence is 20-40; the cap stops a rambling answer early.
MAX_OUTPUT_TOKENS = 120
PROMPT = (
    "Describe this picture in one plain sentence of at most 25 words, as alt text for someone "
    "who cannot see it. Say what is shown; do not start with 'This image' or 'A picture of'."
)
#: The key a plain-http stand-in gets instead of the real one: no secret is sent in clear.
STAND_IN_KEY = "stand-in"


def clean_caption(text: str) -> str:
    """``text`` fit to store: no control or format characters, one line, at most MAX_CAPTION
    characters (cut at a word, with an ellipsis, when longer)."""
    kept = "".join(" " if ch.isspace() else ch for ch in text if unicodedata.category(ch)[0] != "C")
    line = " ".join(kept.split())
    if len(line) <= MAX_CAPTION:
        return line
    cut = line[: MAX_CAPTION - 1].rsplit(" ", 1)[0]
    return cut.rstrip(" ,;:") + "…"


class Captioner(Protocol):
    name: str

    def caption(self, image: LabelImage) -> str:
        """One cleaned sentence about ``image`` ("" for none); LabelerUnavailable on failure."""


class NullCaptioner:
    """CAPTIONER=none: captions nothing, never fails, calls nobody."""

    name = "none"

    def caption(self, image: LabelImage) -> str:
        return ""


class GeminiCaptioner:
    """Captions with Gemini. Safe to share between threads; the client is made per process on
    first use (its connection pool must not cross gunicorn's fork)."""

    name = "gemini"

    def __init__(
        self,
        *,
        model: str,
        api_key: str = "",
        project: str = "",
        location: str = "global",
        endpoint: str = "",
        timeout: float = 8.0,
    ) -> None:
        if not (api_key or project):
            raise ValueError("a Gemini captioner needs an API key or a Vertex AI project")
        self._model = model
        self._api_key = api_key
        self._project = project
        self._location = location
        self._endpoint = endpoint
        self._timeout = timeout
        # Thinking tokens count against MAX_OUTPUT_TOKENS and add seconds: a caption needs
        # none. Flash models accept a budget of 0 (off); Pro models refuse it, so they keep
        # their default.
        self._thinking = _no_thinking() if "flash" in model else None
        self._client: genai.Client | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def caption(self, image: LabelImage) -> str:
        try:
            jpeg = image.jpeg()
        except ImagingError as exc:
            raise LabelerUnavailable(f"image could not be encoded: {exc}") from exc
        from google.genai import types

        try:
            response = self._client_or_raise().models.generate_content(
                model=self._model,
                contents=types.Content(
                    role="user",
                    parts=[
                        types.Part.from_bytes(data=jpeg, mime_type="image/jpeg"),
                        types.Part.from_text(text=PROMPT),
                    ],
                ),
                config=types.GenerateContentConfig(
                    max_output_tokens=MAX_OUTPUT_TOKENS,
                    temperature=0.2,
                    thinking_config=self._thinking,
                ),
            )
            text = response.text
        except LabelerUnavailable:
            raise
        except Exception as exc:  # the client raises its own, httpx's and JSON errors alike
            raise LabelerUnavailable(f"Gemini failed: {type(exc).__name__}: {exc}") from exc
        return clean_caption(text or "")

    def _client_or_raise(self) -> genai.Client:
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                try:
                    self._client = self._create_client()
                except Exception as exc:  # typically no credentials for Vertex AI
                    raise LabelerUnavailable(
                        f"Gemini client could not be created: {type(exc).__name__}: {exc}"
                    ) from exc
                self._pid = os.getpid()
            return self._client

    def _create_client(self) -> genai.Client:
        from google import genai
        from google.genai import types

        options = types.HttpOptions(
            timeout=int(self._timeout * 1000),  # milliseconds
            retry_options=types.HttpRetryOptions(attempts=1),
            base_url=self._endpoint or None,
        )
        stand_in = is_stand_in(self._endpoint)
        if self._api_key:
            key = STAND_IN_KEY if stand_in else self._api_key
            return genai.Client(api_key=key, http_options=options)
        extra: dict[str, Any] = {"credentials": _stand_in_token()} if stand_in else {}
        return genai.Client(
            vertexai=True,
            project=self._project,
            location=self._location,
            http_options=options,
            **extra,
        )


def _no_thinking() -> Any:
    from google.genai import types

    return types.ThinkingConfig(thinking_budget=0)


def _stand_in_token() -> Any:
    """Credentials holding the placeholder token: google-genai refreshes credentials without a
    token (anonymous ones cannot be), and a stand-in must get nothing real."""
    from google.oauth2.credentials import Credentials

    return Credentials(token=STAND_IN_KEY)  # type: ignore[no-untyped-call]


def build_captioner(settings: Settings) -> Captioner:
    """The captioner CAPTIONER names, built once per app (no connection is opened here)."""
    if settings.captioner == "gemini":
        return GeminiCaptioner(
            model=settings.gemini_model,
            api_key=settings.gemini_api_key,
            project=settings.google_cloud_project,
            location=settings.gemini_location,
            endpoint=settings.caption_endpoint,
            timeout=settings.caption_timeout,
        )
    return NullCaptioner()
