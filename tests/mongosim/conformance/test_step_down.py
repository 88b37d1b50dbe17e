"""replSetStepDown when no secondary can take over (ExceededTimeLimit 262), and what a majority write waiting at
step-down gets (writeConcernError PrimarySteppedDown 189)."""
from __future__ import annotations

import threading
import time

import pytest
from conformance_support import refused, run, start_set
from pymongo import WriteConcern
from pymongo.errors import AutoReconnect, PyMongoError, WriteConcernError


@pytest.mark.timeout(120)
def test_step_down_without_a_caught_up_secondary_answers_262_and_stays_primary(mongosim_cluster):
    c = start_set(mongosim_cluster, 3, settings={"electionTimeoutMillis": 15000})
    p = c.wait_for_primary()
    for m in c.members:
        if m is not p:
            c.freeze(m)
    try:
        # a write the frozen secondaries do not have: none of them is caught up
        c.client().app.get_collection("docs", write_concern=WriteConcern(w=1)).insert_one({"_id": "newer"})
        started = time.monotonic()
        refused(p, {"replSetStepDown": 10, "secondaryCatchUpPeriodSecs": 1}, 262,
                "No electable secondaries caught up")
        assert time.monotonic() - started >= 0.9
        assert run(p, {"hello": 1})["isWritablePrimary"] is True
    finally:
        for m in c.members:
            c.thaw(m)


@pytest.mark.timeout(120)
def test_majority_write_pending_at_step_down_gets_189(mongosim_cluster):
    c = start_set(mongosim_cluster, 3, settings={"electionTimeoutMillis": 15000})
    p = c.wait_for_primary()
    client = p.client(retryWrites=False)
    coll = client.app.get_collection("docs", write_concern=WriteConcern(w="majority"))
    coll.insert_one({"_id": "before"})
    outcome: list[BaseException] = []

    def write() -> None:
        try:
            coll.insert_one({"_id": "pending"})
        except PyMongoError as e:
            outcome.append(e)

    for m in c.members:
        if m is not p:
            c.freeze(m)
    try:
        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        time.sleep(1)
        assert writer.is_alive(), "the majority write returned although no secondary can acknowledge it"
        try:
            run(p, {"replSetStepDown": 30, "force": True})  # force: catch-up period defaults to 0
        except AutoReconnect:
            pass
        writer.join(15)
        assert not writer.is_alive()
        assert len(outcome) == 1
        err = outcome[0]
        assert isinstance(err, WriteConcernError) and err.code == 189, err
        assert "Primary stepped down while waiting for replication" in str(err)
    finally:
        client.close()
        for m in c.members:
            c.thaw(m)
