"""Request logs are JSON lines with the request's facts and never the token or a written value."""

import json
import logging

import pytest
from fakes import MemoryBackend
from fastapi.testclient import TestClient
from stateserver_api.app import create_app
from stateserver_api.logs import JsonFormatter

TOKEN = "log-test-token-DO-NOT-LOG"


def test_request_logs_are_json_without_secrets(caplog: pytest.LogCaptureFixture) -> None:
    backend = MemoryBackend()
    client = TestClient(create_app(backend, TOKEN), raise_server_exceptions=False)
    with caplog.at_level(logging.INFO, logger="stateserver_api"):
        client.put("/v1/kv/k", headers={"Authorization": f"Bearer {TOKEN}", "X-Request-Id": "abc-1"},
                   json={"value": "SECRET-VALUE-42", "version": 0, "request_id": "r1"})
        client.get("/v1/ready", headers={"Authorization": "Bearer wrong-GUESS-99"})
        backend.down = "no writable primary reachable: test"
        client.get("/v1/ready", headers={"Authorization": f"Bearer {TOKEN}"})
    lines = [JsonFormatter().format(record) for record in caplog.records]
    parsed = [json.loads(line) for line in lines]
    requests = [p for p in parsed if p["msg"] == "request"]
    assert [(r["method"], r["path"], r["status"]) for r in requests] == [
        ("PUT", "/v1/kv/k", 200), ("GET", "/v1/ready", 401), ("GET", "/v1/ready", 503)]
    assert requests[0]["request_id"] == "abc-1"
    assert any(p.get("reason", "").startswith("no writable primary") for p in parsed)
    for line in lines:
        assert TOKEN not in line and "SECRET-VALUE" not in line and "GUESS" not in line
