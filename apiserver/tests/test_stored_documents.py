"""Documents in stateserver.kv that the API did not write the way it writes them now (a lone surrogate stored before
values were checked, a hand edit, a foreign writer): each answer is an explicit 409 naming the key and the repair,
never a 500, and the problem is logged."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from stateserver_api.app import create_app
from stateserver_api.backend import MongoBackend

TOKEN = "stored-documents-token-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class FakeKv:
    """find_one/replace_one/insert_one over a dict: enough of a collection for MongoBackend's key/value calls."""

    def __init__(self, docs: dict[str, dict[str, Any]]) -> None:
        self.docs = docs

    def find_one(self, query: dict[str, Any]) -> dict[str, Any] | None:
        doc = self.docs.get(query["_id"])
        return None if doc is None else {"_id": query["_id"], **doc}

    def replace_one(self, query: dict[str, Any], replacement: dict[str, Any]) -> SimpleNamespace:
        doc = self.docs.get(query["_id"])
        if doc is None or doc.get("version") != query["version"]:
            return SimpleNamespace(matched_count=0)
        self.docs[query["_id"]] = replacement
        return SimpleNamespace(matched_count=1)


CORRUPT = {
    "surrogate": ({"value_json": '"\\ud800"', "version": 1}, 1),  # what the server stored before the fix
    "not-json": ({"value_json": "{not json", "version": 3}, 3),
    "nan": ({"value_json": "NaN", "version": 2}, 2),
    "no-value": ({"version": 4}, 4),
    "binary-value": ({"value_json": b"\x00\x01", "version": 5}, 5),
    "deep": ({"value_json": "[" * 100_000 + "]" * 100_000, "version": 6}, 6),
    "string-version": ({"value_json": "1", "version": "1"}, None),
    "bool-version": ({"value_json": "1", "version": True}, None),
    "no-version": ({"value_json": "1"}, None),
}


@pytest.fixture
def kv() -> FakeKv:
    return FakeKv({key: dict(doc) for key, (doc, _version) in CORRUPT.items()}
                  | {"good": {"value_json": '{"a":1}', "version": 7, "applied": ["junk", {"id": 5}]}})


@pytest.fixture
def client(kv: FakeKv) -> Iterator[TestClient]:
    backend = MongoBackend(["127.0.0.1:1"], server_selection_timeout_ms=100)  # never contacted: db is replaced
    backend.db = SimpleNamespace(kv=kv)  # type: ignore[assignment]
    try:
        yield TestClient(create_app(backend, TOKEN), raise_server_exceptions=False)
    finally:
        backend.close()


@pytest.mark.parametrize("key", sorted(CORRUPT))
def test_corrupt_documents_get_an_explicit_409_not_a_500(client: TestClient, key: str,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="stateserver_api"):
        response = client.get(f"/v1/kv/{key}", headers=AUTH)
    assert response.status_code == 409, response.text
    body = response.json()
    assert body["current_version"] == CORRUPT[key][1]
    assert repr(key) in body["detail"]
    assert ("PUT at version" in body["detail"]) is (CORRUPT[key][1] is not None)
    assert [r.getMessage() for r in caplog.records] == ["unreadable key/value document"]


def test_a_corrupt_value_is_repaired_by_a_put_at_its_version(client: TestClient, kv: FakeKv) -> None:
    stale = client.put("/v1/kv/not-json", headers=AUTH, json={"value": "fixed", "version": 1, "request_id": "r1"})
    assert stale.status_code == 409 and stale.json()["current_version"] == 3
    fixed = client.put("/v1/kv/not-json", headers=AUTH, json={"value": "fixed", "version": 3, "request_id": "r2"})
    assert fixed.json() == {"key": "not-json", "version": 4, "replayed": False}
    assert client.get("/v1/kv/not-json", headers=AUTH).json() == {"key": "not-json", "value": "fixed", "version": 4}


def test_a_corrupt_version_refuses_writes_with_the_repair(client: TestClient, kv: FakeKv) -> None:
    response = client.put("/v1/kv/string-version", headers=AUTH, json={"value": 2, "version": 1, "request_id": "r"})
    assert response.status_code == 409
    assert response.json()["current_version"] is None
    assert "delete the document" in response.json()["detail"]
    assert kv.docs["string-version"] == {"value_json": "1", "version": "1"}


def test_damaged_replay_entries_are_skipped(client: TestClient) -> None:
    assert client.get("/v1/kv/good", headers=AUTH).json() == {"key": "good", "value": {"a": 1}, "version": 7}
    written = client.put("/v1/kv/good", headers=AUTH, json={"value": 2, "version": 7, "request_id": "r"})
    assert written.json() == {"key": "good", "version": 8, "replayed": False}
