"""Fuzz the HTTP API from its own OpenAPI document (schemathesis: valid and invalid inputs, and stateful workflows
that follow the document's links) and with raw hypothesis requests and a stateful model of the key/value contract:
never a 5xx for anything a client sends, and nothing but liveness answers without the token."""

import json
from typing import Any
from urllib.parse import quote

import schemathesis
from fakes import MemoryBackend
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule
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


class ApiWorkflow(schema.as_state_machine()):  # type: ignore[misc]
    """Stateful: sequences of calls linked through their answers (a unit registered, then heartbeated and read; a
    key written, then read and rewritten at the version the write returned), with valid and invalid inputs.
    Besides "no 5xx, no 422", schemathesis's own checks hold: documented status codes and content types, answers
    matching their schemas, and a resource that was created being found by the next call."""

    def setup(self) -> None:
        backend.kv.clear()
        backend.units.clear()

    def get_call_kwargs(self, case: schemathesis.Case) -> dict:
        return {"headers": {**(case.headers or {}), **AUTH}}

    def validate_response(self, response: Any, case: schemathesis.Case, additional_checks: Any = None,
                          **kwargs: Any) -> None:
        assert response.status_code < 500, (case.method, case.formatted_path, response.status_code, response.text)
        assert response.status_code != 422, "validation errors must be 400"
        super().validate_response(response, case, additional_checks, **kwargs)


TestApiWorkflow = ApiWorkflow.TestCase
TestApiWorkflow.settings = settings(max_examples=25, stateful_step_count=6, deadline=None,
                                    suppress_health_check=list(HealthCheck))


class KeyValueContract(RuleBasedStateMachine):
    """Stateful kv contract against a model (schemathesis starts its workflows from POST /v1/units only): writes at
    the current, a stale or an invalid version, retries of earlier writes by request id, and reads, in any order.
    A write applies exactly when its version is the key's, a retried request id is answered from its first
    application, and a read returns what the model holds."""

    def __init__(self) -> None:
        super().__init__()
        backend.kv.clear()
        self.model: dict[str, tuple[object, int]] = {}
        self.answers: dict[tuple[str, str], dict] = {}  # (key, request id) -> the answer of its first application

    @rule(key=st.sampled_from(["a", "b"]), value=st.integers() | st.text(max_size=5) | st.none(),
          stale=st.booleans(), request_id=st.sampled_from(["r1", "r2", "r3", "r4"]))
    def put(self, key: str, value: object, stale: bool, request_id: str) -> None:
        current = self.model.get(key, (None, 0))[1]
        version = current + 1 if stale else current
        response = client.put(f"/v1/kv/{key}", headers=AUTH,
                              json={"value": value, "version": version, "request_id": request_id})
        if (key, request_id) in self.answers:
            assert response.json() == {**self.answers[key, request_id], "replayed": True}
        elif stale:
            assert response.status_code == 409 and response.json()["current_version"] == current
        else:
            assert response.json() == {"key": key, "version": current + 1, "replayed": False}
            self.model[key] = (value, current + 1)
            self.answers[key, request_id] = response.json()

    @rule(key=st.sampled_from(["a", "b"]), version=st.sampled_from(["1", True, 1.0, -1, None]))
    def put_invalid_version(self, key: str, version: object) -> None:
        response = client.put(f"/v1/kv/{key}", headers=AUTH, json={"value": 1, "version": version, "request_id": "x"})
        assert response.status_code == 400

    @rule(key=st.sampled_from(["a", "b"]))
    def get(self, key: str) -> None:
        response = client.get(f"/v1/kv/{key}", headers=AUTH)
        if key in self.model:
            value, version = self.model[key]
            assert response.json() == {"key": key, "value": value, "version": version}
        else:
            assert response.status_code == 404


TestKeyValueContract = KeyValueContract.TestCase
TestKeyValueContract.settings = settings(max_examples=30, stateful_step_count=12, deadline=None)
