"""When mongod lets the next reconfig start: the current config must be committed — on a majority of its voters,
with a write of the current term majority-committed, and with everything committed under the previous config
committed by the new config's voters (``awaitConfigCommitment``; jstests/replsets/reconfig_waits_for_a_majority_to_
replicate_config.js and reconfig_waits_for_oplog_commitment_condition.js). Otherwise it waits, and answers
CurrentConfigNotCommittedYet (308) at maxTimeMS, or NotWritablePrimary (10107) as soon as the primary steps down."""
from __future__ import annotations

import time

import pytest
from conformance_support import Background, assert_error, config, next_config, refused, run, start_set
from pymongo import WriteConcern
from pymongo.errors import AutoReconnect


def force_reconfig_with_secondaries_frozen(c, p) -> int:
    """Freeze both secondaries and force a new config on the primary: it stays primary with a config no one else
    has. Returns the forced version."""
    for m in c.members:
        if m is not p:
            c.freeze(m)
    cfg = next_config(p)
    cfg["members"][0]["tags"] = {"forced": "yes"}
    run(p, {"replSetReconfig": cfg, "force": True})
    assert run(p, {"hello": 1})["isWritablePrimary"] is True
    return config(p)["version"]


@pytest.mark.timeout(120)
def test_next_reconfig_answers_308_while_the_current_config_is_not_committed(mongosim_cluster):
    c = start_set(mongosim_cluster, 3, settings={"electionTimeoutMillis": 15000})
    p = c.wait_for_primary()
    try:
        forced = force_reconfig_with_secondaries_frozen(c, p)
        cfg = next_config(p)
        started = time.monotonic()
        refused(p, {"replSetReconfig": cfg, "maxTimeMS": 1500}, 308, "is not majority committed")
        assert time.monotonic() - started >= 1.4
        assert config(p)["version"] == forced
        assert run(p, {"replSetGetConfig": 1, "commitmentStatus": True})["commitmentStatus"] is False
    finally:
        for m in c.members:
            c.thaw(m)
    c.wait_for(lambda: run(p, {"replSetGetConfig": 1, "commitmentStatus": True})["commitmentStatus"], 30,
               what="forced config committed once the secondaries are back")
    run(p, {"replSetReconfig": next_config(p), "maxTimeMS": 20000})


@pytest.mark.timeout(120)
def test_step_down_during_the_commitment_wait_answers_10107_at_once(mongosim_cluster):
    c = start_set(mongosim_cluster, 3, settings={"electionTimeoutMillis": 15000})
    p = c.wait_for_primary()
    try:
        force_reconfig_with_secondaries_frozen(c, p)
        started = time.monotonic()
        waiting = Background(p, {"replSetReconfig": next_config(p), "maxTimeMS": 60000})
        time.sleep(1)
        try:
            run(p, {"replSetStepDown": 30, "force": True})
        except AutoReconnect:
            pass  # a server may close connections as it steps down
        assert_error(waiting.result(20), 10107)
        assert time.monotonic() - started < 15
        assert run(p, {"hello": 1})["isWritablePrimary"] is False
    finally:
        for m in c.members:
            c.thaw(m)


@pytest.mark.timeout(180)
def test_commitment_needs_what_the_old_config_committed_on_the_new_voters(mongosim_cluster):
    # Members 3 and 4 are delayed by a minute: they have every config at once (heartbeats) but no new write.
    delayed = {"priority": 0, "secondaryDelaySecs": 60}
    c = start_set(mongosim_cluster, 5, overrides={0: {"priority": 2}, 1: {"priority": 0}, 2: {"priority": 0},
                                                  3: delayed, 4: delayed})
    p = c.wait_for_primary()
    assert p is c.members[0]
    c.client().app.get_collection("docs", write_concern=WriteConcern(w="majority", wtimeout=20000)).insert_one(
        {"_id": "committed by 0, 1 and 2"})
    # Member 1 stops voting: the new voters are 0, 2, 3, 4 (majority 3), of which only 0 and 2 have the write.
    cfg = next_config(p)
    cfg["members"][1].update(votes=0)
    run(p, {"replSetReconfig": cfg, "maxTimeMS": 20000})
    assert run(p, {"replSetGetConfig": 1, "commitmentStatus": True})["commitmentStatus"] is False
    refused(p, {"replSetReconfig": next_config(p), "maxTimeMS": 2000}, 308, "is not majority committed")
    assert config(p)["version"] == cfg["version"]
