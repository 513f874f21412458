"""Fan-out through Cloud Tasks: one HTTP task per object generation, to this same service.

``TaskQueue`` (TASKS_QUEUE set) enqueues ``POST /tasks/convert`` with an OIDC token; the task name
is a hash of bucket/object/generation (``task_id``), so Cloud Tasks itself drops a redelivered
event's second task. One task per object, not per format: a record is written once, last, with
every variant (the pipeline's commit point), so per-format tasks would need a second, mutable
record write and a join, and could leave a record pointing at variants a failed task never wrote.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from imaging.doors.sources import ObjectRef
from imaging.errors import Unavailable
from imaging.gclients import PerProcess, stand_in_credentials

log = logging.getLogger(__name__)


def task_id(ref: ObjectRef) -> str:
    """A task name Cloud Tasks de-duplicates on: the same object generation, the same name.

    A hash rather than the object name: names may hold any character, and Cloud Tasks spreads
    load best over ids without a common prefix.
    """
    return hashlib.sha256(f"{ref.bucket}\n{ref.name}\n{ref.generation}".encode()).hexdigest()


class TaskQueue:
    """Enqueues ``POST /tasks/convert`` HTTP tasks on a Cloud Tasks queue (REST transport)."""

    def __init__(
        self,
        *,
        queue: str,
        target_url: str,
        service_account: str,
        audience: str,
        endpoint: str = "",
        timeout: float = 10,
    ) -> None:
        self.queue = queue
        self.target_url = target_url
        self.service_account = service_account
        self.audience = audience
        self.endpoint = endpoint
        self._timeout = timeout
        self._client = PerProcess(self._make_client)

    def enqueue(self, ref: ObjectRef, formats: tuple[str, ...] | None = None) -> str:
        """The task's full name; an existing task of that name counts as enqueued."""
        # Only deployments with a queue need Google's clients (about 13 MB per process).
        from google.api_core import exceptions as api_exceptions
        from google.auth.exceptions import GoogleAuthError
        from google.cloud import tasks_v2

        name = f"{self.queue}/tasks/{task_id(ref)}"
        body = {
            "bucket": ref.bucket,
            "name": ref.name,
            "generation": ref.generation,
            "formats": list(formats) if formats else None,
        }
        task = tasks_v2.Task(
            name=name,
            http_request=tasks_v2.HttpRequest(
                url=self.target_url,
                http_method=tasks_v2.HttpMethod.POST,
                headers={"Content-Type": "application/json"},
                body=json.dumps(body).encode(),
                # The audience is the service URL, the same one storage events are checked
                # against, rather than the default (the full task URL).
                oidc_token=tasks_v2.OidcToken(
                    service_account_email=self.service_account, audience=self.audience
                ),
            ),
        )
        try:
            self._client_for_process().create_task(
                parent=self.queue, task=task, timeout=self._timeout
            )
        except api_exceptions.Conflict:
            log.info("task %s exists already: the event was delivered before", name)
        except (api_exceptions.GoogleAPIError, GoogleAuthError, OSError) as exc:
            raise Unavailable(
                "The task queue is unavailable. Please retry shortly.",
                detail=f"create_task {name} failed: {exc!r}",
            ) from exc
        return name

    def _client_for_process(self) -> Any:
        return self._client.get()

    def _make_client(self) -> Any:
        from google.cloud import tasks_v2  # only deployments with a queue need it

        if not self.endpoint:
            return tasks_v2.CloudTasksClient(transport="rest")
        return tasks_v2.CloudTasksClient(
            transport="rest",
            client_options={"api_endpoint": self.endpoint},
            **stand_in_credentials(self.endpoint),
        )
