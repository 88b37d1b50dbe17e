"""An in-memory Backend with the same contract as MongoBackend (versions, replay by request id, 404s), and a
switch that makes every call fail as if there were no primary. Used by the HTTP-level tests and the fuzzer."""

from __future__ import annotations

import threading
from typing import Any

from stateserver_api.backend import APPLIED_WINDOW
from stateserver_api.errors import Conflict, NoPrimary, NotFound
from stateserver_api.status import SetReading


class MemoryBackend:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.kv: dict[str, dict[str, Any]] = {}
        self.units: dict[str, dict[str, Any]] = {}
        self.machines = [
            {"_id": "m0", "mongo_address": "127.30.9.1:37017", "api_address": "127.30.9.1:17070", "wants_vote": True},
            {"_id": "m1", "mongo_address": "127.30.9.2:37017", "api_address": "127.30.9.2:17070", "wants_vote": True},
        ]
        self.down: str | None = None
        self.applied_writes = 0

    def _check(self) -> None:
        if self.down:
            raise NoPrimary(self.down)

    def ready(self) -> dict[str, Any]:
        self._check()
        return {"ready": True, "primary": "127.30.9.1:37017", "replica_set": "stateserver"}

    def read_set(self) -> SetReading:
        self._check()
        config = {"_id": "stateserver", "version": 3, "term": 1, "members": [
            {"_id": i, "host": m["mongo_address"], "votes": 1, "tags": {"stateserver-machine": m["_id"]}}
            for i, m in enumerate(self.machines)]}
        status = {"set": "stateserver", "members": [
            {"name": m["mongo_address"], "state": 1 if i == 0 else 2, "stateStr": "PRIMARY" if i == 0 else "SECONDARY",
             "health": 1} for i, m in enumerate(self.machines)]}
        return SetReading([dict(m) for m in self.machines], config, status, from_primary=True)

    def api_addresses(self) -> list[str]:
        self._check()
        return [m["api_address"] for m in self.machines]

    def register_unit(self, name: str) -> dict[str, Any]:
        self._check()
        with self.lock:
            unit = self.units.setdefault(name, {"name": name, "registered": "t0", "last_heartbeat": "t0"})
            return dict(unit)

    def heartbeat(self, name: str) -> dict[str, Any]:
        return self.get_unit(name)

    def get_unit(self, name: str) -> dict[str, Any]:
        self._check()
        if name not in self.units:
            raise NotFound(f"unit {name!r} is not registered")
        return dict(self.units[name])

    def kv_get(self, key: str) -> dict[str, Any]:
        self._check()
        if key not in self.kv:
            raise NotFound(f"key {key!r} does not exist")
        doc = self.kv[key]
        return {"key": key, "value": doc["value"], "version": doc["version"]}

    def kv_put(self, key: str, value: Any, version: int, request_id: str) -> dict[str, Any]:
        self._check()
        with self.lock:
            doc = self.kv.get(key)
            for applied in (doc or {}).get("applied", []):
                if applied["id"] == request_id:
                    return {"key": key, "version": applied["version"], "replayed": True}
            current = doc["version"] if doc else 0
            if current != version:
                raise Conflict(f"key {key!r} is at version {current}, not {version}", current)
            applied = ((doc or {}).get("applied", []) + [{"id": request_id, "version": version + 1}])[-APPLIED_WINDOW:]
            self.kv[key] = {"value": value, "version": version + 1, "applied": applied}
            self.applied_writes += 1
            return {"key": key, "version": version + 1, "replayed": False}

    def close(self) -> None:
        pass
