"""state_backup and state_restore through ansible-playbook against replica sets on loopback.

A set is written to, backed up from a secondary, destroyed; a fresh set is deployed and restored; every document
is read back and compared. Refusals (a set with data, a corrupted backup) are checked on the target's contents.
"""

from __future__ import annotations

import datetime
import json
import threading
from pathlib import Path

import bson
import pytest
from bson import Binary, Int64, ObjectId
from cluster import Cluster
from playbook import run_tasks
from pymongo import ASCENDING
from pymongo.write_concern import WriteConcern

pytestmark = pytest.mark.timeout(480)

BACKUP = "stateserver.ha.state_backup"
RESTORE = "stateserver.ha.state_restore"
MAJORITY = WriteConcern(w="majority", wtimeout=30000)


def conn(cluster: Cluster) -> dict:
    return {"seeds": cluster.addresses, "server_selection_timeout": 10}


def three_members(cluster_factory) -> Cluster:
    """A 3-member set with a primary and two SECONDARYs."""
    cluster = cluster_factory(3)
    cluster.sim.initiate()

    def ready():
        status = cluster.read()[1]
        return sorted(m["state"] for m in status["members"]) == [1, 2, 2]
    cluster.wait_for(ready, 60, "one primary and two secondaries")
    return cluster


def write_state(cluster: Cluster) -> None:
    """What an API server and ensure-ha.yml leave behind: units, kv values of several BSON types, records."""
    with cluster.client() as c:
        db = c.get_database("stateserver", write_concern=MAJORITY)
        db.units.insert_many([{"_id": f"unit/{i}", "last_heartbeat": datetime.datetime(2026, 11, 30, 5, i % 60, i // 60),
                               "n": Int64(2**40 + i)} for i in range(250)])
        db.kv.insert_many([
            {"_id": "config", "value": {"nested": [1, 2.5, "three", None, True]}, "version": 3},
            {"_id": "blob", "value": Binary(b"\x00\xffbytes"), "version": 1, "ref": ObjectId()},
        ])
        db.kv.create_index([("version", ASCENDING)], name="by_version")
        db.machines.insert_many([{"_id": name, "mongo_address": address, "wants_vote": True}
                                 for name, address in zip(cluster.names, cluster.addresses)])


def dump(cluster: Cluster, collection: str) -> list[dict]:
    with cluster.client() as c:
        return list(c.stateserver[collection].find({}).sort("_id", 1))


def backups(dest: Path) -> list[Path]:
    return sorted(p for p in dest.iterdir() if p.name.startswith("stateserver-")) if dest.exists() else []


def test_backup_destroy_deploy_restore_reads_everything_back(tmp_path, cluster_factory):
    old = three_members(cluster_factory)
    write_state(old)
    units, kv, records = dump(old, "units"), dump(old, "kv"), dump(old, "machines")
    dest = tmp_path / "backups"

    run = run_tasks(tmp_path / "check", [{BACKUP: {**conn(old), "dest": str(dest)}}], check=True)
    assert run[0].get("failed") is not True, run[0]
    assert run[0]["changed"] and run[0]["collections"] == {"kv": 2, "machines": 3, "units": 250}
    assert not dest.exists(), "check mode wrote a backup"

    run = run_tasks(tmp_path / "backup", [{BACKUP: {**conn(old), "dest": str(dest)}}])
    assert run[0].get("failed") is not True, run[0]
    config, status = old.read()[:2]
    secondaries = {m["name"] for m in status["members"] if m["state"] == 2}
    assert run[0]["source"] in secondaries
    (path,) = backups(dest)
    assert str(path) == run[0]["path"]
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["replica_set"] == "stateserver" and manifest["config_version"] == config["version"]
    assert manifest["replica_set_id"] == str(config["settings"]["replicaSetId"])
    assert {n: c["count"] for n, c in manifest["collections"].items()} == {"kv": 2, "machines": 3, "units": 250}
    old.stop()

    new = three_members(cluster_factory)
    # The new deployment has its own machine records (ensure-ha.yml writes them): a restore leaves them alone.
    with new.client() as c:
        c.stateserver.get_collection("machines", write_concern=MAJORITY).insert_one(
            {"_id": "sm1", "mongo_address": new.addresses[0], "wants_vote": True})
    new_records = dump(new, "machines")

    run = run_tasks(tmp_path / "restore-check", [{RESTORE: {**conn(new), "path": str(path)}}], check=True)
    assert run[0].get("failed") is not True, run[0]
    assert run[0]["changed"] and run[0]["collections"] == {"kv": 2, "units": 250}
    assert dump(new, "units") == [] and dump(new, "kv") == []

    run = run_tasks(tmp_path / "restore", [{RESTORE: {**conn(new), "path": str(path)}}])
    assert run[0].get("failed") is not True, run[0]
    assert run[0]["collections"] == {"kv": 2, "units": 250} and run[0]["left_out"] == ["machines"]
    assert dump(new, "units") == units
    assert dump(new, "kv") == kv
    assert dump(new, "machines") == new_records != records
    with new.client() as c:
        index = c.stateserver.kv.index_information()["by_version"]
    assert index["key"] == [("version", 1)]

    # Restoring again finds the data it wrote and is refused.
    run = run_tasks(tmp_path / "again", [{RESTORE: {**conn(new), "path": str(path)}}])
    assert run[0]["failed"] and "already holds data" in run[0]["msg"]
    assert dump(new, "units") == units


def test_restore_refuses_a_set_with_data_and_a_corrupted_backup_before_writing(tmp_path, cluster_factory):
    source = three_members(cluster_factory)
    write_state(source)
    dest = tmp_path / "backups"
    run = run_tasks(tmp_path / "backup", [{BACKUP: {**conn(source), "dest": str(dest)}}])
    assert run[0].get("failed") is not True, run[0]
    path = Path(run[0]["path"])

    target = source
    with target.client() as c:
        c.get_database("stateserver", write_concern=MAJORITY).units.delete_many({"_id": {"$ne": "unit/0"}})
        c.get_database("stateserver", write_concern=MAJORITY).kv.delete_many({})
    run = run_tasks(tmp_path / "occupied", [{RESTORE: {**conn(target), "path": str(path)}}])
    assert run[0]["failed"] and "units (1 documents)" in run[0]["msg"]
    assert [d["_id"] for d in dump(target, "units")] == ["unit/0"] and dump(target, "kv") == []

    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for f in path.iterdir():
        data = bytearray(f.read_bytes())
        if f.name == "stateserver.units.bson":
            data[len(data) // 2] ^= 0x01
        (corrupt / f.name).write_bytes(bytes(data))
    run = run_tasks(tmp_path / "corrupt-run", [{RESTORE: {**conn(target), "path": str(corrupt), "force": True}}])
    assert run[0]["failed"] and "stateserver.units.bson does not match its sha256" in run[0]["msg"]
    assert [d["_id"] for d in dump(target, "units")] == ["unit/0"] and dump(target, "kv") == []

    # With force the occupied collection is replaced.
    run = run_tasks(tmp_path / "force", [{RESTORE: {**conn(target), "path": str(path), "force": True}}])
    assert run[0].get("failed") is not True, run[0]
    assert run[0]["replaced"] == ["units"]
    assert len(dump(target, "units")) == 250 and len(dump(target, "kv")) == 2


def test_a_backup_taken_during_writes_is_one_point_in_time(tmp_path, cluster_factory):
    """A writer inserts unit w/i, then sets kv counter to i+1, without pause. At every point in time the counter n
    and the count of w/ units satisfy n <= units <= n + 1; collections read at different times would break it
    (the kv collection is read before units, and units keep growing)."""
    cluster = three_members(cluster_factory)
    with cluster.client() as c:
        # Read between kv and units (collections are read by name), it gives the writer time to move on. Small
        # batches keep each write short, so the members' heartbeats (elections after 1s) are never held up.
        padding = c.get_database("stateserver", write_concern=MAJORITY).padding
        for start in range(0, 10000, 500):
            padding.insert_many([{"_id": i, "text": "x" * 100} for i in range(start, start + 500)])
    stop = threading.Event()
    written = []

    def writer():
        with cluster.client() as c:
            db = c.stateserver
            i = 0
            while not stop.is_set():
                db.units.insert_one({"_id": f"w/{i:06d}"})
                db.kv.update_one({"_id": "counter"}, {"$set": {"n": i + 1}}, upsert=True)
                i += 1
                written.append(i)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        cluster.wait_for(lambda: len(written) > 50, 60, "the writer to get going")
        run = run_tasks(tmp_path / "backup", [{BACKUP: {**conn(cluster), "dest": str(tmp_path / "backups")}}])
        before_stop = len(written)
    finally:
        stop.set()
        thread.join(30)
    assert run[0].get("failed") is not True, run[0]
    path = Path(run[0]["path"])
    (counter,) = bson.decode_all((path / "stateserver.kv.bson").read_bytes())
    units = bson.decode_all((path / "stateserver.units.bson").read_bytes())
    n = counter["n"]
    assert n <= len(units) <= n + 1, (n, len(units))
    assert [u["_id"] for u in units] == [f"w/{i:06d}" for i in range(len(units))]
    # The copy is of a point during the run, and writes went on after it.
    assert 50 < n < before_stop


def test_bad_input_is_refused_before_any_connection(tmp_path):
    """Nothing listens at the seed: each refusal comes from the input alone, with what to fix."""
    seeds = {"seeds": ["127.20.255.254"], "server_selection_timeout": 2}
    empty = tmp_path / "empty"
    empty.mkdir()
    other = tmp_path / "other"
    other.mkdir()
    (other / "manifest.json").write_text(json.dumps({"format": "mongodump", "collections": {}}))
    run = run_tasks(tmp_path / "run", [
        {BACKUP: {**seeds, "dest": str(tmp_path / "b"), "retain": 0}},
        {RESTORE: {**seeds, "path": str(empty)}},
        {RESTORE: {**seeds, "path": str(other)}},
    ])
    assert run[0]["failed"] and "retain must be at least 1" in run[0]["msg"]
    assert not (tmp_path / "b").exists()
    assert run[1]["failed"] and "holds no manifest.json" in run[1]["msg"]
    assert run[2]["failed"] and "has format 'mongodump'" in run[2]["msg"] and "nothing was written" in run[2]["msg"]
