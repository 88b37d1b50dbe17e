"""The pymongo adapter (_replset.py) without a replica set: seed probing, and what each server code becomes.

The codes are the ones mongod answers (src/mongo/base/error_codes.yml); the adapter turns each into the error class
the convergence loop acts on, so the loop's handling is tested in test_converge_loop.py with fakes raising these.
"""

from __future__ import annotations

import socket
import time

import pytest
from ansible_collections.stateserver.ha.plugins.module_utils import _replset


def closed_ports(count: int) -> list[str]:
    """host:port strings on loopback where nothing listens (bound, then closed, so the port is free)."""
    seeds = []
    for i in range(count):
        with socket.socket() as s:
            s.bind((f"127.0.0.{i + 1}", 0))
            seeds.append(f"127.0.0.{i + 1}:{s.getsockname()[1]}")
    return seeds


def test_no_seed_answering_raises_no_seed_answered_with_each_seed_error_at_once():
    seeds = closed_ports(4)
    rs = _replset.ReplSet({"seeds": seeds, "server_selection_timeout": 10})
    start = time.monotonic()
    with pytest.raises(_replset.NoSeedAnswered) as err:
        rs.discover()
    # A refusal is final: no server-selection wait, whatever the configured timeout.
    assert time.monotonic() - start < 2
    assert sorted(err.value.answers) == sorted(seeds)
    assert all("nothing answers" in text for text in err.value.answers.values())
    assert isinstance(err.value, _replset.ReplSetError)
    assert all(seed in str(err.value) for seed in seeds)


def test_probe_asks_every_seed_in_parallel(monkeypatch):
    seeds = [f"10.0.0.{i}:37017" for i in range(1, 7)]
    rs = _replset.ReplSet({"seeds": seeds})

    def slow(seed):
        time.sleep(0.5)
        return {"setName": "stateserver", "me": seed}
    monkeypatch.setattr(rs, "_probe_one", slow)
    start = time.monotonic()
    answers = rs.probe()
    assert time.monotonic() - start < 1.5  # six half-second seeds, not three seconds
    assert sorted(answers) == sorted(seeds)


def test_discover_tells_an_uninitiated_set_from_a_foreign_one(monkeypatch):
    rs = _replset.ReplSet({"seeds": ["a", "b"]})
    monkeypatch.setattr(rs, "probe", lambda: {"a:37017": {"isWritablePrimary": False}, "b:37017": "refused"})
    assert rs.discover() is False
    monkeypatch.setattr(rs, "probe", lambda: {"a:37017": {"setName": "other"}, "b:37017": {"setName": "stateserver"}})
    with pytest.raises(_replset.ReplSetError, match="other") as err:
        rs.discover()
    assert not isinstance(err.value, _replset.NoSeedAnswered)
