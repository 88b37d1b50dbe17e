"""The pymongo adapter (_replset.py) without a replica set: seed probing, and what each server code becomes.

The codes are the ones mongod answers (src/mongo/base/error_codes.yml); the adapter turns each into the error class
the convergence loop acts on, so the loop's handling is tested in test_converge_loop.py with fakes raising these.
"""

from __future__ import annotations

import socket
import threading

import pytest
from ansible_collections.stateserver.ha.plugins.module_utils import _replset, _secrets
from pymongo.errors import AutoReconnect, OperationFailure, ServerSelectionTimeoutError


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
    with pytest.raises(_replset.NoSeedAnswered) as err:
        rs.discover()
    # A refusal is final: each seed's answer is the TCP refusal, not a server-selection timeout (scripts/bench-modules
    # prints what that costs).
    assert sorted(err.value.answers) == sorted(seeds)
    assert all("nothing answers" in text and "Timeout" not in text for text in err.value.answers.values())
    assert isinstance(err.value, _replset.ReplSetError)
    assert all(seed in str(err.value) for seed in seeds)


def test_a_seed_that_takes_the_connection_but_gives_no_hello_is_told_from_one_where_nothing_listens():
    # Something accepts and hangs up at once (as a TLS member does to a client that does not verify it).
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    closed = closed_ports(2)
    taken = f"127.0.0.1:{listener.getsockname()[1]}"
    try:
        rs = _replset.ReplSet({"seeds": [*closed, taken], "server_selection_timeout": 2})
        with pytest.raises(_replset.NoSeedAnswered) as err:
            rs.discover()
    finally:
        listener.close()
        rs.close()
    assert sorted(_replset.listening_but_silent(err.value.answers)) == [taken]
    assert _replset.listening_but_silent({closed[0]: err.value.answers[closed[0]], "h:1": {"ok": 1}}) == {}


def test_asking_whether_a_set_exists_refuses_to_call_a_seed_that_takes_connections_both_ways_silent():
    # deployment_secrets and deployment_certificates only make secrets or a CA where no set exists. Something that
    # takes the connection, plain and over TLS, yet answers no hello may be a member they cannot verify.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    closed = closed_ports(1)
    taken = f"127.0.0.1:{listener.getsockname()[1]}"
    params = {"seeds": [*closed, taken], "port": 37017, "replica_set": "stateserver", "tls": False,
              "tls_ca_file": None, "tls_certificate_key_file": None, "tls_certificate_key_file_password": None,
              "tls_allow_invalid_certificates": False, "server_selection_timeout": 1}
    try:
        with pytest.raises(_replset.ReplSetError, match="took a connection") as err:
            _secrets.answering_members(params)
        assert taken in str(err.value) and closed[0] not in str(err.value)
        # Where nothing listens at all, nothing runs: no member answers, and that is no error.
        assert _secrets.answering_members({**params, "seeds": closed}) == []
    finally:
        listener.close()


def test_probe_asks_every_seed_in_parallel(monkeypatch):
    seeds = [f"10.0.0.{i}:37017" for i in range(1, 7)]
    rs = _replset.ReplSet({"seeds": seeds})

    # Every seed's probe waits until all six are under way: asked one after another, the first would wait alone
    # and the barrier break (BrokenBarrierError).
    together = threading.Barrier(len(seeds), timeout=10)

    def waits_for_the_others(seed):
        together.wait()
        return {"setName": "stateserver", "me": seed}
    monkeypatch.setattr(rs, "_probe_one", waits_for_the_others)
    answers = rs.probe()
    assert sorted(answers) == sorted(seeds)
    assert not together.broken


def test_discover_tells_an_uninitiated_set_from_a_foreign_one(monkeypatch):
    rs = _replset.ReplSet({"seeds": ["a", "b"]})
    monkeypatch.setattr(rs, "probe", lambda: {"a:37017": {"isWritablePrimary": False}, "b:37017": "refused"})
    assert rs.discover() is False
    monkeypatch.setattr(rs, "probe", lambda: {"a:37017": {"setName": "other"}, "b:37017": {"setName": "stateserver"}})
    with pytest.raises(_replset.ReplSetError, match="other") as err:
        rs.discover()
    assert not isinstance(err.value, _replset.NoSeedAnswered)


class FakeAdmin:
    """The `admin` database of a fake client: replSetReconfig fails with a scripted error; replSetGetConfig
    answers with `installed` (the config the server has after the failure)."""

    def __init__(self, error, installed: dict) -> None:
        self.error = error
        self.installed = installed
        self.calls: list[str] = []

    def command(self, name, *args, **kwargs):
        self.calls.append(name)
        if name == "replSetReconfig":
            raise self.error
        if name == "replSetGetConfig":
            return {"config": self.installed}
        raise AssertionError(name)


class FakeClient:
    def __init__(self, admin: FakeAdmin) -> None:
        self.admin = admin

    def close(self) -> None:
        pass


OLD = {"_id": "stateserver", "version": 4, "members": [{"_id": 0, "host": "a:1", "votes": 1, "priority": 1.0}]}
NEW = {**OLD, "version": 5, "members": [*OLD["members"], {"_id": 1, "host": "b:1", "votes": 0, "priority": 0.0}]}


def refusing(code: int, installed: dict | None = None, errmsg: str = "refused") -> tuple[_replset.ReplSet, FakeAdmin]:
    admin = FakeAdmin(OperationFailure(errmsg, code, {"ok": 0, "errmsg": errmsg, "code": code}), installed or OLD)
    rs = _replset.ReplSet({"seeds": ["a:1"]})
    rs._client = FakeClient(admin)
    return rs, admin


@pytest.mark.parametrize("code", [74, 109, 117, 308])
def test_refusals_that_clear_by_themselves_are_transient_with_their_code(code):
    rs, admin = refusing(code)
    with pytest.raises(_replset.TransientError) as err:
        rs.reconfig(NEW)
    assert err.value.code == code
    assert not isinstance(err.value, _replset.PrimaryChanged)
    assert admin.calls == ["replSetReconfig"]  # nothing re-sent


def test_node_not_electable_means_the_primary_changed():
    rs, _admin = refusing(104, errmsg="This node, a:1, with _id 0 is not electable under the new configuration")
    with pytest.raises(_replset.PrimaryChanged, match="not electable"):
        rs.reconfig(NEW)


def test_incompatible_config_carries_the_servers_words_and_the_version_sent():
    rs, _admin = refusing(103, errmsg="Non force replica set reconfig can only add or remove at most 1 voting member")
    with pytest.raises(_replset.ConfigIncompatible) as err:
        rs.reconfig(NEW)
    assert err.value.version == 5
    assert err.value.errmsg == "Non force replica set reconfig can only add or remove at most 1 voting member"
    assert not isinstance(err.value, _replset.TransientError)


@pytest.mark.parametrize("code", [189, 10107, 11602, 50])
@pytest.mark.parametrize("installed, landed", [(NEW, True), (OLD, False)])
def test_an_unknown_outcome_is_verified_by_reading_never_resent(code, installed, landed):
    rs, admin = refusing(code, installed)
    assert rs.reconfig(NEW) is landed
    assert admin.calls == ["replSetReconfig", "replSetGetConfig"]


def test_other_refusals_are_final():
    rs, _admin = refusing(93, errmsg="bad config")
    with pytest.raises(_replset.ReplSetError, match="rejected by the server") as err:
        rs.reconfig(NEW)
    assert not isinstance(err.value, (_replset.TransientError, _replset.ConfigIncompatible))


def test_the_reconfig_wait_is_bounded_by_the_callers_deadline():
    seen = {}

    class Admin(FakeAdmin):
        def command(self, name, *args, **kwargs):
            seen.update(kwargs)
            return {"ok": 1}
    rs = _replset.ReplSet({"seeds": ["a:1"]})
    rs._client = FakeClient(Admin(None, OLD))
    assert rs.reconfig(NEW, max_time=2.5) is True
    assert seen["maxTimeMS"] == 2500


def test_bad_connection_options_are_refused_before_any_client_exists():
    with pytest.raises(_replset.ReplSetError, match="port must be from 1 to 65535"):
        _replset.ReplSet({"seeds": ["a"], "port": 70000})
    with pytest.raises(_replset.ReplSetError, match="server_selection_timeout"):
        _replset.ReplSet({"seeds": ["a"], "server_selection_timeout": float("nan")})


def test_too_stale_asks_each_recovering_member_itself(monkeypatch):
    # Only the member knows it is too stale (replSetGetStatus tooStale: true on itself); the others see RECOVERING.
    asked = []

    class Client:
        def __init__(self, host, **opts):
            assert opts["directConnection"] is True
            self.host = host
            self.admin = self

        def command(self, name):
            asked.append((self.host, name))
            if self.host == "down:1":
                raise _replset.PyMongoError("connection refused")
            return {"myState": 3, "tooStale": True} if self.host == "stale:1" else {"myState": 3}

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False
    monkeypatch.setattr(_replset, "MongoClient", Client)
    rs = _replset.ReplSet({"seeds": ["a"]})
    assert rs.too_stale(["stale:1", "syncing:1", "down:1"]) == frozenset({"stale:1"})
    assert sorted(asked) == [("down:1", "replSetGetStatus"), ("stale:1", "replSetGetStatus"),
                             ("syncing:1", "replSetGetStatus")]
    assert rs.too_stale([]) == frozenset()


@pytest.mark.parametrize("option", ["tls_ca_file", "tls_certificate_key_file"])
def test_an_unreadable_tls_file_is_named_before_any_connection(tmp_path, option):
    missing = tmp_path / "absent.pem"
    with pytest.raises(_replset.ReplSetError, match=f"{option} .*absent.pem.* cannot be read"):
        _replset.ReplSet({"seeds": ["127.0.0.1:1"], "tls": True, option: str(missing)})
    readable = tmp_path / "ca.pem"
    readable.write_text("not checked here: pymongo reads it\n")
    _replset.ReplSet({"seeds": ["127.0.0.1:1"], "tls": True, option: str(readable)}).close()
    _replset.ReplSet({"seeds": ["127.0.0.1:1"], "tls": False, option: str(missing)}).close()


# -- one direct client per member for the run -----------------------------------------------------------------------

# Every HelloClient made in a test, in order (the `listening` fixture empties it).
MADE: list = []


class HelloClient:
    """A direct client whose hello answers, or raises the next scripted error; records itself in MADE."""

    def __init__(self, host: str, **opts) -> None:
        assert opts["directConnection"] is True
        self.host, self.admin, self.closed, self.errors = host, self, False, []
        MADE.append(self)

    def command(self, name, **kwargs):
        if self.errors:
            raise self.errors.pop(0)
        return {"setName": "stateserver", "me": self.host}

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def listening():
    """Two loopback addresses where something listens (the probe's TCP connect succeeds), and the fake client."""
    socks = []
    for _count in range(2):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen()
        socks.append(s)
    MADE.clear()
    yield [f"127.0.0.1:{s.getsockname()[1]}" for s in socks]
    for s in socks:
        s.close()


def test_hellos_keep_one_client_per_member_for_the_run_and_close_them_at_the_end(monkeypatch, listening):
    monkeypatch.setattr(_replset, "MongoClient", HelloClient)
    with _replset.ReplSet({"seeds": listening}) as rs:
        for _round in range(3):
            answers = rs.hellos(listening)
            assert all(answers[h]["me"] == h for h in listening)
        assert sorted(c.host for c in MADE) == sorted(listening)  # three rounds, one client each
        assert not any(c.closed for c in MADE)
    assert all(c.closed for c in MADE)


def test_a_kept_client_that_lost_its_connection_is_replaced_at_once(monkeypatch, listening):
    monkeypatch.setattr(_replset, "MongoClient", HelloClient)
    host = listening[0]
    with _replset.ReplSet({"seeds": [host]}) as rs:
        rs.hellos([host])
        first = MADE[0]
        first.errors.append(AutoReconnect("connection closed"))  # the member restarted since
        assert rs.hellos([host])[host]["me"] == host  # answered on a new client, in the same call
        assert first.closed and len(MADE) == 2


def test_a_new_client_that_cannot_reach_the_member_is_its_answer_with_no_second_try(monkeypatch, listening):
    def failing(host, **opts):
        client = HelloClient(host, **opts)
        client.errors.append(ServerSelectionTimeoutError("timed out"))  # TCP accepts, no hello comes back
        return client
    monkeypatch.setattr(_replset, "MongoClient", failing)
    host = listening[0]
    with _replset.ReplSet({"seeds": [host]}) as rs:
        assert rs.hellos([host]) == {host: "timed out"}
        assert len(MADE) == 1 and MADE[0].closed
        rs.hellos([host])
        assert len(MADE) == 2  # the next call starts afresh


def test_discover_takes_answers_the_caller_already_has(monkeypatch):
    rs = _replset.ReplSet({"seeds": ["a", "b"]})
    monkeypatch.setattr(rs, "probe", lambda: pytest.fail("the seeds were asked again"))
    assert rs.discover({"a:37017": {"setName": "stateserver"}, "b:37017": "refused"}) is True
    with pytest.raises(_replset.NoSeedAnswered):
        rs.discover({"a:37017": "refused", "b:37017": "refused"})


def exit_handlers_run(skip: bool) -> str:
    """What pymongo's exit handler printed in a process of its own: its two steps are replaced by prints (they are
    looked up when it runs), and the process exits as a module does, after exit_without_joining_monitors or not."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "from ansible_collections.stateserver.ha.plugins.module_utils import _replset\n"
        "from pymongo.synchronous import monitor\n"
        "monitor._shutdown_monitors = lambda: print('monitors closed')\n"
        "monitor._shutdown_executors = lambda: print('threads joined')\n"
        f"if {skip}:\n"
        "    _replset.exit_without_joining_monitors()\n"
        "    _replset.exit_without_joining_monitors()\n"
    )
    collections = Path(__file__).resolve().parents[2] / "build" / "collections"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60,
                         env={"PYTHONPATH": str(collections), "PATH": "/usr/bin:/bin"})
    return out.stdout


def test_a_module_process_does_not_wait_for_pymongo_monitor_threads_at_exit():
    # pymongo's exit handler joins every monitor thread, each of which sleeps up to 0.5 s before it sees its client
    # was closed; the modules close their clients and skip it (called twice: the second call changes nothing).
    assert exit_handlers_run(skip=False).split("\n")[:2] == ["monitors closed", "threads joined"]
    assert exit_handlers_run(skip=True) == ""
