"""A local stand-in for Cloud Tasks' REST API (CreateTask only), and its pytest fixture.

It answers ``POST /v2/projects/*/locations/*/queues/*/tasks`` the way the real service does for
the JSON ``google.cloud.tasks_v2.CloudTasksClient(transport="rest")`` sends: a named task is
created once, and a second CreateTask with the same name gets 409 ALREADY_EXISTS (Cloud Tasks'
de-duplication). Every request is recorded as the server decoded it, so tests check the task
name, the target URL, the OIDC service account and audience, and the body, at the client's
boundary. With ``fail_status`` set, every request gets that error instead.

Apps reach it through ``TASKS_API_ENDPOINT=tasks_server.endpoint`` (plain http: anonymous).
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from tests.localhttp import JSONHandler, LocalHTTPServer

_CREATE = re.compile(r"^/v2/(projects/[^/]+/locations/[^/]+/queues/[^/]+)/tasks$")
#: google.cloud.tasks.v2.HttpMethod: the client sends enums as numbers (enum-encoding=int).
HTTP_METHODS = {0: "HTTP_METHOD_UNSPECIFIED", 1: "POST", 2: "GET", 3: "HEAD", 4: "PUT", 5: "DELETE"}
_RPC_STATUS = {
    409: "ALREADY_EXISTS",
    403: "PERMISSION_DENIED",
    503: "UNAVAILABLE",
    404: "NOT_FOUND",
}


@dataclass(frozen=True)
class CreatedTask:
    """One CreateTask request as the server decoded it."""

    parent: str
    name: str
    url: str
    http_method: str
    headers: dict[str, str]
    body: bytes
    oidc_service_account: str
    oidc_audience: str
    raw: dict[str, Any] = field(repr=False)

    def json_body(self) -> Any:
        return json.loads(self.body)


class TasksServer:
    """A threaded HTTP server on 127.0.0.1 that records CreateTask calls."""

    def __init__(self) -> None:
        self.requests: list[CreatedTask] = []
        self.tasks: dict[str, dict[str, Any]] = {}
        self.fail_status: int | None = None
        self._lock = threading.Lock()
        self._server = LocalHTTPServer(_handler_for(self))

    @property
    def endpoint(self) -> str:
        return self._server.url

    def start(self) -> TasksServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def create(self, parent: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        task = payload.get("task") or {}
        http = task.get("httpRequest") or {}
        oidc = http.get("oidcToken") or {}
        received = CreatedTask(
            parent=parent,
            name=str(task.get("name", "")),
            url=str(http.get("url", "")),
            http_method=_method_name(http.get("httpMethod", 0)),
            headers=dict(http.get("headers") or {}),
            body=base64.b64decode(http.get("body", "")),
            oidc_service_account=str(oidc.get("serviceAccountEmail", "")),
            oidc_audience=str(oidc.get("audience", "")),
            raw=payload,
        )
        with self._lock:
            self.requests.append(received)
            if self.fail_status is not None:
                return self.fail_status, _error(self.fail_status, "The fake was told to fail.")
            if not received.name.startswith(parent + "/tasks/"):
                return 400, _error(400, "Task name must be in the parent queue.")
            if received.name in self.tasks:
                return 409, _error(409, "Requested entity already exists")
            created = {**task, "createTime": "2030-01-01T00:00:00Z", "dispatchCount": 0}
            self.tasks[received.name] = created
        return 200, created


def _method_name(raw: object) -> str:
    return HTTP_METHODS.get(raw, f"METHOD_{raw}") if isinstance(raw, int) else str(raw)


def _error(status: int, message: str) -> dict[str, Any]:
    return {"error": {"code": status, "message": message, "status": _RPC_STATUS.get(status, "")}}


def _handler_for(server: TasksServer) -> type[BaseHTTPRequestHandler]:
    class Handler(JSONHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            path = unquote(urlsplit(self.path).path)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            match = _CREATE.match(path)
            if match is None:
                self.send_json(404, _error(404, f"No route for {path}"))
                return
            try:
                payload = json.loads(body)
            except ValueError:
                self.send_json(400, _error(400, "Invalid JSON payload received."))
                return
            self.send_json(*server.create(match.group(1), payload))

    return Handler


@pytest.fixture
def tasks_server() -> Iterator[TasksServer]:
    """A fresh fake Cloud Tasks server on a free 127.0.0.1 port, stopped after the test."""
    server = TasksServer().start()
    try:
        yield server
    finally:
        server.stop()
