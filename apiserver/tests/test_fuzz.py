"""Fuzz the HTTP API from its own OpenAPI document (schemathesis, valid and invalid inputs) and with raw hypothesis
requests: never a 5xx for anything a client sends, and nothing but liveness answers without the token."""

import json
from urllib.parse import quote

import schemathesis
from fakes import MemoryBackend
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from stateserver_api.app import create_app

TOKEN = "fuzz-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

backend = MemoryBackend()
app = create_app(backend, TOKEN)
schema = schemathesis.openapi.from_asgi("/v1/openapi.json", app, headers=AUTH)
schema.config.generation.update(modes=[schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE])


@schema.parametrize()
def test_authenticated_requests_never_get_a_server_error(case: schemathesis.Case) -> None:
    response = case.call(headers={**(case.headers or {}), **AUTH})
    assert response.status_code < 500, (case.method, case.formatted_path, response.status_code, response.text)
    assert response.status_code != 422, "validation errors must be 400"
    if response.status_code == 400:
        assert response.json()["detail"]


@schema.parametrize()
def test_unauthenticated_requests_are_refused(case: schemathesis.Case) -> None:
    headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    response = case.call(headers=headers)
    if case.path == "/v1/live":
        assert response.status_code in (200, 405)  # negative mode also tries methods liveness lacks
    else:
        assert response.status_code == 401, (case.method, case.formatted_path, response.status_code)


client = TestClient(app, raise_server_exceptions=False)
# HTTP trims whitespace around header values, so only tokens that differ in content are "wrong".
tokens = st.one_of(st.none(), st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=40),
                   st.just(TOKEN + "x"), st.just(TOKEN[:-1]), st.just(TOKEN.upper()), st.just(f"{TOKEN} {TOKEN}"))
paths = st.sampled_from(["/v1/ready", "/v1/ha-status", "/v1/api-addresses", "/v1/units", "/v1/units/u-1",
                         "/v1/units/u-1/heartbeat", "/v1/kv/k", "/v1/openapi.json", "/", "/v1/kv/"])


@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]), path=paths, token=tokens,
       body=st.binary(max_size=200))
def test_wrong_tokens_never_get_in(method: str, path: str, token: str | None, body: bytes) -> None:
    headers = {}
    if token is not None:
        headers["Authorization"] = "Bearer " + token
    response = client.request(method, path, headers=headers, content=body)
    assert response.status_code == 401


@given(body=st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(),
                         lambda children: st.lists(children, max_size=4)
                         | st.dictionaries(st.text(max_size=8), children, max_size=4), max_leaves=20),
       key=st.text(min_size=1, max_size=30), version=st.one_of(st.integers(), st.text(max_size=5), st.none()))
def test_arbitrary_json_writes_are_answered_without_server_errors(body: object, key: str, version: object) -> None:
    payload = {"value": body, "version": version, "request_id": "fuzz"}
    # json.dumps writes NaN/Infinity as bare words (not JSON); the server must refuse those with a 400 too.
    response = client.put(f"/v1/kv/{quote(key, safe='')}", headers={**AUTH, "Content-Type": "application/json"},
                          content=json.dumps(payload))
    assert response.status_code in (200, 400, 404, 405, 409), response.text
