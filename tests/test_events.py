"""POST /events/storage: every delivery shape, real OIDC verification, exactly one record each.

The app's catalog lives in one emulator bucket and the originals in another (the uploads
bucket), as in production. Tokens are minted by a local issuer and verified for real.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from imaging.doors.events import parse_delivery
from imaging.doors.ledger import EventLedger, Outcome, outcome_key
from imaging.doors.sources import ObjectRef
from imaging.errors import BadRequest
from imaging.storage import ObjectStore
from tests import images
from tests.conftest import AppFactory
from tests.gcs_emulator import (
    GCSEmulator,
    create_store_buckets,
    make_gcs_store,
    new_bucket_name,
    public_bucket_of,
)
from tests.oidc_issuer import OidcIssuer
from tests.tasks_server import TasksServer
from tests.test_observability import metric

AUDIENCE = "https://images.example.run.app"
PUSHER = "eventarc-push@demo-project.iam.gserviceaccount.com"
TASKER = "tasks-invoker@demo-project.iam.gserviceaccount.com"
QUEUE = "projects/demo-project/locations/europe-west1/queues/convert"
FINALIZED = "google.cloud.storage.object.v1.finalized"

Delivery = tuple[dict[str, str], bytes]


# -- the world -------------------------------------------------------------------------------
@pytest.fixture
def uploads_bucket(gcs_emulator: GCSEmulator, gcs_bucket: str) -> str:
    """A second bucket, where originals land (gcs_bucket holds the app's catalog)."""
    name = new_bucket_name()
    gcs_emulator.create_bucket(name)
    return name


@pytest.fixture
def app_store(gcs_bucket: str) -> ObjectStore:
    return make_gcs_store(gcs_bucket)


@pytest.fixture
def events_app(
    make_app: AppFactory,
    app_store: ObjectStore,
    gcs_bucket: str,
    uploads_bucket: str,
    oidc_issuer: OidcIssuer,
) -> Callable[..., Flask]:
    def build(**changes: Any) -> Flask:
        settings: dict[str, Any] = {
            "gcs_bucket": gcs_bucket,
            "gcs_public_bucket": public_bucket_of(gcs_bucket),
            "uploads_bucket": uploads_bucket,
            "events_audience": AUDIENCE,
            "events_service_account": PUSHER,
            "oidc_certs_url": oidc_issuer.certs_url,
            **changes,
        }
        return make_app(storage=app_store, **settings)

    return build


@pytest.fixture
def client(events_app: Callable[..., Flask]) -> FlaskClient:
    return events_app().test_client()


def bucket_handle(bucket: str) -> Any:
    """The bucket through a client of the test's own, as a user's upload tool would see it."""
    client = storage.Client(project="test", credentials=AnonymousCredentials())
    return client.bucket(bucket)


def put_original(
    bucket: str, name: str, data: bytes, *, metadata: dict[str, str] | None = None
) -> tuple[ObjectRef, dict[str, Any]]:
    """Upload an original as a user would; return its ref and its JSON API resource."""
    blob = bucket_handle(bucket).blob(name)
    blob.metadata = metadata
    blob.upload_from_string(data, content_type="application/octet-stream")
    resource: dict[str, Any] = {
        "kind": "storage#object",
        "bucket": bucket,
        "name": name,
        "generation": str(blob.generation),
        "metageneration": "1",
        "contentType": "application/octet-stream",
        "size": str(len(data)),
    }
    if metadata:
        resource["metadata"] = metadata
    return ObjectRef(bucket, name, str(blob.generation)), resource


# -- the three delivery shapes, as Eventarc and Pub/Sub send them ----------------------------
def binary_cloudevent(resource: dict[str, Any], *, kind: str = FINALIZED) -> Delivery:
    headers = {
        "ce-id": "8137946482811377",
        "ce-source": f"//storage.googleapis.com/projects/_/buckets/{resource['bucket']}",
        "ce-specversion": "1.0",
        "ce-type": kind,
        "ce-subject": f"objects/{resource['name']}",
        "ce-time": "2030-01-01T12:00:00.000000Z",
        "Content-Type": "application/json; charset=utf-8",
    }
    return headers, json.dumps(resource).encode()


def structured_cloudevent(resource: dict[str, Any]) -> Delivery:
    event = {
        "specversion": "1.0",
        "id": "8137946482811378",
        "source": f"//storage.googleapis.com/projects/_/buckets/{resource['bucket']}",
        "type": FINALIZED,
        "subject": f"objects/{resource['name']}",
        "time": "2030-01-01T12:00:00Z",
        "datacontenttype": "application/json",
        "data": resource,
    }
    return {"Content-Type": "application/cloudevents+json"}, json.dumps(event).encode()


def pubsub_push(resource: dict[str, Any], *, event_type: str = "OBJECT_FINALIZE") -> Delivery:
    envelope = {
        "message": {
            "attributes": {
                "bucketId": resource["bucket"],
                "objectId": resource["name"],
                "objectGeneration": resource["generation"],
                "eventType": event_type,
                "payloadFormat": "JSON_API_V1",
                "notificationConfig": "projects/_/buckets/b/notificationConfigs/1",
            },
            "data": base64.b64encode(json.dumps(resource).encode()).decode(),
            "messageId": "2070443601311540",
            "publishTime": "2030-01-01T12:00:00.000Z",
        },
        "subscription": "projects/demo-project/subscriptions/uploads-push",
    }
    return {"Content-Type": "application/json"}, json.dumps(envelope).encode()


SHAPES = {
    "binary-cloudevent": binary_cloudevent,
    "structured-cloudevent": structured_cloudevent,
    "pubsub-push": pubsub_push,
}


def deliver(
    client: FlaskClient, delivery: Delivery, token: str | None
) -> tuple[int, dict[str, Any]]:
    headers, body = delivery
    if token is not None:
        headers = {**headers, "Authorization": f"Bearer {token}"}
    response = client.post("/events/storage", data=body, headers=headers)
    return response.status_code, response.get_json(silent=True) or {}


def records(store: ObjectStore) -> list[str]:
    return store.list("rec/", limit=100)


# -- idempotency -----------------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES)
def test_an_event_delivered_twice_makes_one_record(
    shape: str,
    client: FlaskClient,
    uploads_bucket: str,
    app_store: ObjectStore,
    oidc_issuer: OidcIssuer,
) -> None:
    _, resource = put_original(uploads_bucket, "holiday/beach.jpg", images.jpeg())
    token = oidc_issuer.token(audience=AUDIENCE, email=PUSHER)

    first_status, first = deliver(client, SHAPES[shape](resource), token)
    again_status, again = deliver(client, SHAPES[shape](resource), token)

    assert (first_status, first["status"]) == (201, "converted")
    assert (again_status, again["status"]) == (200, "existing")
    assert again["record_id"] == first["record_id"]
    assert records(app_store) == [f"rec/{first['record_id']}.json"]


def test_the_same_event_through_another_door_finds_the_same_record(
    client: FlaskClient, uploads_bucket: str, app_store: ObjectStore, oidc_issuer: OidcIssuer
) -> None:
    _, resource = put_original(uploads_bucket, "a.png", images.png())
    token = oidc_issuer.token(audience=AUDIENCE, email=PUSHER)

    _, by_eventarc = deliver(client, binary_cloudevent(resource), token)
    _, by_pubsub = deliver(client, pubsub_push(resource), token)

    assert by_pubsub["record_id"] == by_eventarc["record_id"]
    assert len(records(app_store)) == 1


def test_a_new_generation_of_the_same_name_is_a_new_record(
    client: FlaskClient, uploads_bucket: str, app_store: ObjectStore, oidc_issuer: OidcIssuer
) -> None:
    token = oidc_issuer.token(audience=AUDIENCE, email=PUSHER)
    _, first = put_original(uploads_bucket, "me.jpg", images.jpeg(64, 48))
    _, one = deliver(client, binary_cloudevent(first), token)
    _, second = put_original(uploads_bucket, "me.jpg", images.jpeg(80, 60))  # overwritten

    _, two = deliver(client, binary_cloudevent(second), token)

    assert one["record_id"] != two["record_id"]
    assert len(records(app_store)) == 2


def test_the_outcome_marker_names_bucket_name_hash_and_generation(
    client: FlaskClient, uploads_bucket: str, app_store: ObjectStore, oidc_issuer: OidcIssuer
) -> None:
    ref, resource = put_original(uploads_bucket, "dir/ünïcode name.jpg", images.jpeg())

    _, body = deliver(
        client, pubsub_push(resource), oidc_issuer.token(audience=AUDIENCE, email=PUSHER)
    )

    key = outcome_key(ref)
    assert key.startswith(f"evt/{uploads_bucket}/")
    assert key.endswith(f"/{ref.generation}")
    assert json.loads(app_store.get(key)) == {"status": "converted", "record_id": body["record_id"]}


def test_an_object_another_worker_is_converting_answers_503_to_be_redelivered(
    client: FlaskClient, uploads_bucket: str, app_store: ObjectStore, oidc_issuer: OidcIssuer
) -> None:
    ref, resource = put_original(uploads_bucket, "busy.jpg", images.jpeg())
    assert EventLedger(app_store).claim(ref) is not None  # a live claim held elsewhere

    status, body = deliver(
        client, binary_cloudevent(resource), oidc_issuer.token(audience=AUDIENCE, email=PUSHER)
    )

    assert (status, body["error"]) == (503, "in_progress")
    assert records(app_store) == []


def test_a_stale_claim_is_taken_over(uploads_bucket: str, app_store: ObjectStore) -> None:
    ref = ObjectRef(uploads_bucket, "crashed.jpg", "1")
    assert EventLedger(app_store).claim(ref) is not None  # its worker then died

    assert EventLedger(app_store, claim_ttl=-1).claim(ref) is not None
    assert EventLedger(app_store).claim(ref) is None


# -- what gets converted ---------------------------------------------------------------------
def test_formats_come_from_the_objects_metadata(
    client: FlaskClient, uploads_bucket: str, oidc_issuer: OidcIssuer
) -> None:
    _, resource = put_original(
        uploads_bucket, "cat.png", images.png(), metadata={"formats": "webp,avif"}
    )

    _, body = deliver(
        client, binary_cloudevent(resource), oidc_issuer.token(audience=AUDIENCE, email=PUSHER)
    )

    shown = client.get(f"/api/images/{body['record_id']}").get_json()
    assert [v["format"] for v in shown["variants"]] == ["webp", "avif"]
    assert shown["name"] == "cat.png"


def test_without_formats_metadata_the_default_formats_are_made(
    events_app: Callable[..., Flask], uploads_bucket: str, oidc_issuer: OidcIssuer
) -> None:
    client = events_app(default_formats=("jpeg",)).test_client()
    _, resource = put_original(uploads_bucket, "plain.png", images.png())

    _, body = deliver(
        client, pubsub_push(resource), oidc_issuer.token(audience=AUDIENCE, email=PUSHER)
    )

    shown = client.get(f"/api/images/{body['record_id']}").get_json()
    assert [v["format"] for v in shown["variants"]] == ["jpeg"]


@pytest.mark.parametrize(
    "data",
    [b"just some text, not an image", images.png()[:60]],
    ids=["text", "truncated-png"],
)
def test_a_bad_original_is_acknowledged_so_it_is_not_redelivered_forever(
    data: bytes,
    client: FlaskClient,
    uploads_bucket: str,
    app_store: ObjectStore,
    oidc_issuer: OidcIssuer,
) -> None:
    _, resource = put_original(uploads_bucket, "bad.png", data)
    token = oidc_issuer.token(audience=AUDIENCE, email=PUSHER)

    status, body = deliver(client, binary_cloudevent(resource), token)
    again_status, again = deliver(client, binary_cloudevent(resource), token)

    assert (status, body["status"]) == (200, "refused")
    assert body["code"] == "unsupported_format"
    assert body["reason"]
    assert (again_status, again) == (200, body)
    assert records(app_store) == []


def test_unknown_formats_in_the_metadata_are_a_refusal(
    client: FlaskClient, uploads_bucket: str, oidc_issuer: OidcIssuer
) -> None:
    _, resource = put_original(uploads_bucket, "x.png", images.png(), metadata={"formats": "bmp"})

    status, body = deliver(
        client, binary_cloudevent(resource), oidc_issuer.token(audience=AUDIENCE, email=PUSHER)
    )

    assert (status, body["status"], body["code"]) == (200, "refused", "bad_request")


def test_an_object_deleted_before_its_event_arrives_is_acknowledged(
    client: FlaskClient, uploads_bucket: str, oidc_issuer: OidcIssuer
) -> None:
    _, resource = put_original(uploads_bucket, "gone.jpg", images.jpeg())
    bucket_handle(uploads_bucket).blob("gone.jpg").delete()

    status, body = deliver(
        client, binary_cloudevent(resource), oidc_issuer.token(audience=AUDIENCE, email=PUSHER)
    )

    assert (status, body["status"], body["code"]) == (200, "refused", "object_not_found")


@pytest.mark.parametrize(
    "delivery",
    [
        lambda r: binary_cloudevent(r, kind="google.cloud.storage.object.v1.deleted"),
        lambda r: pubsub_push(r, event_type="OBJECT_METADATA_UPDATE"),
    ],
    ids=["cloudevent-deleted", "pubsub-metadata-update"],
)
def test_other_event_types_are_acknowledged_and_ignored(
    delivery: Callable[[dict[str, Any]], Delivery],
    client: FlaskClient,
    uploads_bucket: str,
    app_store: ObjectStore,
    oidc_issuer: OidcIssuer,
) -> None:
    _, resource = put_original(uploads_bucket, "a.jpg", images.jpeg())

    status, body = deliver(
        client, delivery(resource), oidc_issuer.token(audience=AUDIENCE, email=PUSHER)
    )

    assert (status, body["status"]) == (200, "ignored")
    assert records(app_store) == []


def test_events_for_the_apps_own_objects_are_ignored(
    events_app: Callable[..., Flask],
    gcs_bucket: str,
    app_store: ObjectStore,
    oidc_issuer: OidcIssuer,
) -> None:
    # One bucket for everything: the variants the app writes raise events too.
    client = events_app(uploads_bucket=gcs_bucket).test_client()
    _, resource = put_original(gcs_bucket, "img/0000000000000abcdef01/webp.webp", images.jpeg())

    status, body = deliver(
        client, binary_cloudevent(resource), oidc_issuer.token(audience=AUDIENCE, email=PUSHER)
    )

    assert (status, body["status"]) == (200, "ignored")
    assert records(app_store) == []


# -- who may deliver -------------------------------------------------------------------------
def test_events_are_off_without_an_audience(make_app: AppFactory) -> None:
    response = make_app().test_client().post("/events/storage", json={"message": {}})

    assert response.status_code == 404


def test_a_delivery_without_a_token_is_unauthorized(
    client: FlaskClient, uploads_bucket: str
) -> None:
    _, resource = put_original(uploads_bucket, "a.jpg", images.jpeg())

    status, body = deliver(client, binary_cloudevent(resource), None)

    assert (status, body["error"]) == (401, "unauthorized")


@pytest.mark.parametrize(
    "mint",
    [
        lambda issuer: issuer.token(audience=AUDIENCE, email=PUSHER, forged=True),
        lambda issuer: issuer.token(
            audience=AUDIENCE, email=PUSHER, issued_ago=7200, expires_in=3600
        ),
        lambda issuer: issuer.token(audience="https://someone-else.example", email=PUSHER),
        lambda issuer: issuer.token(audience=AUDIENCE, email=PUSHER, issuer="https://evil"),
        lambda issuer: "not-a-jwt",
    ],
    ids=["forged", "expired", "wrong-audience", "wrong-issuer", "garbage"],
)
def test_a_bad_token_is_unauthorized_and_converts_nothing(
    mint: Callable[[OidcIssuer], str],
    client: FlaskClient,
    uploads_bucket: str,
    app_store: ObjectStore,
    oidc_issuer: OidcIssuer,
) -> None:
    _, resource = put_original(uploads_bucket, "a.jpg", images.jpeg())

    status, body = deliver(client, binary_cloudevent(resource), mint(oidc_issuer))

    assert (status, body["error"]) == (401, "unauthorized")
    assert app_store.list("", limit=10) == []


def test_a_token_for_the_full_endpoint_url_is_accepted_too(
    client: FlaskClient, uploads_bucket: str, oidc_issuer: OidcIssuer
) -> None:
    # What a push subscription or trigger puts in the token when no audience is configured.
    _, resource = put_original(uploads_bucket, "a.jpg", images.jpeg())
    token = oidc_issuer.token(audience=f"{AUDIENCE}/events/storage", email=PUSHER)

    status, body = deliver(client, binary_cloudevent(resource), token)

    assert (status, body["status"]) == (201, "converted")


@pytest.mark.parametrize(
    ("email", "verified"),
    [("someone@gmail.com", True), (PUSHER, False)],
    ids=["other", "unverified"],
)
def test_a_valid_token_for_another_account_is_forbidden(
    email: str, verified: bool, client: FlaskClient, uploads_bucket: str, oidc_issuer: OidcIssuer
) -> None:
    _, resource = put_original(uploads_bucket, "a.jpg", images.jpeg())
    token = oidc_issuer.token(audience=AUDIENCE, email=email, email_verified=verified)

    status, body = deliver(client, binary_cloudevent(resource), token)

    assert (status, body["error"]) == (403, "forbidden")


def test_an_event_from_a_bucket_not_in_uploads_bucket_is_forbidden(
    client: FlaskClient, gcs_emulator: GCSEmulator, app_store: ObjectStore, oidc_issuer: OidcIssuer
) -> None:
    stranger = new_bucket_name()
    gcs_emulator.create_bucket(stranger)
    _, resource = put_original(stranger, "a.jpg", images.jpeg())

    status, body = deliver(
        client, binary_cloudevent(resource), oidc_issuer.token(audience=AUDIENCE, email=PUSHER)
    )

    assert (status, body["error"]) == (403, "forbidden")
    assert app_store.list("", limit=10) == []


def test_an_event_from_the_public_bucket_is_forbidden_and_converts_nothing(
    client: FlaskClient, gcs_bucket: str, app_store: ObjectStore, oidc_issuer: OidcIssuer
) -> None:
    """The public bucket holds only the app's own variants: never an original to convert (and
    the settings refuse it in UPLOADS_BUCKET)."""
    public = public_bucket_of(gcs_bucket)
    _, resource = put_original(public, "img/0000000000000abcdef01/webp.webp", images.jpeg())

    status, body = deliver(
        client, binary_cloudevent(resource), oidc_issuer.token(audience=AUDIENCE, email=PUSHER)
    )

    assert (status, body["error"]) == (403, "forbidden")
    assert records(app_store) == []


def test_the_converter_itself_refuses_an_object_of_the_public_bucket(
    events_app: Callable[..., Flask], gcs_bucket: str, app_store: ObjectStore
) -> None:
    """Whatever door passes it on: the public bucket holds no original to convert."""
    from imaging.errors import Forbidden
    from imaging.services import services_of

    public = public_bucket_of(gcs_bucket)
    ref, _ = put_original(public, "holiday.jpg", images.jpeg())
    converter = services_of(events_app()).converter

    with pytest.raises(Forbidden):
        converter.convert(ref)
    assert records(app_store) == []


def test_the_public_bucket_is_the_apps_own_whatever_the_object_is_called() -> None:
    from imaging.config import Settings
    from imaging.doors.convert import is_own_object

    settings = Settings(gcs_bucket="private", gcs_public_bucket="public", uploads_bucket="private")
    assert is_own_object(settings, ObjectRef("public", "holiday.jpg", "1"))
    assert is_own_object(settings, ObjectRef("public", "img/1/webp.webp", "1"))
    assert is_own_object(settings, ObjectRef("private", "tmp/upload", "1"))
    assert not is_own_object(settings, ObjectRef("private", "holiday.jpg", "1"))
    assert not is_own_object(settings, ObjectRef("uploads", "img/1/webp.webp", "1"))


def test_google_certificates_are_fetched_once_for_many_events(
    client: FlaskClient, uploads_bucket: str, oidc_issuer: OidcIssuer
) -> None:
    _, resource = put_original(uploads_bucket, "a.jpg", images.jpeg())
    for _ in range(3):
        deliver(client, pubsub_push(resource), oidc_issuer.token(audience=AUDIENCE, email=PUSHER))

    assert oidc_issuer.fetches == 1


def test_a_refused_delivery_answers_json_to_a_browser_accept_and_is_counted(
    client: FlaskClient, uploads_bucket: str
) -> None:
    _, resource = put_original(uploads_bucket, "a.jpg", images.jpeg())
    headers, body = binary_cloudevent(resource)
    before = metric(client, "errors_total", type="unauthorized")

    response = client.post("/events/storage", data=body, headers={**headers, "Accept": "text/html"})

    assert response.status_code == 401
    assert response.get_json()["error"] == "unauthorized"
    assert metric(client, "errors_total", type="unauthorized") == before + 1


def test_a_wrong_method_on_a_machine_door_answers_json(client: FlaskClient) -> None:
    response = client.get("/events/storage", headers={"Accept": "text/html"})

    assert response.status_code == 405
    assert response.get_json()["error"] == "method_not_allowed"


def test_unreachable_certificates_answer_503_so_the_event_is_redelivered(
    events_app: Callable[..., Flask], uploads_bucket: str, oidc_issuer: OidcIssuer
) -> None:
    client = events_app(oidc_certs_url="http://127.0.0.1:9/certs").test_client()
    _, resource = put_original(uploads_bucket, "a.jpg", images.jpeg())

    status, body = deliver(
        client, pubsub_push(resource), oidc_issuer.token(audience=AUDIENCE, email=PUSHER)
    )

    assert (status, body["error"]) == (503, "unavailable")


# -- malformed and failing deliveries --------------------------------------------------------
@pytest.mark.parametrize(
    "delivery",
    [
        ({"Content-Type": "application/json"}, b"{not json"),
        ({"Content-Type": "application/json"}, b'{"hello": "world"}'),
        ({"Content-Type": "application/cloudevents+json"}, b'{"specversion": "1.0"}'),
        ({"ce-type": FINALIZED, "ce-specversion": "1.0"}, b"{}"),
        (
            {"Content-Type": "application/json"},
            json.dumps({"message": {"attributes": {"bucketId": "b", "objectId": "o"}}}).encode(),
        ),
    ],
    ids=["not-json", "no-message", "cloudevent-missing-attributes", "binary-no-id", "no-gen"],
)
def test_a_malformed_delivery_is_a_bad_request(
    delivery: Delivery, client: FlaskClient, oidc_issuer: OidcIssuer
) -> None:
    status, body = deliver(client, delivery, oidc_issuer.token(audience=AUDIENCE, email=PUSHER))

    assert (status, body["error"]) == (400, "bad_request")


def test_parse_delivery_reads_the_object_from_each_shape() -> None:
    resource = {"bucket": "up", "name": "a b/c.jpg", "generation": "17", "metadata": {"x": "1"}}

    parsed = [parse_delivery(*shape(resource)) for shape in SHAPES.values()]

    assert {p.ref for p in parsed} == {ObjectRef("up", "a b/c.jpg", "17")}
    assert all(p.finalized and p.metadata == {"x": "1"} for p in parsed)


def test_parse_delivery_refuses_a_body_that_is_no_event() -> None:
    with pytest.raises(BadRequest):
        parse_delivery({"Content-Type": "text/plain"}, b"hello")


def test_storage_down_answers_503_so_the_event_is_redelivered(
    make_app: AppFactory,
    private_gcs_emulator: GCSEmulator,
    oidc_issuer: OidcIssuer,
) -> None:
    bucket, uploads = new_bucket_name(), new_bucket_name()
    create_store_buckets(private_gcs_emulator, bucket)
    private_gcs_emulator.create_bucket(uploads)
    _, resource = put_original(uploads, "a.jpg", images.jpeg())
    client = make_app(
        storage=make_gcs_store(bucket, timeout=1.0, deadline=2.0),
        uploads_bucket=uploads,
        events_audience=AUDIENCE,
        events_service_account=PUSHER,
        oidc_certs_url=oidc_issuer.certs_url,
    ).test_client()
    private_gcs_emulator.stop()

    status, body = deliver(
        client, binary_cloudevent(resource), oidc_issuer.token(audience=AUDIENCE, email=PUSHER)
    )

    assert status == 503
    assert body["error"] == "storage_unavailable"


# -- fan-out through Cloud Tasks -------------------------------------------------------------
@pytest.fixture
def queued_client(events_app: Callable[..., Flask], tasks_server: TasksServer) -> FlaskClient:
    return events_app(
        tasks_queue=QUEUE,
        tasks_service_account=TASKER,
        tasks_api_endpoint=tasks_server.endpoint,
    ).test_client()


def test_with_a_queue_an_event_becomes_one_authenticated_task(
    queued_client: FlaskClient,
    tasks_server: TasksServer,
    uploads_bucket: str,
    app_store: ObjectStore,
    oidc_issuer: OidcIssuer,
) -> None:
    ref, resource = put_original(uploads_bucket, "big.jpg", images.jpeg())

    status, body = deliver(
        queued_client, pubsub_push(resource), oidc_issuer.token(audience=AUDIENCE, email=PUSHER)
    )

    assert (status, body["status"]) == (202, "enqueued")
    [task] = tasks_server.requests
    assert task.parent == QUEUE
    assert task.name == body["task"]
    assert task.name.startswith(f"{QUEUE}/tasks/")
    assert task.url == f"{AUDIENCE}/tasks/convert"
    assert task.http_method == "POST"
    assert (task.oidc_service_account, task.oidc_audience) == (TASKER, AUDIENCE)
    assert task.json_body() == {
        "bucket": uploads_bucket,
        "name": "big.jpg",
        "generation": ref.generation,
        "formats": None,
    }
    assert records(app_store) == []  # the task does the work, not the event


def test_a_redelivered_event_is_deduplicated_by_the_task_name(
    queued_client: FlaskClient,
    tasks_server: TasksServer,
    uploads_bucket: str,
    oidc_issuer: OidcIssuer,
) -> None:
    _, resource = put_original(uploads_bucket, "big.jpg", images.jpeg())
    token = oidc_issuer.token(audience=AUDIENCE, email=PUSHER)

    first = deliver(queued_client, binary_cloudevent(resource), token)
    again = deliver(queued_client, structured_cloudevent(resource), token)

    assert first == again
    assert first[0] == 202
    assert len(tasks_server.requests) == 2
    assert len(tasks_server.tasks) == 1


def test_an_event_already_converted_is_not_enqueued_again(
    events_app: Callable[..., Flask],
    tasks_server: TasksServer,
    uploads_bucket: str,
    oidc_issuer: OidcIssuer,
) -> None:
    _, resource = put_original(uploads_bucket, "a.jpg", images.jpeg())
    token = oidc_issuer.token(audience=AUDIENCE, email=PUSHER)
    _, converted = deliver(events_app().test_client(), pubsub_push(resource), token)
    queued = events_app(
        tasks_queue=QUEUE, tasks_service_account=TASKER, tasks_api_endpoint=tasks_server.endpoint
    ).test_client()

    status, body = deliver(queued, pubsub_push(resource), token)

    assert (status, body["record_id"]) == (200, converted["record_id"])
    assert tasks_server.requests == []


def test_a_queue_that_refuses_answers_503(
    queued_client: FlaskClient,
    tasks_server: TasksServer,
    uploads_bucket: str,
    oidc_issuer: OidcIssuer,
) -> None:
    tasks_server.fail_status = 503
    _, resource = put_original(uploads_bucket, "a.jpg", images.jpeg())

    status, body = deliver(
        queued_client, pubsub_push(resource), oidc_issuer.token(audience=AUDIENCE, email=PUSHER)
    )

    assert (status, body["error"]) == (503, "unavailable")


# -- the ledger on either store --------------------------------------------------------------
def test_the_first_settled_outcome_stands(any_store: ObjectStore) -> None:
    ledger = EventLedger(any_store)
    ref = ObjectRef("uploads", "a.jpg", "7")
    first = Outcome("converted", record_id="0000000000001aaaaaaaa")

    assert ledger.settle(ref, first) == first
    assert ledger.settle(ref, Outcome("converted", record_id="0000000000002bbbbbbbb")) == first
    assert ledger.outcome(ref) == first


def test_a_released_claim_can_be_taken_again(any_store: ObjectStore) -> None:
    ledger = EventLedger(any_store)
    ref = ObjectRef("uploads", "a.jpg", "7")
    token = ledger.claim(ref)
    assert token is not None
    assert ledger.claim(ref) is None

    ledger.release(ref, token)

    assert ledger.claim(ref) is not None
