"""ensure_availability and peergroup run through ansible-playbook against real replica-set processes on loopback.

Every test starts its own cluster in its own /24 of 127.20.0.0/16 (every member on the default port 37017), runs
playbooks, and asserts on what pymongo reads back from the set: config, status, machine records, documents.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest
from cluster import MACHINE_TAG, Cluster
from playbook import run_tasks
from pymongo import MongoClient
from pymongo.errors import PyMongoError
from pymongo.write_concern import WriteConcern

pytestmark = pytest.mark.timeout(480)

EA = "stateserver.ha.ensure_availability"
PG = "stateserver.ha.peergroup"
STATUS = "stateserver.ha.ha_status_info"


def pool(cluster: Cluster, count: int) -> list[dict]:
    # Addresses without a port: the module's port default (37017) must complete them.
    return [{"name": cluster.names[i], "address": cluster.hosts[i]} for i in range(count)]


def conn(cluster: Cluster, seeds: int | None = None) -> dict:
    return {"seeds": cluster.addresses[: seeds or len(cluster.addresses)], "server_selection_timeout": 10}


def ea(cluster: Cluster, n, count: int, **extra) -> dict:
    return {EA: {"n": n, "pool": pool(cluster, count), "down_after": extra.pop("down_after", 60),
                 **conn(cluster), **extra}}


def pg(cluster: Cluster, timeout: float = 120, **extra) -> dict:
    return {PG: {"timeout": timeout, **conn(cluster), **extra}}


def voters(config: dict) -> set[str]:
    return {m["tags"][MACHINE_TAG] for m in config["members"] if m.get("votes", 1) > 0}


def assert_converged(cluster: Cluster, machines: list[str]) -> None:
    """The records, the config's voters and the status all say: these machines vote, one primary, all healthy."""
    config, status, records = cluster.read()
    assert sorted(r["_id"] for r in records) == sorted(machines)
    assert all(r["wants_vote"] for r in records)
    assert voters(config) == set(machines)
    assert len(voters(config)) % 2 == 1
    for m in config["members"]:
        assert m["tags"][MACHINE_TAG] in machines
        assert m["host"] == cluster.addresses[cluster.names.index(m["tags"][MACHINE_TAG])]
    assert [m["name"] for m in status["members"] if m["state"] == 1].__len__() == 1
    assert all(m["health"] == 1 and m["state"] in (1, 2) for m in status["members"])


class ConnectionCounter:
    """A TCP listener that only counts the connections made to it."""

    def __init__(self, host: str) -> None:
        self.sock = socket.socket()
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                c = self.sock.accept()[0]
            except OSError:
                continue
            self.accepted += 1
            c.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


BAD_N = [0, 1, 2, 4, 6, 8, 9, -1, "abc", 3.5]


def test_bad_n_fails_before_any_connection(tmp_path):
    counter = ConnectionCounter("127.20.0.1")
    try:
        tasks = [{EA: {"n": n, "seeds": [f"127.20.0.1:{counter.port}"], "server_selection_timeout": 2,
                       "pool": [{"name": "sm1", "address": "127.20.0.1"}]}} for n in BAD_N]
        run = run_tasks(tmp_path, tasks)
    finally:
        counter.close()
    assert len(run.results) == len(BAD_N), run.stdout + run.stderr
    for n, result in zip(BAD_N, run.results):
        assert result.get("failed") is True, (n, result)
        msg = result["msg"]
        assert "n" in msg and str(n) in msg, (n, msg)
        if isinstance(n, int):
            # A whole number that is not a choice is told the choices; anything else gets Ansible's type message.
            assert all(v in msg for v in ("3", "5", "7")), (n, msg)
        assert result.get("changed") is False
    assert counter.accepted == 0


def test_bootstrap_then_grow_3_5_7(tmp_path, cluster_factory):
    cluster = cluster_factory(size=7)
    # No replica set yet: the plan names the bootstrap machine and nothing is written anywhere.
    run = run_tasks(tmp_path / "plan", [ea(cluster, 3, 3), {STATUS: conn(cluster)}])
    assert run[0].get("failed") is not True, run[0]
    assert run[0]["bootstrap"] == "sm1"
    assert run[0]["machines"][0] == "sm1"
    assert run[1].get("failed") is not True and run[1]["initiated"] is False, run[1]
    assert cluster.is_uninitiated(0)

    cluster.initiate(0)
    for n in (3, 5, 7):
        version_before = cluster.read()[0]["version"]
        records_before = cluster.read()[2]
        machines = cluster.names[:n]
        # Check mode: reports a plan and steps, changes nothing.
        run = run_tasks(tmp_path / f"check{n}", [ea(cluster, n, n), pg(cluster)], check=True)
        assert run[0].get("failed") is not True, run[0]
        assert run[0]["changed"] is True
        assert set(run[0]["added"]) | set(run[0]["maintained"]) == set(machines)
        if records_before:
            # Check mode wrote no records, so the recorded group is already in place: nothing to plan.
            assert run[1].get("failed") is not True and run[1]["changed"] is False, run[1]
            assert run[1]["steps"] == [] and set(run[1]["voters"]) == {r["_id"] for r in records_before}
        else:
            # Check mode wrote no records: peergroup refuses to guess whose set this is, and changes nothing.
            assert run[1].get("failed") is True and run[1]["changed"] is False, run[1]
        config, _status, records = cluster.read()
        assert config["version"] == version_before
        assert records == records_before

        # Real run, then a second run that has nothing to do.
        run = run_tasks(tmp_path / f"grow{n}", [ea(cluster, n, n), pg(cluster), ea(cluster, n, n), pg(cluster)],
                        diff=True)
        first_ea, first_pg, second_ea, second_pg = run.results
        for r in run.results:
            assert r.get("failed") is not True, r
        assert first_ea["changed"] is True and first_ea["target"] == n
        assert first_pg["changed"] is True and first_pg["converged"] is True
        assert first_pg["steps"] and all(s["config_version"] > version_before for s in first_pg["steps"])
        assert set(first_pg["voters"]) == set(machines)
        assert "diff" in first_pg and first_pg["diff"]["before"]["members"] != first_pg["diff"]["after"]["members"]
        assert "diff" in first_ea and len(first_ea["diff"]["after"]["records"]) == n
        assert second_ea["changed"] is False
        assert second_pg["changed"] is False and second_pg["steps"] == [] and second_pg["converged"] is True
        assert_converged(cluster, machines)

    # Asking for fewer voters than there are never shrinks the set.
    version = cluster.read()[0]["version"]
    run = run_tasks(tmp_path / "shrink", [ea(cluster, 3, 7), pg(cluster), {STATUS: conn(cluster)}])
    assert run[0].get("failed") is not True and run[0]["changed"] is False, run[0]
    assert run[1].get("failed") is not True and run[1]["changed"] is False, run[1]
    status = run[2]
    assert status.get("failed") is not True and status["converged"] is True, status
    assert status["voters"] == cluster.names and len(status["records"]) == 7
    assert status["primary"] == cluster.addresses[cluster.names.index(cluster.primary_name())]
    assert cluster.read()[0]["version"] == version
    assert_converged(cluster, cluster.names)


class Writer:
    """Inserts numbered documents with w:majority in a loop and remembers which ones were acknowledged."""

    def __init__(self, cluster: Cluster) -> None:
        self.client = MongoClient(cluster.addresses, replicaSet=cluster.set_name, serverSelectionTimeoutMS=2000,
                                  connectTimeoutMS=2000, socketTimeoutMS=10000)
        self.coll = self.client.get_database("writer").get_collection(
            "docs", write_concern=WriteConcern(w="majority", wtimeout=8000))
        self.acked: list[int] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            i += 1
            try:
                self.coll.insert_one({"_id": i})
                self.acked.append(i)
            except PyMongoError:
                self.errors += 1
                time.sleep(0.2)
            time.sleep(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)

    def missing(self) -> list[int]:
        coll = self.client.get_database("writer").get_collection("docs")
        present = {d["_id"] for d in coll.find({}, {"_id": 1})}
        return [i for i in self.acked if i not in present]


def converge_to(cluster: Cluster, tmp_path, n: int, count: int) -> None:
    cluster.initiate(0)
    run = run_tasks(tmp_path, [ea(cluster, n, count), pg(cluster)])
    assert all(r.get("failed") is not True for r in run.results), run.results
    assert_converged(cluster, cluster.names[:n])


def test_dead_voter_is_replaced_from_the_pool_while_writes_continue(tmp_path, cluster_factory):
    cluster = cluster_factory(size=4)
    converge_to(cluster, tmp_path / "setup", 3, 3)
    primary = cluster.primary_name()
    victim = next(name for name in cluster.names[:3] if name != primary)
    down_after = 3
    with Writer(cluster) as writer:
        cluster.wait_for(lambda: len(writer.acked) >= 5, 30, "the writer's first acknowledged writes")
        cluster.kill(cluster.names.index(victim))
        cluster.wait_for(lambda: cluster.member_down_for(victim) > down_after + 1, 60, f"{victim} to be seen down")
        # peergroup is only told about one secondary: it must find the primary itself.
        secondary = next(a for name, a in zip(cluster.names, cluster.addresses) if name not in (victim, primary))
        run = run_tasks(tmp_path / "repair", [ea(cluster, 3, 4, down_after=down_after), pg(cluster, seeds=[secondary])])
        acked_during = len(writer.acked)
        cluster.wait_for(lambda: len(writer.acked) > acked_during + 5, 30, "writes acknowledged after the repair")
    plan, converge = run.results
    assert plan.get("failed") is not True, plan
    assert plan["demoted"] == [victim] and plan["added"] == ["sm4"]
    assert converge.get("failed") is not True, converge
    survivors = sorted({*cluster.names[:3], "sm4"} - {victim})
    config, status, records = cluster.read()
    assert voters(config) == set(survivors)
    assert len([m for m in status["members"] if m["state"] == 1]) == 1
    assert {r["_id"]: r["wants_vote"] for r in records}[victim] is False
    assert writer.missing() == []


def test_majority_loss_fails_cleanly_and_changes_nothing(tmp_path, cluster_factory):
    cluster = cluster_factory(size=3)
    converge_to(cluster, tmp_path / "setup", 3, 3)
    survivor = cluster.primary_name()
    victims = [name for name in cluster.names if name != survivor]
    index = cluster.names.index(survivor)
    before_config = cluster.direct_config(index)
    before_records = cluster.read()[2]
    for name in victims:
        cluster.kill(cluster.names.index(name))
    down_after = 2
    cluster.wait_for(lambda: all(cluster.member_down_for(v, via=index) > down_after + 1 for v in victims), 60,
                     "both victims to be seen down")
    run = run_tasks(tmp_path / "plan", [ea(cluster, 3, 3, down_after=down_after)])
    result = run[0]
    assert result.get("failed") is True, result
    assert result["changed"] is False
    assert all(v in result["msg"] for v in victims), result["msg"]
    after_config = cluster.direct_config(index)
    assert after_config["version"] == before_config["version"]
    assert after_config["members"] == before_config["members"]
    assert cluster.direct_records(index) == before_records


def test_timeout_fails_with_the_partial_result(tmp_path, cluster_factory):
    # sm3 is in the pool but its mongod never starts: peergroup can do part of the work and must then give up.
    cluster = cluster_factory(size=3, start=2)
    cluster.initiate(0)
    run = run_tasks(tmp_path, [ea(cluster, 3, 3), pg(cluster, timeout=20)])
    plan, converge = run.results
    assert plan.get("failed") is not True, plan
    assert converge.get("failed") is True, converge
    assert converge["converged"] is False
    assert converge["not_converged"]
    assert "did not converge" in converge["msg"]
    assert converge["steps"], converge
    config = cluster.read()[0]
    assert config["version"] == max(s["config_version"] for s in converge["steps"])
