"""Wire protocol and CRUD behaviour through pymongo and raw sockets."""
from __future__ import annotations

import socket
import struct

import bson
import pytest
from pymongo import ReturnDocument, WriteConcern
from pymongo.errors import DuplicateKeyError, NotPrimaryError, OperationFailure


@pytest.fixture
def one(mongosim_cluster):
    return mongosim_cluster(1)


def test_crud_round_trip(one):
    db = one.client().app
    db.items.insert_many([{"_id": i, "n": i, "tags": ["a"] if i % 2 else []} for i in range(250)])
    assert db.items.count_documents({}) == 250
    assert db.items.count_documents({"n": {"$gte": 100, "$lt": 110}}) == 10
    # more than one batch: find + getMore
    assert [d["_id"] for d in db.items.find({}, batch_size=7).sort("n", -1)][:3] == [249, 248, 247]
    assert len(list(db.items.find({"tags": "a"}))) == 125
    r = db.items.update_one({"_id": 1}, {"$set": {"x.y": 1}, "$inc": {"n": 10}, "$push": {"tags": "b"}})
    assert (r.matched_count, r.modified_count) == (1, 1)
    assert db.items.find_one({"_id": 1}) == {"_id": 1, "n": 11, "tags": ["a", "b"], "x": {"y": 1}}
    db.items.update_one({"_id": 1}, {"$unset": {"x": ""}})
    assert "x" not in db.items.find_one({"_id": 1})
    r = db.items.update_one({"_id": "new"}, {"$set": {"n": -1}}, upsert=True)
    assert r.upserted_id == "new"
    assert db.items.update_many({"n": {"$lt": 5}}, {"$set": {"small": True}}).modified_count == 5
    doc = db.items.find_one_and_update({"_id": 2}, {"$inc": {"n": 1}}, return_document=ReturnDocument.AFTER)
    assert doc["n"] == 3
    assert db.items.delete_many({"small": True}).deleted_count == 5
    assert db.items.find_one_and_delete({"_id": 10})["_id"] == 10
    agg = list(db.items.aggregate([{"$match": {"n": {"$gte": 200}}}, {"$sort": {"n": 1}}, {"$limit": 3}]))
    assert [d["n"] for d in agg] == [200, 201, 202]
    assert list(db.items.aggregate([{"$match": {"n": {"$gte": 240}}}, {"$count": "c"}])) == [{"c": 10}]
    assert "items" in db.list_collection_names()
    assert "app" in one.client().list_database_names()
    db.items.drop()
    assert "items" not in db.list_collection_names()


def test_unique_index_duplicate_key(one):
    coll = one.client().app.users
    coll.create_index("email", unique=True)
    coll.insert_one({"email": "a@x"})
    with pytest.raises(DuplicateKeyError) as e:
        coll.insert_one({"email": "a@x"})
    assert e.value.code == 11000
    with pytest.raises(DuplicateKeyError):
        coll.insert_one({"_id": coll.find_one()["_id"]})
    names = [i["name"] for i in coll.list_indexes()]
    assert names == ["_id_", "email_1"]


def test_write_concern_and_majority_read(one):
    coll = one.client().app.get_collection("wc", write_concern=WriteConcern(w="majority", j=True, wtimeout=5000))
    coll.insert_one({"_id": 1})
    from pymongo.read_concern import ReadConcern
    assert coll.with_options(read_concern=ReadConcern("majority")).find_one({"_id": 1}) == {"_id": 1}


def test_retryable_write_is_applied_once(one):
    client = one.client()
    db = client.app
    with client.start_session() as s:
        cmd = {"insert": "r", "documents": [{"k": 1}], "lsid": s.session_id, "txnNumber": bson.Int64(7)}
        raw = one.members[0].client()
        try:
            first = raw.app.command(cmd)
            again = raw.app.command(cmd)
            cmd_u = {"update": "r", "updates": [{"q": {"k": 1}, "u": {"$inc": {"c": 1}}}], "lsid": s.session_id,
                     "txnNumber": bson.Int64(8)}
            raw.app.command(cmd_u)
            raw.app.command(cmd_u)
        finally:
            raw.close()
    assert first["n"] == again["n"] == 1
    assert db.r.count_documents({}) == 1
    assert db.r.find_one()["c"] == 1


def _raw(host: str, port: int, data: bytes) -> bytes:
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(data)
        head = b""
        while len(head) < 16:
            head += s.recv(16 - len(head))
        length = struct.unpack("<i", head[:4])[0]
        body = b""
        while len(body) < length - 16:
            body += s.recv(length - 16 - len(body))
        return head + body


@pytest.mark.simulator_only
def test_op_msg_with_checksum_and_document_sequence(one):
    from mongosim.wire import crc32c
    m = one.members[0]
    body = bson.encode({"insert": "seq", "$db": "app"})
    docs = b"".join(bson.encode({"_id": i}) for i in range(3))
    seq = struct.pack("<i", 4 + len(b"documents\x00") + len(docs)) + b"documents\x00" + docs
    payload = struct.pack("<I", 1) + b"\x00" + body + b"\x01" + seq
    header = struct.pack("<iiii", 16 + len(payload) + 4, 1, 0, 2013)
    msg = header + payload
    msg += struct.pack("<I", crc32c(msg))
    reply = _raw(m.ip, m.port, msg)
    doc = bson.decode(reply[21:])
    assert doc["ok"] == 1 and doc["n"] == 3
    assert one.client().app.seq.count_documents({}) == 3


def test_legacy_op_query_handshake(one):
    m = one.members[0]
    q = bson.encode({"isMaster": 1})
    payload = struct.pack("<i", 0) + b"admin.$cmd\x00" + struct.pack("<ii", 0, -1) + q
    reply = _raw(m.ip, m.port, struct.pack("<iiii", 16 + len(payload), 9, 0, 2004) + payload)
    assert struct.unpack("<i", reply[12:16])[0] == 1  # OP_REPLY
    doc = bson.decode(reply[36:])
    assert doc["ismaster"] is True and doc["setName"] == one.set_name and doc["maxWireVersion"] >= 21


def test_hello_replica_set_fields(mongosim_cluster):
    c = mongosim_cluster(3)
    p = c.wait_for_primary()
    h = p.hello()
    for f in ("setName", "hosts", "primary", "me", "isWritablePrimary", "secondary", "setVersion", "electionId",
              "topologyVersion", "lastWrite", "logicalSessionTimeoutMinutes", "minWireVersion", "maxWireVersion"):
        assert f in h, f
    assert sorted(h["hosts"]) == sorted(c.addresses)
    assert h["me"] == p.address == h["primary"]
    s = next(m for m in c.members if m is not p)

    def secondary_hello() -> dict | None:
        h = s.hello()
        return h if h and h.get("primary") else None

    hs = c.wait_for(secondary_hello, 10)
    assert hs["secondary"] is True and hs["isWritablePrimary"] is False and hs["primary"] == p.address
    # writes on a secondary are refused with NotWritablePrimary
    with pytest.raises(NotPrimaryError) as e:
        s.client().app.command("insert", "x", documents=[{"a": 1}])
    assert e.value.details["code"] == 10107 and e.value.details["codeName"] == "NotWritablePrimary"
    # and pymongo discovers the set from a single seed
    from pymongo import MongoClient
    client = MongoClient(f"mongodb://{s.address}/?replicaSet={c.set_name}", serverSelectionTimeoutMS=10000)
    try:
        client.app.x.insert_one({"a": 1})
        assert client.address == (p.ip, p.port)
    finally:
        client.close()


def test_not_yet_initialized(mongosim_cluster):
    c = mongosim_cluster(1, initiate=False)
    admin = c.members[0].client().admin
    with pytest.raises(OperationFailure) as e:
        admin.command("replSetGetStatus")
    assert e.value.code == 94 and e.value.details["codeName"] == "NotYetInitialized"
    with pytest.raises(OperationFailure) as e:
        admin.command("replSetGetConfig")
    assert e.value.code == 94


def test_awaitable_hello_waits_for_topology_change(one):
    import time
    raw = one.members[0].client()
    try:
        h = raw.admin.command("hello")
        t0 = time.monotonic()
        h2 = raw.admin.command("hello", topologyVersion=h["topologyVersion"], maxAwaitTimeMS=300)
        assert time.monotonic() - t0 >= 0.25
        assert h2["topologyVersion"] == h["topologyVersion"]
    finally:
        raw.close()


def test_direct_secondary_read_sees_replicated_write(mongosim_cluster):
    c = mongosim_cluster(2)
    p = c.wait_for_primary()
    c.client().app.get_collection("r", write_concern=WriteConcern(w=2, wtimeout=10000)).insert_one({"_id": 1})
    s = next(m for m in c.members if m is not p)
    assert s.client(readPreference="secondaryPreferred").app.r.find_one() == {"_id": 1}


def test_snapshot_read_at_cluster_time_sees_the_data_of_then(one):
    """readConcern snapshot (mongod 5.0+, outside transactions): find at atClusterTime returns the documents as of
    that time and names the time in the cursor; a pymongo snapshot session reads every collection at one time."""
    client = one.client()
    db = client.get_database("app", write_concern=WriteConcern(w="majority"))
    db.a.insert_many([{"_id": i} for i in range(3)])
    db.b.insert_one({"_id": "b0"})
    at = client.admin.command("replSetGetStatus")["optimes"]["readConcernMajorityOpTime"]["ts"]
    db.a.insert_one({"_id": 3})
    db.a.delete_one({"_id": 0})
    db.b.insert_one({"_id": "b1"})

    then = db.command("find", "a", readConcern={"level": "snapshot", "atClusterTime": at})["cursor"]
    assert [d["_id"] for d in then["firstBatch"]] == [0, 1, 2] and then["atClusterTime"] == at
    now = db.command("find", "a", readConcern={"level": "snapshot"})["cursor"]
    assert [d["_id"] for d in now["firstBatch"]] == [1, 2, 3] and now["atClusterTime"] > at

    with client.start_session(snapshot=True) as s:
        first = [d["_id"] for d in db.a.find(session=s)]
        db.b.insert_one({"_id": "b2"})
        assert [d["_id"] for d in db.b.find(session=s)] == ["b0", "b1"]
    assert first == [1, 2, 3]

    with pytest.raises(OperationFailure) as e:
        db.command("find", "a", readConcern={"level": "snapshot", "atClusterTime": bson.Timestamp(at.time + 3600, 1)})
    assert e.value.code == 72
