"""What the conformance tests share: one command on one member, configs, and starting a set with fast timings.

Only commands and options a real mongod has are used here, so the same calls drive ``$MONGOD_BIN``.
"""
from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from typing import Any

import pytest
from mongosim.testing import Cluster, Member
from pymongo.errors import AutoReconnect, NotPrimaryError, OperationFailure

# Short timings mongod accepts; every test that needs other values says so.
ELECTION_MS = 1000
HEARTBEAT_MS = 200
HEARTBEAT_TIMEOUT_SECS = 2


def run(member: Member, command: dict, **kwargs: Any) -> dict:
    """Run ``command`` (an ordered document, command name first) on ``member`` alone."""
    client = member.client(**kwargs)
    try:
        return client.admin.command(command)
    finally:
        client.close()


def refused(member: Member, command: dict, code: int, *fragments: str) -> dict:
    """Assert ``member`` refuses ``command`` with ``code`` and a message containing each fragment; the reply."""
    with pytest.raises((OperationFailure, NotPrimaryError)) as info:
        run(member, command)
    return assert_error(info.value, code, *fragments)


def assert_error(err: Any, code: int, *fragments: str) -> dict:
    """``err`` (an OperationFailure or a "not primary" error, whose reply pymongo keeps in ``details``) carries
    ``code`` and every message fragment; returns the reply."""
    assert isinstance(err, (OperationFailure, NotPrimaryError)), err
    details = err.details or {}
    assert details.get("code") == code, details
    for fragment in fragments:
        assert fragment in str(details.get("errmsg")), details
    return details


def config(member: Member, *, newly_added: bool = False) -> dict:
    """``replSetGetConfig``; ``newly_added=True`` asks for the server-managed newlyAdded flags too."""
    command: dict = {"replSetGetConfig": 1}
    if newly_added:
        command["$_internalIncludeNewlyAdded"] = True
    return run(member, command)["config"]


def status(member: Member) -> dict:
    return run(member, {"replSetGetStatus": 1})


def next_config(member: Member) -> dict:
    """The member's current config with the version raised by one (the term is the primary's to set)."""
    cfg = copy.deepcopy(config(member))
    cfg["version"] += 1
    cfg.pop("term", None)
    return cfg


def member_status(member: Member, address: str) -> dict:
    return next(m for m in status(member)["members"] if m["name"] == address)


def start_set(factory: Callable[..., Cluster], n: int = 3, *, settings: dict | None = None,
              overrides: dict[int, dict] | None = None, **cluster_kwargs: Any) -> Cluster:
    """Start and initiate ``n`` members; wait for a primary and n-1 secondaries."""
    s = {"electionTimeoutMillis": ELECTION_MS, "heartbeatIntervalMillis": HEARTBEAT_MS,
         "heartbeatTimeoutSecs": HEARTBEAT_TIMEOUT_SECS}
    s.update(settings or {})
    c = factory(n, initiate=False, election_timeout_ms=s["electionTimeoutMillis"],
                heartbeat_interval_ms=s["heartbeatIntervalMillis"], **cluster_kwargs)
    cfg = c.config_document(settings=s)
    for index, fields in (overrides or {}).items():
        cfg["members"][index].update(fields)
    c.initiate(cfg, wait=False)
    primary = c.wait_for_primary(60)
    c.wait_for_states({m.index: "SECONDARY" for m in c.members if m is not primary}, 60)
    return c


def secondaries(c: Cluster, primary: Member) -> list[Member]:
    return [m for m in c.members if m is not primary and m.running]


class Background:
    """Run a command in a thread; ``result()`` gives its reply or the OperationFailure it raised."""

    def __init__(self, member: Member, command: dict, **kwargs: Any) -> None:
        self._outcome: Any = None
        self._thread = threading.Thread(target=self._run, args=(member, command, kwargs), daemon=True)
        self._thread.start()

    def _run(self, member: Member, command: dict, kwargs: dict) -> None:
        try:
            self._outcome = run(member, command, **kwargs)
        except (OperationFailure, AutoReconnect) as e:  # NotPrimaryError is an AutoReconnect
            self._outcome = e

    def result(self, timeout: float) -> Any:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the command did not return in time"
        return self._outcome
