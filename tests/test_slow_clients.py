"""The self-hosted setup survives slow clients (issue 14, item 3).

compose.yaml runs the app's image behind nginx with deploy/nginx.conf. Here the same two run on
127.0.0.1 without Docker: the Dockerfile's CMD (tests/container.py) at one worker x 4 threads, and
Debian's nginx (scripts/install-system-deps) with the shipped config, rewritten only for ports,
paths, the upstream address and the worker account. Then 200 connections that never finish
their request are opened; through the proxy, /healthz and a small upload still answer within
2 s, while the same connections straight at gunicorn make /healthz miss that budget.
"""

from __future__ import annotations

import difflib
import http.client
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
import yaml

from tests import images
from tests.container import (
    ROOT,
    Container,
    dockerfile_env,
    free_port,
    post_image,
    start_container,
    stop,
    wait_healthy,
    wait_until,
)

pytestmark = pytest.mark.slow

NGINX_CONF = ROOT / "deploy" / "nginx.conf"
COMPOSE = ROOT / "compose.yaml"

BUDGET = 2.0  # seconds: what /healthz and a small upload may take with the slow clients on
SLOW_CLIENTS = 200
TRICKLE_EVERY = 0.25  # seconds between two bytes on one slow connection
SLOW_CLIENTS_LAST = 30.0  # the trickle stops by itself after this, whatever the test does


# -- the shipped files -------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def app_environment() -> dict[str, str]:
    """compose.yaml's environment for the app service, as the container gets it."""
    env = compose()["services"]["app"].get("environment", {})
    assert isinstance(env, dict), "a mapping, so each name is set once"
    return {str(name): str(value) for name, value in env.items()}


def nginx() -> Path:
    found = shutil.which("nginx") or "/usr/sbin/nginx"
    assert Path(found).exists(), "make test installs nginx (scripts/install-system-deps)"
    return Path(found)


def _sub(pattern: str, replacement: str, text: str, count: int = 1) -> str:
    """``re.sub`` that insists on ``count`` matches: a shipped config that drifts fails here."""
    out, n = re.subn(pattern, replacement, text, flags=re.M)
    assert n == count, f"{pattern!r} matched {n} times in {NGINX_CONF.name}, not {count}"
    return out


def for_this_machine(config: str, *, port: int, upstream: str, state: Path) -> str:
    """The shipped config as it runs here rather than in compose: listening on 127.0.0.1:``port``,
    proxying to ``upstream`` (host:port) instead of the ``app`` service, its pid and temp files
    under ``state``, and its workers run as whoever runs the tests (the image has a ``nginx``
    account, Debian does not). Nothing else changes."""
    config = _sub(r"^(\s*)listen 8080;$", rf"\1listen 127.0.0.1:{port};", config)
    config = _sub(r"^(\s*)server app:8080;$", rf"\1server {upstream};", config)
    config = _sub(r"^pid /var/run/nginx\.pid;$", f"pid {state}/nginx.pid;", config)
    config = _sub(
        r"^(\s*\w+_temp_path) /var/cache/nginx/(\w+);$", rf"\1 {state}/\2;", config, count=5
    )
    # The user directive means something only to a master started as root.
    user = f"user {pwd.getpwuid(os.getuid()).pw_name};" if os.getuid() == 0 else ""
    return _sub(r"^user nginx;$", user, config)


def rewritten(tmp: Path, *, port: int = 8080, upstream: str = "127.0.0.1:8080") -> Path:
    state = tmp / "nginx"
    state.mkdir(parents=True, exist_ok=True)
    path = state / "nginx.conf"
    config = for_this_machine(NGINX_CONF.read_text(), port=port, upstream=upstream, state=state)
    path.write_text(config)
    return path


# -- the two servers ---------------------------------------------------------------------------


@dataclass
class Proxy:
    process: subprocess.Popen[bytes]
    port: int
    url: str
    log: Path


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    """The Dockerfile's CMD at 1 worker x 4 threads, with compose.yaml's app environment."""
    running = start_container(
        tmp_path_factory.mktemp("app"),
        **app_environment(),
        WEB_CONCURRENCY="1",
        GUNICORN_THREADS="4",
    )
    yield running
    stop(running)


@pytest.fixture(scope="module")
def proxy(app: Container, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    tmp = tmp_path_factory.mktemp("proxy")
    port = free_port()
    config = rewritten(tmp, port=port, upstream=app.url.removeprefix("http://"))
    log = tmp / "nginx.log"
    # In the foreground, as the official image runs it (its CMD adds the same -g).
    argv = [str(nginx()), "-c", str(config), "-p", str(config.parent), "-e", "stderr"]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*argv, "-g", "daemon off;"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    running = Proxy(process, port, f"http://127.0.0.1:{port}", log)
    try:
        wait_healthy(process, running.url, log.read_text, "nginx")
        yield running
    finally:
        process.send_signal(signal.SIGTERM)  # fast shutdown: drop connections, exit
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- slow clients ------------------------------------------------------------------------------


class SlowClients:
    """``count`` connections to 127.0.0.1:``port`` whose requests never end: half send their
    headers a byte at a time, half send whole headers, part of a body, then a byte at a time.

    One thread feeds every connection a byte each TRICKLE_EVERY seconds and stops by itself
    after ``last`` seconds; leaving the ``with`` block stops it and closes every socket."""

    HEADERS = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
    BODY_HEADERS = (
        b"POST /api/images HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: multipart/form-data; boundary=slow\r\n"
        b"Content-Length: 1000000\r\n\r\n"
        b'--slow\r\nContent-Disposition: form-data; name="image"; filename="slow.png"\r\n\r\n'
    )

    def __init__(self, port: int, count: int = SLOW_CLIENTS, last: float = SLOW_CLIENTS_LAST):
        self.port, self.count, self.last = port, count, last
        self.sockets: list[socket.socket] = []
        self._pending: dict[socket.socket, bytes] = {}
        self._stop = threading.Event()
        self._feeder = threading.Thread(target=self._feed, name="slow-clients", daemon=True)

    def __enter__(self) -> SlowClients:
        try:
            for i in range(self.count):
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                sock.setblocking(False)
                self.sockets.append(sock)
                if i % 2:  # headers done, then a body that stalls
                    sock.send(self.BODY_HEADERS + b"\x89PNG")
                    self._pending[sock] = b""
                else:  # the first byte of the request line, the rest later
                    sock.send(self.HEADERS[:1])
                    self._pending[sock] = self.HEADERS[1:]
        except BaseException:
            self.close()
            raise
        self._feeder.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _feed(self) -> None:
        deadline = time.monotonic() + self.last
        while not self._stop.wait(TRICKLE_EVERY) and time.monotonic() < deadline:
            for sock in self.sockets:
                pending = self._pending[sock]
                try:
                    sock.send(pending[:1] or b"x")
                except OSError:
                    continue  # closed by the server: held() counts it
                self._pending[sock] = pending[1:]

    def held(self) -> int:
        """How many connections the server still holds open (has neither closed nor answered)."""
        count = 0
        for sock in self.sockets:
            try:
                sock.recv(1, socket.MSG_PEEK)
            except BlockingIOError:
                count += 1  # nothing to read: open, still waiting for the rest of the request
            except OSError:
                pass
        return count

    def close(self) -> None:
        self._stop.set()
        if self._feeder.is_alive():
            self._feeder.join()
        for sock in self.sockets:
            sock.close()


def timed_get(url: str, path: str, budget: float) -> tuple[int, float]:
    """GET ``path``: (status, seconds taken), or (0, budget) when no answer came in ``budget``."""
    host, _, port = url.removeprefix("http://").partition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=budget)
    started = time.monotonic()
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status, time.monotonic() - started
    except TimeoutError:
        return 0, budget
    finally:
        conn.close()


# -- the proxy's config --------------------------------------------------------------------------


def test_the_shipped_proxy_config_passes_nginx_t(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(nginx()), "-t", "-e", "stderr", "-c", str(rewritten(tmp_path))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "[warn]" not in result.stderr, result.stderr


def test_the_tested_config_differs_from_the_shipped_one_in_ports_paths_and_upstream_only(
    tmp_path: Path,
) -> None:
    shipped = NGINX_CONF.read_text().splitlines()
    tested = rewritten(tmp_path).read_text().splitlines()
    changed = [
        line[1:].strip()
        for line in difflib.unified_diff(shipped, tested, lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    directives = {line.split(" ", 1)[0] for line in changed if line}
    assert directives <= {"listen", "server", "pid", "user"} | {
        f"{kind}_temp_path" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    }
    assert {"listen", "server"} <= directives


def test_the_proxy_buffers_whole_requests_and_bounds_slow_clients() -> None:
    config = NGINX_CONF.read_text()
    for directive in (
        "proxy_request_buffering on;",
        "client_header_timeout 10s;",
        "client_body_timeout 30s;",
        "client_max_body_size 21m;",  # MAX_UPLOAD_MB + form overhead, for the POSTs
        "client_max_body_size 200m;",  # DIRECT_UPLOAD_MAX_MB, for the direct-upload PUT
        "keepalive_timeout 65s;",
        "keepalive_requests 1000;",
    ):
        assert re.search(rf"^\s*{re.escape(directive)}", config, re.M), directive


# -- slow clients, with and without the proxy ----------------------------------------------------


def test_through_the_proxy_healthz_and_an_upload_answer_in_time_despite_200_slow_clients(
    app: Container, proxy: Proxy
) -> None:
    with SlowClients(proxy.port) as slow:
        time.sleep(1)  # every slow client has sent its first bytes and a few more
        status, took = timed_get(proxy.url, "/healthz", BUDGET)
        assert status == 200
        assert took < BUDGET

        started = time.monotonic()
        status, _, body = post_image(proxy.url, images.png(), timeout=BUDGET)
        took = time.monotonic() - started
        assert status == 201, body
        assert took < BUDGET
        # The proxy held every slow client meanwhile: it did not survive by refusing them.
        assert slow.held() == SLOW_CLIENTS
    assert (app.media_root / "rec" / f"{body['id']}.json").is_file()


def test_straight_at_gunicorn_the_same_slow_clients_make_healthz_miss_its_budget(
    app: Container,
) -> None:
    with SlowClients(int(app.url.rpartition(":")[2])) as slow:
        time.sleep(1)
        status, took = timed_get(app.url, "/healthz", BUDGET)
        assert (status, took) == (0, BUDGET), "gunicorn answered: slow clients did not hurt it"
        assert slow.held() == SLOW_CLIENTS
    # Once they are gone, gunicorn's threads come back.
    wait_until(lambda: timed_get(app.url, "/healthz", BUDGET)[0] == 200, 30, "/healthz")


def test_the_proxy_gives_the_app_the_clients_address_and_scheme_not_the_clients_claims(
    app: Container, proxy: Proxy
) -> None:
    claims = {
        "X-Forwarded-For": "203.0.113.9",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "evil.example",
    }
    status, headers, body = post_image(proxy.url, images.png(20, 10), claims)
    assert status == 201, body
    assert body["detail_url"].startswith(f"{proxy.url}/")

    def logged() -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in app.stdout.read_text().splitlines() if line]
        return [e for e in lines if e.get("request_id") == headers["X-Request-Id"]]

    wait_until(lambda: bool(logged()), 10, "the request's log line")
    assert logged()[0]["httpRequest"]["remoteIp"] == "127.0.0.1"


# -- compose.yaml ----------------------------------------------------------------------------------


def test_compose_mounts_the_tested_config_into_the_official_nginx_image() -> None:
    proxy = compose()["services"]["proxy"]
    assert str(proxy["image"]).startswith("nginx:")
    mounts = [str(v).split(":") for v in proxy["volumes"]]
    assert [(ROOT / source).resolve() for source, target, *_ in mounts] == [NGINX_CONF.resolve()]
    assert [(target, mode) for _, target, mode in mounts] == [("/etc/nginx/nginx.conf", "ro")]


def test_compose_publishes_a_port_for_the_proxy_only_the_one_nginx_listens_on() -> None:
    services = compose()["services"]
    assert {name for name, service in services.items() if "ports" in service} == {"proxy"}
    (published,) = services["proxy"]["ports"]
    assert str(published).rpartition(":")[2] == "8080"
    assert re.search(r"^\s*listen 8080;", NGINX_CONF.read_text(), re.M)


def test_compose_builds_the_app_and_the_proxy_reaches_it_by_its_service_name() -> None:
    services = compose()["services"]
    assert services["app"]["build"] == "."
    assert "app" in services["proxy"]["depends_on"]
    assert dockerfile_env()["PORT"] == "8080"  # which gunicorn.conf.py binds
    assert re.search(r"^\s*server app:8080;", NGINX_CONF.read_text(), re.M)


def test_compose_tells_the_app_to_trust_one_proxy_hop() -> None:
    assert app_environment()["TRUSTED_PROXY_HOPS"] == "1"
