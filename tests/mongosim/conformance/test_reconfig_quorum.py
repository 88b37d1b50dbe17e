"""The quorum check a non-force reconfig runs before it installs anything (``check_quorum_for_config_change.cpp``):
a majority of the new config's voters (newlyAdded members excluded) and one electable member must answer a
heartbeat, and no member may belong to another replica set id. Several brand-new voters may join at once (5.0+)."""
from __future__ import annotations

import time

import pytest
from conformance_support import (
    Background,
    assert_error,
    config,
    member_status,
    next_config,
    refused,
    run,
    start_set,
    status,
)


@pytest.mark.timeout(120)
def test_quorum_check_refuses_with_74_and_installs_nothing(mongosim_cluster):
    c = start_set(mongosim_cluster, 5, settings={"electionTimeoutMillis": 2000})
    p = c.wait_for_primary()
    others = [m for m in c.members if m is not p]
    for m in others[:2]:
        c.kill(m)
    # Demoting a live secondary leaves 4 voters (majority 3); only the primary and one secondary can answer.
    cfg = next_config(p)
    next(m for m in cfg["members"] if m["host"] == others[2].address).update(votes=0, priority=0)
    refused(p, {"replSetReconfig": cfg}, 74, "Quorum check failed because not enough voting nodes responded")
    assert config(p)["version"] == cfg["version"] - 1
    assert member_status(p, others[2].address)["state"] == 2
    # The primary kept 3 of 5 voters: it is still primary after more than an election timeout.
    time.sleep(3)
    assert run(p, {"hello": 1})["isWritablePrimary"] is True


@pytest.mark.timeout(120)
def test_promoting_a_stopped_non_voter_with_2_of_5_voters_down_is_refused_with_74(mongosim_cluster):
    c = start_set(mongosim_cluster, 6, settings={"electionTimeoutMillis": 2000},
                  overrides={5: {"votes": 0, "priority": 0}})
    p = c.wait_for_primary()
    standby = c.members[5]
    voters = [m for m in c.members[:5] if m is not p]
    for m in voters[:2] + [standby]:
        c.kill(m)
    c.wait_for(lambda: member_status(p, standby.address)["health"] == 0, 30, what="the standby seen down")
    before = config(p)
    # Six voters need four answers; only the primary and two secondaries can give one.
    cfg = next_config(p)
    next(m for m in cfg["members"] if m["host"] == standby.address).update(votes=1, priority=1)
    refused(p, {"replSetReconfig": cfg}, 74, "Quorum check failed because not enough voting nodes responded")
    after = config(p)
    assert after["version"] == before["version"] and after["members"] == before["members"]
    assert status(p)["votingMembersCount"] == 5
    time.sleep(3)  # more than an election timeout: the primary kept 3 of its 5 voters
    assert run(p, {"hello": 1})["isWritablePrimary"] is True


@pytest.mark.timeout(120)
def test_quorum_check_waits_for_a_member_that_does_not_answer(mongosim_cluster):
    # Every member is asked and every answer awaited, each up to heartbeatTimeoutSecs (2 s here): a frozen standby
    # holds the reconfig that long, though the voters answered at once; the reconfig then succeeds.
    c = start_set(mongosim_cluster, 4, overrides={3: {"votes": 0, "priority": 0}})
    p = c.wait_for_primary()
    c.freeze(c.members[3])
    try:
        cfg = next_config(p)
        cfg["members"][0]["tags"] = {"held": "yes"}
        started = time.monotonic()
        run(p, {"replSetReconfig": cfg, "maxTimeMS": 30000})
        assert time.monotonic() - started >= 1.8
        assert config(p)["version"] == cfg["version"]
    finally:
        c.thaw(c.members[3])


@pytest.mark.timeout(120)
def test_reconfig_while_another_is_installing_answers_109(mongosim_cluster):
    # Frozen secondaries hold the first reconfig in its quorum check for heartbeatTimeoutSecs.
    c = start_set(mongosim_cluster, 3, settings={"electionTimeoutMillis": 15000, "heartbeatTimeoutSecs": 4})
    p = c.wait_for_primary()
    rs_version = config(p)["version"]
    for m in c.members:
        if m is not p:
            c.freeze(m)
    try:
        first = next_config(p)
        first["members"][0]["tags"] = {"try": "first"}
        pending = Background(p, {"replSetReconfig": first})
        time.sleep(1)
        second = next_config(p)
        second["members"][0]["tags"] = {"try": "second"}
        refused(p, {"replSetReconfig": second}, 109, "currently updating its configuration")
        assert_error(pending.result(30), 74, "Quorum check failed")
        assert config(p)["version"] == rs_version
    finally:
        for m in c.members:
            c.thaw(m)


@pytest.mark.timeout(120)
def test_member_of_another_set_is_refused_with_103_and_its_heartbeats_ignored(mongosim_cluster):
    c = start_set(mongosim_cluster, 3)
    foreign = start_set(mongosim_cluster, 1)  # same set name, its own replicaSetId and data
    f = foreign.members[0]
    foreign.client().app.things.insert_one({"_id": "theirs"})
    their_id = config(f)["settings"]["replicaSetId"]
    p = c.wait_for_primary()
    version = config(p)["version"]
    cfg = next_config(p)
    cfg["members"].append({"_id": 9, "host": f.address, "votes": 0, "priority": 0})
    refused(p, {"replSetReconfig": cfg}, 103, "replica set ID")
    assert config(p)["version"] == version
    # force skips the quorum check; the foreign member must still refuse the set's heartbeats and keep its own.
    run(p, {"replSetReconfig": cfg, "force": True})
    c.wait_for(lambda: member_status(p, f.address)["health"] == 0, 30, what="foreign member reported unhealthy")
    time.sleep(1)
    mine = config(f)
    assert mine["settings"]["replicaSetId"] == their_id and len(mine["members"]) == 1
    assert run(f, {"hello": 1})["isWritablePrimary"] is True
    assert f.client().app.things.find_one({"_id": "theirs"}) is not None


@pytest.mark.timeout(120)
def test_two_brand_new_voters_in_one_reconfig_are_accepted(mongosim_cluster):
    c = start_set(mongosim_cluster, 3)
    new = [c.add_node(), c.add_node()]
    p = c.wait_for_primary()
    cfg = next_config(p)
    cfg["members"] += [{"_id": 10 + k, "host": m.address} for k, m in enumerate(new)]
    run(p, {"replSetReconfig": cfg})
    # Both join as newlyAdded (not counted as voters) and become full voters once they are SECONDARY.
    c.wait_for_states({m.index: "SECONDARY" for m in new}, 60)

    def full_voters() -> bool:
        members = config(p, newly_added=True)["members"]
        return len(members) == 5 and not any(m.get("newlyAdded") for m in members)

    c.wait_for(full_voters, 60, what="newlyAdded cleared on both")
    c.wait_for(lambda: status(p)["votingMembersCount"] == 5, 30, what="five voters")
