"""HTTP behaviour of the API over an in-memory backend: auth, status codes, optimistic concurrency, replay."""

import json

import pytest
from fakes import MemoryBackend
from fastapi.testclient import TestClient
from stateserver_api.app import create_app
from stateserver_api.limits import MAX_BODY_BYTES

TOKEN = "s3cret-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def backend() -> MemoryBackend:
    return MemoryBackend()


@pytest.fixture
def client(backend: MemoryBackend) -> TestClient:
    return TestClient(create_app(backend, TOKEN), raise_server_exceptions=False)


def test_liveness_needs_no_token(client: TestClient) -> None:
    assert client.get("/v1/live").json() == {"status": "ok"}


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/v1/ready"), ("GET", "/v1/ha-status"), ("GET", "/v1/api-addresses"), ("POST", "/v1/units"),
    ("GET", "/v1/kv/a"), ("PUT", "/v1/kv/a"), ("GET", "/v1/openapi.json"), ("GET", "/v1/nowhere"),
])
@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer "])
def test_every_other_endpoint_needs_the_token(client: TestClient, method: str, path: str, header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    response = client.request(method, path, headers=headers, content=b"{not json")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_optimistic_concurrency_and_replay(client: TestClient, backend: MemoryBackend) -> None:
    first = client.put("/v1/kv/colour", headers=AUTH, json={"value": "red", "version": 0, "request_id": "r1"})
    assert first.status_code == 200 and first.json() == {"key": "colour", "version": 1, "replayed": False}
    # The same request again (a retry) is answered from the record of the first, not applied twice.
    again = client.put("/v1/kv/colour", headers=AUTH, json={"value": "red", "version": 0, "request_id": "r1"})
    assert again.json() == {"key": "colour", "version": 1, "replayed": True}
    stale = client.put("/v1/kv/colour", headers=AUTH, json={"value": "blue", "version": 0, "request_id": "r2"})
    assert stale.status_code == 409 and stale.json()["current_version"] == 1
    ok = client.put("/v1/kv/colour", headers=AUTH, json={"value": {"rgb": [0, 0, 255]}, "version": 1,
                                                         "request_id": "r3"})
    assert ok.json()["version"] == 2
    assert client.get("/v1/kv/colour", headers=AUTH).json() == {"key": "colour", "value": {"rgb": [0, 0, 255]},
                                                                "version": 2}
    assert backend.applied_writes == 2


@pytest.mark.parametrize("body", [
    {"value": 1, "version": -1, "request_id": "r"},
    {"value": 1, "version": "one", "request_id": "r"},
    {"value": 1, "version": 0},
    {"value": 1, "version": 0, "request_id": "has space"},
    {"value": 1, "version": 0, "request_id": "r", "extra": True},
    {"value": "x" * 70000, "version": 0, "request_id": "r"},
    [1, 2],
])
def test_bad_writes_get_400_with_a_message(client: TestClient, body: object) -> None:
    response = client.put("/v1/kv/k", headers=AUTH, json=body)
    assert response.status_code == 400
    assert response.json()["detail"]


def test_non_finite_numbers_and_garbage_bodies_are_400(client: TestClient) -> None:
    for raw in (b'{"value": NaN, "version": 0, "request_id": "r"}', b'{"value": 1e999, "version": 0, "request_id": "r"}',
                b"\xff\xfe", b"[" * 5000):
        response = client.put("/v1/kv/k", headers={**AUTH, "Content-Type": "application/json"}, content=raw)
        assert response.status_code == 400, raw[:20]


def test_bad_key_is_400(client: TestClient) -> None:
    assert client.get("/v1/kv/$where", headers=AUTH).status_code == 400


def test_no_primary_is_503_with_the_reason(client: TestClient, backend: MemoryBackend) -> None:
    backend.down = "no writable primary reachable: election in progress"
    for method, path in (("GET", "/v1/ready"), ("GET", "/v1/kv/a"), ("GET", "/v1/api-addresses")):
        response = client.request(method, path, headers=AUTH)
        assert response.status_code == 503
        assert "election in progress" in response.json()["detail"]


def test_units_register_and_heartbeat(client: TestClient) -> None:
    assert client.post("/v1/units/ghost/heartbeat", headers=AUTH).status_code == 404
    assert client.post("/v1/units", headers=AUTH, json={"name": "wordpress-0"}).json()["name"] == "wordpress-0"
    assert client.post("/v1/units/wordpress-0/heartbeat", headers=AUTH).status_code == 200


def test_ha_status_and_published_addresses(client: TestClient) -> None:
    status = client.get("/v1/ha-status", headers=AUTH).json()
    assert [m["machine"] for m in status["machines"]] == ["m0", "m1"]
    assert status["primary"] == "127.30.9.1:37017" and status["config_version"] == 3
    assert status["machines"][0]["has_vote"] and status["machines"][0]["primary"]
    assert client.get("/v1/api-addresses", headers=AUTH).json() == {
        "addresses": ["127.30.9.1:17070", "127.30.9.2:17070"]}


def test_empty_token_is_refused() -> None:
    with pytest.raises(ValueError):
        create_app(MemoryBackend(), "")


@pytest.mark.parametrize("version", ["1", True, 1.0, "0", False, 0.0, None])
def test_versions_that_are_not_json_integers_are_400(client: TestClient, backend: MemoryBackend,
                                                     version: object) -> None:
    response = client.put("/v1/kv/k", headers=AUTH, json={"value": 1, "version": version, "request_id": "r"})
    assert response.status_code == 400
    assert response.json()["detail"].startswith("version:")
    assert backend.kv == {}


@pytest.mark.parametrize("raw", [b'{"value": "\\ud800", "version": 0, "request_id": "r"}',
                                 b'{"value": {"\\udfff": 1}, "version": 0, "request_id": "r"}',
                                 b'{"value": ["ok", "a\\ud83d"], "version": 0, "request_id": "r"}'])
def test_lone_surrogate_values_are_400_and_not_stored(client: TestClient, backend: MemoryBackend, raw: bytes) -> None:
    response = client.put("/v1/kv/k", headers={**AUTH, "Content-Type": "application/json"}, content=raw)
    assert response.status_code == 400
    assert "surrogate" in response.json()["detail"]
    assert backend.kv == {}
    # A proper surrogate pair is one character, and is stored.
    pair = b'{"value": "\\ud83d\\ude00", "version": 0, "request_id": "r"}'
    assert client.put("/v1/kv/k", headers={**AUTH, "Content-Type": "application/json"}, content=pair).status_code == 200
    assert client.get("/v1/kv/k", headers=AUTH).json()["value"] == "\U0001f600"


def test_unit_names_must_be_strings(client: TestClient) -> None:
    assert client.post("/v1/units", headers=AUTH, json={"name": 5}).status_code == 400


def test_a_value_at_the_limit_in_its_longest_spelling_fits_the_body_limit(client: TestClient) -> None:
    # 64 KiB of UTF-8 that a client sends escaped (\u00e9 is six bytes for two), indented: the body limit still
    # takes it, so only the value limit decides.
    value = {"text": "\u00e9" * (32 * 1024 - 20)}
    body = json.dumps({"value": value, "version": 0, "request_id": "r"}, ensure_ascii=True, indent=8)
    assert len(body) > 3 * 64 * 1024 - 1024
    response = client.put("/v1/kv/k", headers={**AUTH, "Content-Type": "application/json"}, content=body)
    assert response.status_code == 200, response.text


def test_an_over_limit_body_is_413_without_being_parsed(client: TestClient, backend: MemoryBackend) -> None:
    big = b'{"value": "' + b"x" * MAX_BODY_BYTES + b'", "version": 0, "request_id": "r"}'
    response = client.put("/v1/kv/k", headers={**AUTH, "Content-Type": "application/json"}, content=big)
    assert response.status_code == 413
    assert response.headers["connection"] == "close"
    chunked = client.put("/v1/kv/k", headers={**AUTH, "Content-Type": "application/json"},
                         content=iter([big[:1000], big[1000:]]))
    assert chunked.status_code == 413
    assert backend.kv == {}


def test_an_unauthenticated_body_is_never_read(client: TestClient) -> None:
    response = client.put("/v1/kv/k", content=b"x" * (MAX_BODY_BYTES * 2))
    assert response.status_code == 401  # not 413: nothing is revealed, and the connection is closed
    assert response.headers["connection"] == "close"
