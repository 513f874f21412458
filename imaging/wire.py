"""gunicorn's threaded worker, answering the requests gunicorn refuses before the app sees them.

gunicorn parses the request line and headers itself. A request it cannot parse (a 5,000-character
search, a header name with a space, a bad chunk size, two Content-Lengths) never reaches Flask:
gunicorn wrote its own HTML page, with no ``nosniff`` and no CSP, echoing the offending text.
This worker answers those the way the app answers every error (``imaging.web.error_response``):
``{"error": code, "message": message}`` for API clients and a short page for browsers, with
the app's security headers, a fixed message that repeats nothing the client sent, and never a
5xx for a client's mistake. A request the app has answered is never answered twice: if
gunicorn then fails to discard the rest of its body, the connection is closed in silence.

Only the master imports this module at start-up (``worker_class`` in gunicorn.conf.py), so it
imports nothing heavy at the top: the negotiation rule comes from the web layer on first use,
in a worker, where Flask is loaded anyway.
"""

from __future__ import annotations

import html
import json
from datetime import datetime
from ssl import SSLError
from typing import Any

from gunicorn import util
from gunicorn.http import errors
from gunicorn.http.message import Request
from gunicorn.http.wsgi import Response, default_environ
from gunicorn.workers.gthread import ThreadWorker

Answer = tuple[int, str, str, str]  # status, reason phrase, error code, public message

#: What gunicorn refuses, by the exception it raises, most specific first.
REFUSALS: tuple[tuple[type[BaseException], Answer], ...] = (
    (
        errors.LimitRequestLine,
        (
            414,
            "URI Too Long",
            "uri_too_long",
            "The address is too long. Search with fewer words, or send data in the request body.",
        ),
    ),
    (
        errors.LimitRequestHeaders,
        (
            431,
            "Request Header Fields Too Large",
            "headers_too_large",
            "The request's headers are too many or too large.",
        ),
    ),
    (
        errors.ExpectationFailed,
        (
            417,
            "Expectation Failed",
            "expectation_failed",
            "The only Expect this server understands is 100-continue.",
        ),
    ),
    (errors.ForbiddenProxyRequest, (403, "Forbidden", "forbidden", "Request forbidden.")),
    (SSLError, (403, "Forbidden", "forbidden", "Request forbidden.")),
    # A path outside the app's SCRIPT_NAME: there is nothing of ours there.
    (errors.ConfigurationProblem, (404, "Not Found", "not_found", "Nothing here.")),
)
BAD_REQUEST: Answer = (400, "Bad Request", "bad_request", "The request could not be understood.")
INTERNAL: Answer = (500, "Internal Server Error", "internal", "Something went wrong on our side.")

#: The app's security headers (imaging.web.register_security), tightened: the page loads nothing.
HEADERS = (
    ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "strict-origin-when-cross-origin"),
    ("X-Frame-Options", "DENY"),
    ("Cache-Control", "no-store"),
)


def refusal(exc: BaseException) -> Answer:
    """The status, reason phrase, error code and public message for what gunicorn raised."""
    if isinstance(exc, errors.InvalidResponseHeader | errors.InvalidResponseHeaderName):
        return INTERNAL  # a header our app tried to send: our fault, not the client's
    for kind, known in REFUSALS:
        if isinstance(exc, kind):
            return known
    if isinstance(exc, errors.ParseException):
        # Every other thing gunicorn cannot parse, including a transfer coding it does not
        # implement (gunicorn said 501): the client's request is at fault, not the server.
        return BAD_REQUEST
    return INTERNAL


def wants_page(req: Any) -> bool:
    """A browser's request, by the app's own rule, when gunicorn got as far as the headers.

    A request refused at its first line has no headers to go by: it gets JSON, which a
    browser shows as readable text too.
    """
    if req is None or not getattr(req, "path", None):
        return False
    from werkzeug.datastructures import MIMEAccept
    from werkzeug.http import parse_accept_header

    from imaging.web import prefers_json

    accept = next((value for name, value in req.headers if name == "ACCEPT"), "")
    return not prefers_json(req.path, parse_accept_header(accept, MIMEAccept))


def answer(status: int, reason: str, code: str, message: str, *, page: bool) -> bytes:
    """The whole HTTP response, headers and body, closing the connection."""
    if page:
        title = html.escape(reason)
        body = (
            '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{title}</title></head>\n<body><h1>{status} {title}</h1>"
            f"<p>{html.escape(message)}</p>"
            '<p><a href="/">Back to the gallery</a></p></body></html>\n'
        ).encode()
        kind = "text/html; charset=utf-8"
    else:
        body = json.dumps({"error": code, "message": message}).encode()
        kind = "application/json"
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Type: {kind}"]
    lines += [f"Content-Length: {len(body)}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in HEADERS]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


#: Set on a request once the app's answer to it has been written.
_ANSWERED = "_cloud_image_app_answered"


class Worker(ThreadWorker):  # type: ignore[misc]  # gunicorn ships no type hints
    """gunicorn's gthread worker with our own answer to the requests it refuses, and never a
    second answer to one request."""

    def handle_request(self, req: Any, conn: Any) -> bool:
        keepalive: bool = super().handle_request(req, conn)
        setattr(req, _ANSWERED, True)
        return keepalive

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        started = datetime.now()
        addr = addr or ("", -1)  # a unix socket
        if getattr(req, _ANSWERED, False):
            # The app has answered this request without reading all of its body, and gunicorn,
            # discarding the rest before the next request, found it malformed (a bad chunk).
            # A second answer would be read as the answer to the client's next request (a
            # proxy reusing the connection would hand it to someone else's): close instead.
            self.log.info(
                "Closed a connection from ip=%s: the answered request's unread body was "
                "malformed (%s)",
                addr[0],
                type(exc).__name__,
            )
            return
        status, reason, code, message = refusal(exc)
        if status >= 500:
            self.log.exception("Error handling request %s", getattr(req, "uri", "(no URI read)"))
        else:
            # repr, cut short: what the client sent goes to the log as one inert line.
            self.log.warning("Refused a request from ip=%s: %.200r", addr[0], str(exc))
        parsed = getattr(exc, "req", None)  # read up to the headers: for the log and the answer
        if req is None and isinstance(parsed, Request):
            req = parsed
        raw = answer(status, reason, code, message, page=wants_page(req))
        if req is not None:
            environ = default_environ(req, client, self.cfg)
            environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = addr[0], str(addr[1])
            environ["PATH_INFO"] = req.path or ""  # what the access line names
            response = Response(req, client, self.cfg)
            response.status = f"{status} {reason}"
            response.sent = len(raw.partition(b"\r\n\r\n")[2])  # the body's bytes, as logged
            self.log.access(response, req, environ, datetime.now() - started)
        try:
            util.write_nonblock(client, raw)
        except Exception:
            self.log.debug("Failed to send error message.")
