"""The oplog is capped (``--oplogSize`` / ``replication.oplogSizeMB``): a member whose last entry has fallen off the
end of every source's oplog is too stale to catch up and stays RECOVERING until it is resynced (emptied and
restarted, which runs an initial sync)."""
from __future__ import annotations

import shutil
import time

import pytest
from conformance_support import member_status, run, start_set
from mongosim.testing import using_real_mongod
from pymongo import WriteConcern

# mongod refuses an oplog under 990 MB; the simulator takes any size, so the same test writes 3 MB instead of 3 GB.
OPLOG_MB = 990 if using_real_mongod() else 1
DOC_BYTES = 100 * 1024


@pytest.mark.timeout(600)
def test_member_off_the_end_of_the_oplog_stays_recovering_until_resynced(mongosim_cluster):
    c = start_set(mongosim_cluster, 3, extra_args=["--oplogSize", str(OPLOG_MB)])
    p = c.wait_for_primary()
    stale = next(m for m in c.members if m is not p)
    c.terminate(stale)
    coll = c.client().app.get_collection("docs", write_concern=WriteConcern(w="majority", wtimeout=60000))
    count = 3 * OPLOG_MB * 1024 * 1024 // DOC_BYTES
    for i in range(count):
        coll.insert_one({"_id": i, "pad": "x" * DOC_BYTES})
    c.start(stale)
    c.wait_for(lambda: member_status(p, stale.address)["state"] == 3, 60, what="stale member RECOVERING")
    # It stays there: no source still has the entries it needs, and it never stands for election.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        assert member_status(p, stale.address)["state"] == 3
        assert run(stale, {"hello": 1})["isWritablePrimary"] is False
        assert run(stale, {"replSetGetStatus": 1}).get("tooStale") is True
        time.sleep(0.25)
    c.terminate(stale)
    shutil.rmtree(stale.dbpath)
    stale.dbpath.mkdir()
    c.start(stale)
    c.wait_for_states({stale.index: "SECONDARY"}, 120)
    reader = stale.client(readPreference="secondaryPreferred")
    try:
        c.wait_for(lambda: reader.app.docs.count_documents({}) == count, 60, what="resynced member has every doc")
    finally:
        reader.close()
