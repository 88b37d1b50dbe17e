"""Elections, failover, partitions, durability and rollback on real processes."""
from __future__ import annotations

import time

import pytest
from pymongo import WriteConcern
from pymongo.errors import OperationFailure, PyMongoError

MAJ = WriteConcern(w="majority", wtimeout=20000)


def states(cluster, via) -> dict[str, str]:
    c = via.client()
    try:
        return {m["name"]: m["stateStr"] for m in c.admin.command("replSetGetStatus")["members"]}
    finally:
        c.close()


def majority_coll(cluster, name="docs"):
    return cluster.client().app.get_collection(name, write_concern=MAJ)


def count_on(member, query=None, name="docs") -> int:
    c = member.client(readPreference="secondaryPreferred")
    try:
        return c.app[name].count_documents(query or {})
    finally:
        c.close()


@pytest.mark.timeout(120)
def test_new_primary_after_sigkill(mongosim_cluster):
    c = mongosim_cluster(3)
    coll = majority_coll(c)
    coll.insert_many([{"_id": i} for i in range(50)])
    old = c.wait_for_primary()
    c.kill(old)
    new = c.wait_for_primary(timeout=30, exclude=[old])
    assert new is not old
    coll.insert_one({"_id": "after"})
    assert coll.count_documents({}) == 51
    c.wait_for(lambda: states(c, c.wait_for_primary())[old.address] == "(not reachable/healthy)", 20,
               what="killed member reported down")
    c.start(old)
    c.wait_for_states({old.index: "SECONDARY"}, 30)
    c.wait_for(lambda: count_on(old) == 51, 20, what="old primary caught up")


@pytest.mark.timeout(120)
def test_new_primary_after_sigstop_and_old_rejoins(mongosim_cluster):
    c = mongosim_cluster(3)
    coll = majority_coll(c)
    coll.insert_one({"_id": 1})
    old = c.wait_for_primary()
    c.freeze(old)
    new = c.wait_for_primary(timeout=30, exclude=[old])
    coll.insert_one({"_id": 2})
    c.thaw(old)
    c.wait_for(lambda: (old.hello() or {}).get("secondary"), 30, what="thawed primary steps down")
    primaries = [m for m in c.members if (m.hello() or {}).get("isWritablePrimary")]
    assert len(primaries) == 1 and new is not old
    c.wait_for(lambda: count_on(old) == 2, 20, what="thawed node catches up")


@pytest.mark.simulator_only
@pytest.mark.timeout(120)
def test_partitioned_primary_steps_down_without_split_brain(mongosim_cluster):
    c = mongosim_cluster(3)
    coll = majority_coll(c)
    coll.insert_one({"_id": "before"})
    old = c.wait_for_primary()
    c.partition([old])
    # the isolated old primary cannot acknowledge a majority write
    direct = old.client().app.get_collection("docs", write_concern=WriteConcern(w="majority", wtimeout=1500))
    lost_acked = False
    try:
        direct.insert_one({"_id": "isolated"})
        lost_acked = True
    except PyMongoError:
        pass
    assert not lost_acked
    c.wait_for_primary(timeout=30, exclude=[old])
    c.wait_for(lambda: (old.hello() or {}).get("isWritablePrimary") is False, 30, what="old primary steps down")
    other = majority_coll(c)
    other.insert_one({"_id": "majority-side"})
    c.heal()
    c.wait_for_states({old.index: "SECONDARY"}, 30)
    c.wait_for(lambda: count_on(old, {"_id": "majority-side"}) == 1, 30, what="old primary rejoins")
    for m in c.members:
        c.wait_for(lambda m=m: count_on(m, {"_id": "isolated"}) == 0 and count_on(m, {"_id": "before"}) == 1, 30,
                   what="unacknowledged isolated write rolled back everywhere")


@pytest.mark.timeout(120)
def test_restart_recovery_keeps_majority_writes(mongosim_cluster):
    c = mongosim_cluster(3)
    coll = majority_coll(c)
    coll.insert_many([{"_id": i, "v": "x" * 100} for i in range(200)])
    coll.update_many({}, {"$set": {"touched": True}})
    for m in c.members:
        c.kill(m)
    for m in c.members:
        c.start(m)
    c.wait_for_primary(30)
    coll = majority_coll(c)
    assert coll.count_documents({"touched": True}) == 200
    coll.insert_one({"_id": "after-restart"})
    for m in c.members:
        c.wait_for(lambda m=m: count_on(m) == 201, 30, what="every member has every write")


@pytest.mark.simulator_only
@pytest.mark.timeout(120)
def test_rollback_of_unreplicated_w1_write(mongosim_cluster):
    c = mongosim_cluster(3, election_timeout_ms=1000)
    majority_coll(c).insert_one({"_id": "base"})
    old = c.wait_for_primary()
    c.partition([old])
    w1 = old.client().app.get_collection("docs", write_concern=WriteConcern(w=1))
    w1.insert_one({"_id": "unreplicated"})  # acknowledged by the isolated old primary alone
    c.wait_for_primary(timeout=30, exclude=[old])
    majority_coll(c).insert_one({"_id": "new-term"})
    c.heal()
    c.wait_for_states({old.index: "SECONDARY"}, 40)
    c.wait_for(lambda: count_on(old, {"_id": "new-term"}) == 1, 30, what="old primary synced after rollback")
    for m in c.members:
        assert count_on(m, {"_id": "unreplicated"}) == 0
        assert count_on(m, {"_id": "base"}) == 1


@pytest.mark.timeout(120)
def test_step_down_hands_over_and_freeze(mongosim_cluster):
    c = mongosim_cluster(3)
    majority_coll(c).insert_one({"_id": 1})
    old = c.wait_for_primary()
    admin = old.client().admin
    admin.command("replSetStepDown", 30, secondaryCatchUpPeriodSecs=10)
    new = c.wait_for_primary(timeout=30, exclude=[old])
    assert new is not old
    # the stepped-down node is frozen for stepDownSecs: kill the new primary and the third member wins
    third = next(m for m in c.members if m not in (old, new))
    c.kill(new)
    winner = c.wait_for_primary(timeout=30, exclude=[new])
    assert winner is third
    with pytest.raises(OperationFailure) as e:
        winner.client().admin.command("replSetFreeze", 10)
    assert e.value.details["codeName"] == "NotSecondary"


@pytest.mark.timeout(120)
def test_step_down_refused_without_caught_up_secondary(mongosim_cluster):
    c = mongosim_cluster(3, election_timeout_ms=8000)
    old = c.wait_for_primary()
    for s in c.members:
        if s is not old:
            c.freeze(s)
    try:
        # a write the frozen secondaries cannot acknowledge, so none is caught up
        old.client().app.get_collection("docs", write_concern=WriteConcern(w=1)).insert_one({"_id": "late"})
        with pytest.raises(OperationFailure) as e:
            old.client().admin.command("replSetStepDown", 10, secondaryCatchUpPeriodSecs=1)
        assert e.value.details["codeName"] == "ExceededTimeLimit"
    finally:
        for s in c.members:
            c.thaw(s)


@pytest.mark.timeout(120)
def test_priority_takeover(mongosim_cluster):
    c = mongosim_cluster(3)
    old = c.wait_for_primary()
    target = next(m for m in c.members if m is not old)
    cl = old.client()
    cfg = cl.admin.command("replSetGetConfig")["config"]
    cfg["version"] += 1
    for m in cfg["members"]:
        if m["host"] == target.address:
            m["priority"] = 5
    cl.admin.command("replSetReconfig", cfg, maxTimeMS=20000)
    c.wait_for(lambda: (target.hello() or {}).get("isWritablePrimary"), 30, what="priority takeover")
    metrics = target.client().admin.command("replSetGetStatus")["electionCandidateMetrics"]
    assert metrics["lastElectionReason"] == "priorityTakeover"


@pytest.mark.timeout(120)
def test_new_member_initial_sync(mongosim_cluster):
    c = mongosim_cluster(3)
    majority_coll(c).insert_many([{"_id": i} for i in range(300)])
    extra = c.add_node()
    p = c.wait_for_primary()
    cl = p.client()
    cfg = cl.admin.command("replSetGetConfig")["config"]
    cfg["version"] += 1
    cfg["members"].append({"_id": 9, "host": extra.address, "votes": 0, "priority": 0})
    cl.admin.command("replSetReconfig", cfg, maxTimeMS=20000)
    c.wait_for_states({extra.index: "SECONDARY"}, 30)
    assert count_on(extra) == 300
    # then promote it to a voter (one voting change per reconfig)
    cfg = cl.admin.command("replSetGetConfig")["config"]
    cfg["version"] += 1
    cfg["members"][-1].update(votes=1, priority=1)
    cl.admin.command("replSetReconfig", cfg, maxTimeMS=20000)
    st = cl.admin.command("replSetGetStatus")
    assert st["votingMembersCount"] == 4 and st["majorityVoteCount"] == 3


@pytest.mark.timeout(60)
def test_replset_get_status_fields(mongosim_cluster):
    c = mongosim_cluster(3)
    p = c.wait_for_primary()
    c.wait_for_states({m.index: ("PRIMARY" if m is p else "SECONDARY") for m in c.members}, 20)
    st = p.client().admin.command("replSetGetStatus")
    for f in ("set", "date", "myState", "term", "syncSourceHost", "syncSourceId", "heartbeatIntervalMillis",
              "majorityVoteCount", "writeMajorityCount", "votingMembersCount", "writableVotingMembersCount",
              "optimes", "members"):
        assert f in st, f
    assert (st["majorityVoteCount"], st["writeMajorityCount"], st["votingMembersCount"]) == (2, 2, 3)
    assert st["heartbeatIntervalMillis"] == c.heartbeat_interval_ms
    for m in st["members"]:
        for f in ("_id", "name", "health", "state", "stateStr", "uptime", "optime", "optimeDate",
                  "configVersion", "configTerm"):
            assert f in m, f
        if m.get("self"):
            assert m["name"] == p.address and m["stateStr"] == "PRIMARY"
        else:
            assert m["health"] == 1 and "lastHeartbeat" in m and "lastHeartbeatRecv" in m and "pingMs" in m


@pytest.mark.timeout(60)
def test_majority_write_times_out_with_wtimeout(mongosim_cluster):
    c = mongosim_cluster(3, election_timeout_ms=10000)
    p = c.wait_for_primary()
    for s in c.members:
        if s is not p:
            c.freeze(s)
    try:
        coll = p.client().app.get_collection("docs", write_concern=WriteConcern(w="majority", wtimeout=500))
        from pymongo.errors import WriteConcernError
        with pytest.raises(WriteConcernError) as e:
            coll.insert_one({"_id": "slow"})
        assert e.value.code == 64 and e.value.details["errInfo"]["wtimeout"] is True
    finally:
        for s in c.members:
            c.thaw(s)


@pytest.mark.timeout(60)
def test_reconfig_refused_by_quorum_check_when_the_only_peer_is_frozen(mongosim_cluster):
    c = mongosim_cluster(2, initiate=False, election_timeout_ms=10000)
    c.initiate(c.config_document(settings={"heartbeatTimeoutSecs": 2}))
    p = c.wait_for_primary()
    cl = p.client()
    c.wait_for(lambda: cl.admin.command("replSetGetConfig", commitmentStatus=True)["commitmentStatus"], 20)
    other = next(m for m in c.members if m is not p)
    c.freeze(other)  # it cannot answer the quorum check's heartbeat
    try:
        cfg = cl.admin.command("replSetGetConfig")["config"]
        cfg["version"] += 1
        cfg["members"][0]["tags"] = {"dc": "a"}
        with pytest.raises(OperationFailure) as e:
            cl.admin.command("replSetReconfig", cfg, maxTimeMS=10000)
        assert e.value.code == 74 and "Quorum check failed" in str(e.value)
        assert cl.admin.command("replSetGetConfig")["config"]["version"] == cfg["version"] - 1
    finally:
        c.thaw(other)


@pytest.mark.timeout(60)
def test_shutdown_command_and_server_status(mongosim_cluster):
    c = mongosim_cluster(3)
    p = c.wait_for_primary()
    s = next(m for m in c.members if m is not p)
    status = s.client().admin.command("serverStatus")
    assert status["repl"]["setName"] == c.set_name and status["repl"]["me"] == s.address
    try:
        s.client().admin.command("shutdown")
    except PyMongoError:
        pass  # the connection closes as the server exits
    c.wait_for(lambda: not s.running, 20, what="member exited after shutdown")
    assert s.proc.returncode == 0


@pytest.mark.timeout(90)
def test_arbiter_votes_and_is_listed(mongosim_cluster):
    c = mongosim_cluster(3, initiate=False)
    cfg = c.config_document()
    cfg["members"][2]["arbiterOnly"] = True
    c.initiate(cfg)
    arb = c.members[2]
    h = c.wait_for(lambda: arb.hello() if (arb.hello() or {}).get("arbiterOnly") else None, 20,
                   what="arbiter state")
    assert h["arbiters"] == [arb.address] and sorted(h["hosts"]) == sorted(c.addresses[:2])
    st = c.wait_for_states({2: "ARBITER"}, 20)
    assert (st["votingMembersCount"], st["writableVotingMembersCount"], st["writeMajorityCount"]) == (3, 2, 2)
    majority_coll(c).insert_one({"_id": 1})
    old = c.wait_for_primary()
    c.kill(old)
    new = c.wait_for_primary(timeout=30, exclude=[old])
    assert new is not arb


@pytest.mark.timeout(90)
def test_force_reconfig_on_survivor_after_losing_majority(mongosim_cluster):
    c = mongosim_cluster(3)
    majority_coll(c).insert_one({"_id": "kept"})
    p = c.wait_for_primary()
    survivor = next(m for m in c.members if m is not p)
    for m in c.members:
        if m is not survivor:
            c.kill(m)
    c.wait_for(lambda: (survivor.hello() or {}).get("secondary"), 30, what="survivor without majority is secondary")
    sc = survivor.client()
    cfg = sc.admin.command("replSetGetConfig")["config"]
    cfg["members"] = [m for m in cfg["members"] if m["host"] == survivor.address]
    cfg["version"] += 1
    from pymongo.errors import NotPrimaryError
    with pytest.raises(NotPrimaryError):
        sc.admin.command("replSetReconfig", cfg)  # not primary: only force is allowed
    sc.admin.command("replSetReconfig", cfg, force=True)
    c.wait_for(lambda: (survivor.hello() or {}).get("isWritablePrimary"), 30, what="survivor elects itself")
    assert sc.app.docs.find_one({"_id": "kept"}) == {"_id": "kept"}
    new_cfg = sc.admin.command("replSetGetConfig")["config"]
    assert len(new_cfg["members"]) == 1 and new_cfg["version"] > cfg["version"]


def _health(observer_admin, target) -> float:
    st = observer_admin.command("replSetGetStatus")
    return next(m for m in st["members"] if m["name"] == target.address)["health"]


def _seconds_until_unhealthy(c, observer_admin, target) -> float:
    started = time.monotonic()
    c.wait_for(lambda: _health(observer_admin, target) == 0, 20, interval=0.05, what=f"{target} unhealthy")
    return time.monotonic() - started


@pytest.mark.simulator_only
@pytest.mark.timeout(120)
def test_partition_is_noticed_after_heartbeat_timeout_unless_instant(mongosim_cluster):
    c = mongosim_cluster(3, initiate=False, election_timeout_ms=15000)
    c.initiate(c.config_document(settings={"heartbeatTimeoutSecs": 3}))
    p = c.wait_for_primary()
    s = next(m for m in c.members if m is not p)
    client = p.client()
    try:
        c.partition([s])  # lost packets, as a cut cable: only the heartbeat timeout tells
        assert _seconds_until_unhealthy(c, client.admin, s) >= 2.7
        c.heal()
        c.wait_for(lambda: _health(client.admin, s) == 1, 20, what="healed")
        c.partition([s], instant=True)  # refused connections: seen at once
        assert _seconds_until_unhealthy(c, client.admin, s) < 2
        c.heal()
    finally:
        client.close()
