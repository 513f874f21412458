"""imaging/wire.py alone: which answer each thing gunicorn can raise gets (the real server's
answers are in tests/test_container.py)."""

from __future__ import annotations

import json
from ssl import SSLError

import pytest
from gunicorn.http import errors

from imaging.wire import answer, refusal


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (errors.LimitRequestLine(5017, 4094), 414),
        (errors.LimitRequestHeaders("limit request headers fields"), 431),
        (errors.ExpectationFailed("200-ok"), 417),
        (errors.ForbiddenProxyRequest("10.0.0.1"), 403),
        (SSLError("bad handshake"), 403),
        (errors.ConfigurationProblem("not under SCRIPT_NAME"), 404),
        (errors.InvalidRequestLine("GARBAGE"), 400),
        (errors.InvalidHeader("CONTENT-LENGTH"), 400),
        (errors.UnsupportedTransferCoding("gzip"), 400),
        (errors.InvalidChunkSize(b"ZZZ"), 400),
        (errors.InvalidProxyLine("PROXY nonsense"), 400),
    ],
)
def test_a_client_mistake_gets_a_4xx(exc: BaseException, status: int) -> None:
    assert refusal(exc)[0] == status


def test_our_own_mistakes_are_500s_with_a_generic_message() -> None:
    for exc in (errors.InvalidResponseHeader("X-Bad\n"), RuntimeError("disk on fire")):
        status, _, code, message = refusal(exc)
        assert (status, code) == (500, "internal")
        assert "fire" not in message


def test_the_answer_is_a_complete_response_that_closes_the_connection() -> None:
    raw = answer(414, "URI Too Long", "uri_too_long", "Too long.", page=False)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 414 URI Too Long"
    assert "Connection: close" in lines
    assert f"Content-Length: {len(body)}" in lines
    assert json.loads(body) == {"error": "uri_too_long", "message": "Too long."}


def test_the_page_escapes_what_it_shows() -> None:
    raw = answer(400, "Bad Request", "bad_request", "<b>x</b>", page=True)
    assert b"&lt;b&gt;x&lt;/b&gt;" in raw
    assert b"<b>x" not in raw
