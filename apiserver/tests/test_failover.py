"""Three state machines on loopback (a replica-set member + an API server each). Losing the primary's machine is
invisible to a unit except for a pause, and no acknowledged write is lost or applied twice."""

from __future__ import annotations

import http.client
import json
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from machines import BLOCK, SET_NAME, Machine, StateMachines, mongod_binary, wait_for
from mongosim.testing import Cluster
from pymongo import MongoClient
from pymongo.errors import OperationFailure, PyMongoError
from stateserver_api.app import KEY_PATTERN
from stateserver_client import ClientError, StateClient, Unavailable

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(240),
    pytest.mark.skipif(mongod_binary() is None, reason="needs .venv/bin/mongosim or $MONGOD_BIN"),
]


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> StateMachines:
    machines = StateMachines(tmp_path)
    request.addfinalizer(machines.stop)
    return machines.start()


class Writer(threading.Thread):
    """A unit writing new keys in a loop; each write is retried by the client (same request id) until it is
    acknowledged, so the count of acknowledgements is exact."""

    def __init__(self, machines: StateMachines, cache: Path, prefix: str, seed: int) -> None:
        super().__init__(daemon=True)
        self.client = machines.client(cache, seed=seed, retry_for=60.0)
        self.prefix = prefix
        self.acked: list[str] = []
        self.failed: Exception | None = None
        self.stop_event = threading.Event()

    def run(self) -> None:
        try:
            while not self.stop_event.is_set():
                key = f"{self.prefix}-{len(self.acked):06d}"
                result = self.client.put(key, {"n": len(self.acked)}, 0)
                assert result["version"] == 1
                self.acked.append(key)
        except Exception as exc:  # noqa: BLE001 - reported by the test thread
            self.failed = exc
        finally:
            self.client.close()

    def wait_for_count(self, count: int, timeout: float) -> None:
        wait_for(lambda: len(self.acked) >= count or self.failed, timeout, f"{self.prefix}: {count} acknowledged writes")
        assert self.failed is None, self.failed


def sticky_cache(path: Path, address: str) -> Path:
    path.write_text(json.dumps({"last_address": address, "published": []}))
    return path


def test_killing_the_primary_machine_loses_and_doubles_nothing(cluster: StateMachines, tmp_path: Path) -> None:
    primary = cluster.primary()
    assert primary is not None
    survivor = next(m for m in cluster.machines if m is not primary)
    # One unit talks to the doomed machine's API server (its connection dies with it); the other talks to a
    # survivor's API server, whose in-flight write to the dying primary is retried inside the replica-set client.
    writers = [Writer(cluster, sticky_cache(tmp_path / "a.json", primary.api_address), "a", seed=11),
               Writer(cluster, sticky_cache(tmp_path / "b.json", survivor.api_address), "b", seed=12)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.wait_for_count(30, 60)

    cluster.kill(primary)
    counts_at_kill = [len(w.acked) for w in writers]

    # Both keep succeeding once a survivor is elected.
    for writer, count in zip(writers, counts_at_kill, strict=True):
        writer.wait_for_count(count + 40, 120)
    for writer in writers:
        writer.stop_event.set()
    for writer in writers:
        writer.join(90)
        assert not writer.is_alive() and writer.failed is None

    new_primary = wait_for(cluster.primary, 30, "a new primary")
    assert new_primary.name != primary.name
    acked = [key for writer in writers for key in writer.acked]
    with cluster.mongo() as c:
        docs = {d["_id"]: d for d in c[SET_NAME].kv.find({"_id": {"$regex": "^[ab]-"}})}
    assert len(docs) == len(acked)  # none lost, none extra
    assert set(docs) == set(acked)
    # Each key was applied exactly once: one write, version 1, one request id recorded.
    assert all(d["version"] == 1 and len(d["applied"]) == 1 for d in docs.values())


def test_published_addresses_follow_the_machine_records(cluster: StateMachines, tmp_path: Path) -> None:
    cache = tmp_path / "cache.json"
    with cluster.client(cache, seed=3) as client:
        before = client.refresh_addresses()
    assert sorted(before) == sorted(m.api_address for m in cluster.machines)

    # A fourth machine's API server (seeded with the existing members) and its record, as ensure_availability adds.
    extra = Machine("m4", cluster.spare_host())
    cluster.start_api(extra, seeds=[m.mongo_address for m in cluster.machines])
    cluster.write_record(extra)

    # A unit configured with only the first machine learns the new address from the API...
    with cluster.client(cache, seed=3) as client:
        client.configured = [cluster.machines[0].api_address]
        assert extra.api_address in client.refresh_addresses()

    # ...and uses it when every API server it was configured with is gone.
    for machine in cluster.machines:
        cluster.kill_api(machine)
    with cluster.client(cache, seed=5, retry_for=30.0) as client:
        client.configured = [cluster.machines[0].api_address]
        assert client.put("after-refresh", "ok", 0)["version"] == 1
        assert client.current == extra.api_address


def test_ha_status_reports_every_machine(cluster: StateMachines) -> None:
    with cluster.client(None, seed=1) as client:
        status = client.ha_status()
    primary = cluster.primary()
    assert status["replica_set"] == SET_NAME and isinstance(status["config_version"], int)
    assert [m["machine"] for m in status["machines"]] == ["m1", "m2", "m3"]
    assert all(m["wants_vote"] and m["has_vote"] for m in status["machines"])
    assert [m["machine"] for m in status["machines"] if m["primary"]] == [primary.name]
    assert status["primary"] == primary.mongo_address
    assert {m["state"] for m in status["machines"]} == {"PRIMARY", "SECONDARY"}
    assert all(m["api_answers"] for m in status["machines"])
    assert status["read_from"] == "primary" and status["record_problems"] == []

    # Majority loss: the survivor's API server is not ready (503 with the reason) but still reports the status,
    # marked as read from a member that is not primary.
    survivor = next(m for m in cluster.machines if m is not primary)
    for machine in cluster.machines:
        if machine is not survivor:
            cluster.kill(machine)
    with StateClient([survivor.api_address], cluster.token, retry_for=3.0, tls=cluster.tls) as client:
        with pytest.raises(Unavailable, match="503"):
            client.ready()
        client.retry_for = 30.0

        def without_primary() -> dict | None:
            status = client.ha_status()
            return status if status["primary"] is None else None

        degraded = wait_for(without_primary, 60, "the survivor to report no primary")
    assert degraded["read_from"] != "primary"
    states = {m["machine"]: m["state"] for m in degraded["machines"]}
    assert states[survivor.name] == "SECONDARY"
    answers = {m["machine"]: m["api_answers"] for m in degraded["machines"]}
    assert answers == {m.name: m is survivor for m in cluster.machines}


def test_units_register_heartbeat_and_conflict(cluster: StateMachines) -> None:
    with cluster.client(None, seed=2) as client:
        assert client.register("wordpress-0")["name"] == "wordpress-0"
        first = client.heartbeat("wordpress-0")["last_heartbeat"]
        time.sleep(0.01)
        assert client.heartbeat("wordpress-0")["last_heartbeat"] >= first
        client.put("shared", 1, 0, request_id="req-a")
        assert client.put("shared", 1, 0, request_id="req-a")["replayed"] is True  # a retry, applied once
        with pytest.raises(Exception, match="409"):
            client.put("shared", 2, 0, request_id="req-b")
        assert client.get("shared") == {"key": "shared", "value": 1, "version": 1}


def member_supports_auth(workdir: Path) -> bool:
    """Whether the member binary enforces authorization (a real mongod does; older simulator builds did not)."""
    with Cluster(1, block=BLOCK, workdir=workdir, spare=0) as probe:
        probe.start()
        with probe.members[0].client(serverSelectionTimeoutMS=3000) as c:
            try:
                c.admin.command("createUser", "probe", pwd="probe-password", roles=[])
            except OperationFailure as exc:
                return exc.code != 59  # CommandNotFound: a build without authentication
            except PyMongoError:
                return True  # refused for another reason (not primary yet): the command exists
    return True


def test_api_servers_log_in_to_a_set_with_authorization(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if not member_supports_auth(tmp_path / "probe"):
        pytest.skip("the replica-set member binary has no authentication")
    cluster = StateMachines(tmp_path, auth=True)
    request.addfinalizer(cluster.stop)
    cluster.start()
    with cluster.client(None, seed=4) as client:
        assert client.put("with-auth", "ok", 0)["version"] == 1
        assert client.get("with-auth")["value"] == "ok"
    anonymous = MongoClient(cluster.machines[0].mongo_address, directConnection=True, serverSelectionTimeoutMS=3000,
                            tls=True, tlsCAFile=cluster.ca.path)
    with anonymous, pytest.raises(OperationFailure):  # the members really refuse anyone without a login
        anonymous.stateserver.kv.find_one({})
    # An API server with the wrong password answers, but is never ready: 503 naming the credentials.
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-the-password\n")
    extra = Machine("m4", cluster.spare_host())
    cluster.start_api(extra, seeds=[m.mongo_address for m in cluster.machines], password_file=wrong)
    response = extra.get("/v1/ready", headers={"Authorization": f"Bearer {cluster.token}"}, timeout=30)
    assert response.status_code == 503
    assert "credentials" in response.json()["detail"]


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=15)


def test_live_api_round_trips_arbitrary_json(cluster: StateMachines) -> None:
    """Fuzz through a real API server and replica set: any JSON value (dollar keys, dots, huge integers, unicode)
    is stored and read back unchanged, and the version advances by one per write."""
    client = cluster.client(None, seed=9)

    @settings(max_examples=40, deadline=None)
    @given(value=JSON_VALUES, key=st.from_regex(KEY_PATTERN, fullmatch=True))
    def round_trip(value: object, key: str) -> None:
        try:
            version = client.get(key)["version"]
        except ClientError as exc:
            assert exc.status == 404
            version = 0
        assert client.put(key, value, version)["version"] == version + 1
        assert client.get(key) == {"key": key, "value": value, "version": version + 1}

    try:
        round_trip()
    finally:
        client.close()


def test_corrupt_and_surrogate_documents_answer_409_on_a_kept_connection(cluster: StateMachines) -> None:
    """Before the fix a PUT of "\\ud800" was stored and every later GET of the key answered 500 on every server,
    and a corrupt document reset the keep-alive connection. Now the write is refused and stored oddities are a
    409 naming the key, answered on the same connection."""
    with cluster.mongo() as mongo:
        mongo[SET_NAME].kv.insert_many([{"_id": "old-surrogate", "value_json": '"\\ud800"', "version": 1},
                                        {"_id": "hand-edited", "value_json": "{oops", "version": 2}])
    machine = cluster.machines[0]
    connection = http.client.HTTPSConnection(machine.host, 17070, timeout=30, context=cluster.tls)
    headers = {"Authorization": f"Bearer {cluster.token}", "Content-Type": "application/json"}
    try:
        connection.request("PUT", "/v1/kv/new-surrogate", body=b'{"value": "\\ud800", "version": 0, "request_id": "r"}',
                           headers=headers)
        first = connection.getresponse()
        assert first.status == 400 and "surrogate" in json.loads(first.read())["detail"]
        sock = connection.sock
        for key, version in (("old-surrogate", 1), ("hand-edited", 2), ("new-surrogate", None)):
            connection.request("GET", f"/v1/kv/{key}", headers=headers)
            response = connection.getresponse()
            body = json.loads(response.read())
            if version is None:
                assert response.status == 404  # the refused write stored nothing
            else:
                assert response.status == 409 and body["current_version"] == version and key in body["detail"]
            assert not response.will_close and connection.sock is sock  # the same keep-alive connection
    finally:
        connection.close()
