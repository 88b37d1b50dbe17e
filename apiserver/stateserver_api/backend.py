"""The API server's only pymongo adapter: primary reads, majority writes, and the idempotent key/value store.

Every pymongo failure leaves this module as NoPrimary with a reason a client can act on, so the app answers 503
(retry elsewhere or later) instead of 500. Request ids of recent writes are kept inside the document they changed,
so recording "request id applied" and the write itself are one atomic, majority-acknowledged operation.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Protocol

import pymongo
from pymongo import MongoClient, ReadPreference
from pymongo.errors import (
    ConnectionFailure,
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
    WriteConcernError,
)

from . import values
from .errors import Conflict, NoPrimary, NotFound, Unreadable
from .status import SetReading

log = logging.getLogger("stateserver_api")

REPLICA_SET = "stateserver"
DATABASE = "stateserver"
# A retried write older than this many later writes to the same key is reported as a conflict, not replayed.
APPLIED_WINDOW = 32


class Backend(Protocol):
    """What the HTTP layer needs; MongoBackend is the real one, tests may substitute an in-memory one."""

    def ready(self) -> dict[str, Any]: ...
    def read_set(self) -> SetReading: ...
    def api_addresses(self) -> list[str]: ...
    def register_unit(self, name: str) -> dict[str, Any]: ...
    def heartbeat(self, name: str) -> dict[str, Any]: ...
    def get_unit(self, name: str) -> dict[str, Any]: ...
    def kv_get(self, key: str) -> dict[str, Any]: ...
    def kv_put(self, key: str, value: Any, version: int, request_id: str) -> dict[str, Any]: ...
    def close(self) -> None: ...


@contextlib.contextmanager
def _as_no_primary() -> Iterator[None]:
    """Translate pymongo's failures into NoPrimary with a short reason (no credentials are ever in these)."""
    try:
        yield
    except ServerSelectionTimeoutError as exc:
        raise NoPrimary(f"no writable primary reachable: {_first_line(exc)}") from exc
    except WriteConcernError as exc:
        raise NoPrimary(f"write not confirmed by a majority of the replica set: {_first_line(exc)}") from exc
    except ConnectionFailure as exc:  # AutoReconnect, NotPrimaryError, NetworkTimeout
        raise NoPrimary(f"lost the connection to the primary: {_first_line(exc)}") from exc
    except OperationFailure as exc:
        if exc.code in (13, 18):
            raise NoPrimary("the replica set rejected the API server's credentials") from exc
        if exc.code in (10107, 13435, 11600, 11602, 189, 91):  # not primary / interrupted by step-down / shutdown
            raise NoPrimary(f"the primary stepped down: {_first_line(exc)}") from exc
        raise NoPrimary(f"database error {exc.code}: {_first_line(exc)}") from exc
    except PyMongoError as exc:
        raise NoPrimary(f"database error: {type(exc).__name__}") from exc


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(value: Any) -> str | None:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    return None


class MongoBackend:
    """Talks to the replica set: primary reads, w:majority writes, retryable writes, short server selection."""

    def __init__(
        self,
        seeds: list[str],
        replica_set: str = REPLICA_SET,
        username: str | None = None,
        password: str | None = None,
        server_selection_timeout_ms: int = 3000,
        connect_timeout_ms: int = 2000,
        wtimeout_ms: int = 5000,
        tls_options: dict[str, Any] | None = None,
    ) -> None:
        # tls_options: pymongo's own (tls, tlsCAFile, tlsCertificateKeyFile), passed through unchanged.
        kwargs: dict[str, Any] = dict(tls_options or {})
        if username:
            kwargs.update(username=username, password=password or "", authSource="admin")
        self.client: MongoClient = MongoClient(
            seeds,
            replicaSet=replica_set,
            readPreference="primary",
            w="majority",
            wTimeoutMS=wtimeout_ms,
            retryWrites=True,
            retryReads=True,
            serverSelectionTimeoutMS=server_selection_timeout_ms,
            connectTimeoutMS=connect_timeout_ms,
            # Notice a new primary within a second even when no request is waiting for one (default is 10 s).
            heartbeatFrequencyMS=1000,
            socketTimeoutMS=wtimeout_ms + 5000,
            appname="stateserver-api",
            **kwargs,
        )
        self.db = self.client[DATABASE]

    def close(self) -> None:
        self.client.close()

    def ready(self) -> dict[str, Any]:
        with _as_no_primary():
            hello = self.client.admin.command("hello")
        if not (hello.get("isWritablePrimary") or hello.get("ismaster")):
            raise NoPrimary("the selected member is no longer primary")
        return {"ready": True, "primary": hello.get("me") or hello.get("primary"), "replica_set": hello.get("setName")}

    def read_set(self) -> SetReading:
        """The records, config and status from the primary when there is one. Without one (an election, or majority
        loss, when status matters most) from any reachable member, and the reading says so: its view may be stale."""
        try:
            return self._read_set(ReadPreference.PRIMARY)
        except NoPrimary:
            return self._read_set(ReadPreference.NEAREST)

    def _read_set(self, read_preference: Any) -> SetReading:
        with _as_no_primary():
            machines = list(self.db.get_collection("machines", read_preference=read_preference).find({}))
            config = self.client.admin.command("replSetGetConfig", read_preference=read_preference).get("config")
            status = self.client.admin.command("replSetGetStatus", read_preference=read_preference)
        return SetReading(machines, config, status, read_preference == ReadPreference.PRIMARY)

    def api_addresses(self) -> list[str]:
        with _as_no_primary():
            records = list(self.db.machines.find({}, {"api_address": 1}).sort("_id", pymongo.ASCENDING))
        return [r["api_address"] for r in records if isinstance(r.get("api_address"), str) and r["api_address"]]

    def register_unit(self, name: str) -> dict[str, Any]:
        now = _now()
        with _as_no_primary():
            try:
                self.db.units.update_one(
                    {"_id": name}, {"$setOnInsert": {"registered": now}, "$set": {"last_heartbeat": now}}, upsert=True
                )
            except DuplicateKeyError:  # two concurrent first registrations; the other one inserted it
                self.db.units.update_one({"_id": name}, {"$set": {"last_heartbeat": now}})
            return self._unit(name)

    def heartbeat(self, name: str) -> dict[str, Any]:
        with _as_no_primary():
            result = self.db.units.update_one({"_id": name}, {"$set": {"last_heartbeat": _now()}})
            if result.matched_count == 0:
                raise NotFound(f"unit {name!r} is not registered")
            return self._unit(name)

    def get_unit(self, name: str) -> dict[str, Any]:
        with _as_no_primary():
            return self._unit(name)

    def _unit(self, name: str) -> dict[str, Any]:
        doc = self.db.units.find_one({"_id": name})
        if doc is None:
            raise NotFound(f"unit {name!r} is not registered")
        return {"name": name, "registered": _iso(doc.get("registered")), "last_heartbeat": _iso(doc.get("last_heartbeat"))}

    def kv_get(self, key: str) -> dict[str, Any]:
        with _as_no_primary():
            doc = self.db.kv.find_one({"_id": key})
        if doc is None:
            raise NotFound(f"key {key!r} does not exist")
        return {"key": key, "value": _stored_value(key, doc), "version": _stored_version(key, doc)}

    def kv_put(self, key: str, value: Any, version: int, request_id: str) -> dict[str, Any]:
        """Write value if the key is at `version` (0 = absent). A write whose request id was already applied
        returns the original result (replayed=true) instead of applying twice or reporting a conflict."""
        value_json = values.encode(value)
        new_version = version + 1
        with _as_no_primary():
            if version == 0:
                doc = {"_id": key, "value_json": value_json, "version": 1, "updated": _now(),
                       "applied": [{"id": request_id, "version": 1}]}
                try:
                    self.db.kv.insert_one(doc)
                    return {"key": key, "version": 1, "replayed": False}
                except DuplicateKeyError:
                    pass
            else:
                current = self.db.kv.find_one({"_id": key})
                if current is not None and current.get("version") == version:
                    applied = [a for a in _applied(current) if a["id"] != request_id]
                    applied = (applied + [{"id": request_id, "version": new_version}])[-APPLIED_WINDOW:]
                    result = self.db.kv.replace_one(
                        {"_id": key, "version": version},
                        {"value_json": value_json, "version": new_version, "updated": _now(), "applied": applied},
                    )
                    if result.matched_count == 1:
                        return {"key": key, "version": new_version, "replayed": False}
            current = self.db.kv.find_one({"_id": key})
        return self._replay_or_conflict(key, version, request_id, current)

    @staticmethod
    def _replay_or_conflict(key: str, version: int, request_id: str, current: dict | None) -> dict[str, Any]:
        for applied in _applied(current or {}):
            if applied["id"] == request_id:
                return {"key": key, "version": applied["version"], "replayed": True}
        current_version = 0 if current is None else _stored_version(key, current)
        raise Conflict(f"key {key!r} is at version {current_version}, not {version}", current_version)


def _applied(doc: dict) -> list[dict]:
    """The well-formed entries of a document's applied list (a damaged entry only loses its replay)."""
    entries = doc.get("applied")
    return [a for a in entries if isinstance(a, dict) and isinstance(a.get("id"), str) and _is_version(a.get("version"))
            ] if isinstance(entries, list) else []


def _is_version(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _unreadable(key: str, problem: str, version: int | None) -> Unreadable:
    if version is None:
        repair = "delete the document from the stateserver.kv collection"
    else:
        repair = f"write the key again with PUT at version {version} to replace it"
    log.error("unreadable key/value document", extra={"reason": f"key {key!r}: {problem}", "event": "corrupt"})
    return Unreadable(f"key {key!r} is stored in a form the API cannot serve ({problem}); {repair}", version)


def _stored_version(key: str, doc: dict) -> int:
    version = doc.get("version")
    if not _is_version(version):
        raise _unreadable(key, f"its version is {type(version).__name__} {version!r:.40}, not a whole number", None)
    return version


def _stored_value(key: str, doc: dict) -> Any:
    version = _stored_version(key, doc)
    try:
        return values.decode(doc.get("value_json"))
    except values.BadValue as exc:
        raise _unreadable(key, str(exc), version) from exc
