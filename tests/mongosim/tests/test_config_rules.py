"""replSetInitiate / replSetReconfig validation, mirroring the server's repl_set_config_checks tests."""
from __future__ import annotations

import copy

import pytest
from mongosim.testing import Cluster
from pymongo.errors import OperationFailure


@pytest.fixture(scope="module")
def rs(tmp_path_factory):
    c = Cluster(3, block="127.10", workdir=tmp_path_factory.mktemp("rules"))
    try:
        c.start()
        c.initiate()
        yield c
    finally:
        c.stop()


def current(rs: Cluster) -> dict:
    """The primary's config with the server's newlyAdded flags (mongod hides them unless asked)."""
    p = rs.wait_for_primary()
    cl = p.client()
    try:
        cfg = cl.admin.command({"replSetGetConfig": 1, "$_internalIncludeNewlyAdded": True})["config"]
    finally:
        cl.close()
    return cfg


def reconfig(rs: Cluster, cfg: dict, **kw) -> dict:
    p = rs.wait_for_primary()
    cl = p.client()
    try:
        return cl.admin.command("replSetReconfig", cfg, maxTimeMS=20000, **kw)
    finally:
        cl.close()


def bumped(rs: Cluster) -> dict:
    cfg = copy.deepcopy(current(rs))
    cfg["version"] += 1
    cfg.pop("term", None)
    return cfg


def spare(rs: Cluster, k: int) -> str:
    return f"{rs.prefix}.{40 + k}:{rs.port}"


def expect(rs: Cluster, cfg: dict, code_name: str, **kw) -> OperationFailure:
    with pytest.raises(OperationFailure) as e:
        reconfig(rs, cfg, **kw)
    assert e.value.details["codeName"] == code_name, e.value.details
    return e.value


def restore(rs: Cluster) -> None:
    """Remove every member added by a test (non-voters first, in allowed single-voter steps)."""
    ours = set(rs.addresses)
    while True:
        cfg = bumped(rs)
        extra = [m for m in cfg["members"] if m["host"] not in ours]
        if not extra:
            return
        extra.sort(key=lambda m: m.get("votes", 1))
        cfg["members"] = [m for m in cfg["members"] if m is not extra[0]]
        for m in cfg["members"]:
            m.pop("newlyAdded", None)  # the server's field: it keeps it for members that still have it
        reconfig(rs, cfg)


def test_single_voting_node_addition_allowed(rs):
    cfg = bumped(rs)
    cfg["members"].append({"_id": 10, "host": spare(rs, 1)})
    assert reconfig(rs, cfg)["ok"] == 1
    new = current(rs)
    assert new["version"] == cfg["version"] and len(new["members"]) == 4
    # 5.0+: an added voter is rewritten as newlyAdded and does not count until it has synced (it never starts here)
    assert new["members"][-1].get("newlyAdded") is True
    status = rs.wait_for_primary().client().admin.command("replSetGetStatus")
    assert status["votingMembersCount"] == 3
    restore(rs)


def test_removing_one_voter_and_demoting_another_disallowed(rs):
    cfg = bumped(rs)
    p = rs.wait_for_primary().address
    others = [m for m in cfg["members"] if m["host"] != p]
    others[0].update(votes=0, priority=0)
    cfg["members"].remove(others[1])
    e = expect(rs, cfg, "NewReplicaSetConfigurationIncompatible")
    assert e.code == 103 and "at most 1 voting member" in str(e)


def test_brand_new_voters_do_not_count_against_the_single_voter_rule(rs):
    # 5.0+: new voters are newlyAdded before the check, so two of them (or one plus a removal) are accepted
    cfg = bumped(rs)
    cfg["members"] += [{"_id": 12, "host": spare(rs, 3)}, {"_id": 13, "host": spare(rs, 4)}]
    assert reconfig(rs, cfg)["ok"] == 1
    assert [m.get("newlyAdded") for m in current(rs)["members"][3:]] == [True, True]
    restore(rs)


def test_multi_node_addition_of_non_voting_nodes_allowed(rs):
    cfg = bumped(rs)
    cfg["members"] += [{"_id": 14, "host": spare(rs, 5), "votes": 0, "priority": 0},
                       {"_id": 15, "host": spare(rs, 6), "votes": 0, "priority": 0}]
    assert reconfig(rs, cfg)["ok"] == 1
    restore(rs)


def test_multi_node_addition_of_arbiters_disallowed(rs):
    cfg = bumped(rs)
    cfg["members"] += [{"_id": 16, "host": spare(rs, 7), "arbiterOnly": True},
                       {"_id": 17, "host": spare(rs, 8), "arbiterOnly": True}]
    expect(rs, cfg, "NewReplicaSetConfigurationIncompatible")


def test_force_skips_single_node_check(rs):
    cfg = bumped(rs)
    cfg["members"] += [{"_id": 18, "host": spare(rs, 9), "votes": 0, "priority": 0},
                       {"_id": 19, "host": spare(rs, 10), "votes": 0, "priority": 0}]
    cfg["members"][3]["votes"], cfg["members"][3]["priority"] = 1, 1
    cfg["members"][4]["votes"], cfg["members"][4]["priority"] = 1, 1
    old_version = current(rs)["version"]
    assert reconfig(rs, cfg, force=True)["ok"] == 1
    rs.wait_for_primary()
    new = current(rs)
    assert new["version"] > old_version and len(new["members"]) == 5
    fix = bumped(rs)
    fix["members"] = [m for m in fix["members"] if m["host"] in rs.addresses]
    assert reconfig(rs, fix, force=True)["ok"] == 1
    rs.wait_for(lambda: len(current(rs)["members"]) == 3, 20)


@pytest.mark.parametrize("mutate, code_name", [
    (lambda c, rs: c.update(version=c["version"] - 1), "NewReplicaSetConfigurationIncompatible"),
    (lambda c, rs: c.update(_id="other"), "NewReplicaSetConfigurationIncompatible"),
    (lambda c, rs: c["members"][1].update(_id=99), "NewReplicaSetConfigurationIncompatible"),
    # mongod rewraps every validation failure of a reconfig as 103; only a config it cannot parse answers 93
    (lambda c, rs: c["members"][1].update(votes=0), "NewReplicaSetConfigurationIncompatible"),
    (lambda c, rs: c["members"][1].update(host=c["members"][2]["host"]), "NewReplicaSetConfigurationIncompatible"),
    (lambda c, rs: c["members"][1].update(_id=c["members"][2]["_id"]), "NewReplicaSetConfigurationIncompatible"),
    (lambda c, rs: [m.update(priority=0) for m in c["members"]], "NewReplicaSetConfigurationIncompatible"),
    (lambda c, rs: c["members"][2].update(hidden=True), "NewReplicaSetConfigurationIncompatible"),
    (lambda c, rs: c["members"][2].update(bogusField=1), "InvalidReplicaSetConfig"),
    (lambda c, rs: c["members"][2].update(priority=2000), "NewReplicaSetConfigurationIncompatible"),
    (lambda c, rs: c["members"][2].update(arbiterOnly=True), "NewReplicaSetConfigurationIncompatible"),
    (lambda c, rs: c["members"].extend({"_id": 20 + i, "host": spare(rs, 20 + i), "votes": 0, "priority": 0}
                                       for i in range(48)), "NewReplicaSetConfigurationIncompatible"),
])
def test_invalid_reconfigs_rejected(rs, mutate, code_name):
    cfg = bumped(rs)
    mutate(cfg, rs)
    expect(rs, cfg, code_name)


def test_more_than_seven_voters_rejected(rs):
    cfg = bumped(rs)
    cfg["members"] += [{"_id": 30 + i, "host": spare(rs, 30 + i)} for i in range(5)]
    e = expect(rs, cfg, "NewReplicaSetConfigurationIncompatible", force=True)
    assert "no more than 7" in str(e)
    assert len(current(rs)["members"]) == 3


def test_commitment_status_and_term_set_by_primary(rs):
    reconfig(rs, bumped(rs))  # a non-force reconfig: the primary stamps its term (force leaves term -1)
    p = rs.wait_for_primary()
    cl = p.client()
    try:
        rs.wait_for(lambda: cl.admin.command("replSetGetConfig", commitmentStatus=True)["commitmentStatus"], 20)
        cfg = cl.admin.command("replSetGetConfig")["config"]
        status = cl.admin.command("replSetGetStatus")
    finally:
        cl.close()
    assert cfg["term"] == status["term"]


def test_initiate_rules(mongosim_cluster):
    c = mongosim_cluster(2, initiate=False)
    admin = c.members[0].client().admin

    def initiate_err(cfg: dict) -> OperationFailure:
        with pytest.raises(OperationFailure) as e:
            admin.command("replSetInitiate", cfg)
        return e.value

    base = c.config_document()
    bad = copy.deepcopy(base)
    bad["version"] = 2
    assert initiate_err(bad).details["codeName"] == "InvalidReplicaSetConfig"
    bad = copy.deepcopy(base)
    bad["members"] = [bad["members"][1]]
    assert initiate_err(bad).details["codeName"] == "InvalidReplicaSetConfig"  # self not in config
    bad = copy.deepcopy(base)
    bad["members"][0]["priority"] = 0
    assert initiate_err(bad).details["codeName"] == "InvalidReplicaSetConfig"  # self not electable
    bad = copy.deepcopy(base)
    bad["_id"] = "wrongname"
    assert initiate_err(bad).details["codeName"] == "InvalidReplicaSetConfig"
    bad = copy.deepcopy(base)
    bad["members"].append({"_id": 5, "host": f"{c.prefix}.60:{c.port}"})
    assert initiate_err(bad).details["codeName"] == "NodeNotFound"  # quorum check: member unreachable
    admin.command("replSetInitiate", base)
    e = initiate_err(base)
    assert e.details["codeName"] == "AlreadyInitialized" and e.code == 23
    c.wait_for_primary()


def test_removed_member_reports_removed(mongosim_cluster):
    c = mongosim_cluster(3)
    p = c.wait_for_primary()
    victim = next(m for m in c.members if m is not p)
    cl = p.client()
    cfg = cl.admin.command("replSetGetConfig")["config"]
    cfg["version"] += 1
    cfg["members"] = [m for m in cfg["members"] if m["host"] != victim.address]
    cl.admin.command("replSetReconfig", cfg, maxTimeMS=20000)
    vc = victim.client()

    def removed() -> bool:
        try:
            vc.admin.command("replSetGetStatus")
        except OperationFailure as e:
            return e.details.get("myState") == 10 or e.code == 93
        return False

    c.wait_for(removed, 20, what="victim reports REMOVED")
    h = victim.hello()
    assert h["isWritablePrimary"] is False and h.get("isreplicaset") is True


def test_new_voter_is_newly_added_until_synced(mongosim_cluster):
    c = mongosim_cluster(2)
    extra = c.add_node()
    p = c.wait_for_primary()
    cl = p.client()
    cfg = cl.admin.command("replSetGetConfig")["config"]
    cfg["version"] += 1
    cfg["members"].append({"_id": 5, "host": extra.address})
    cl.admin.command("replSetReconfig", cfg, maxTimeMS=20000)
    # the primary removes newlyAdded by itself once the member has synced, and it then counts as a voter
    c.wait_for(lambda: not any(m.get("newlyAdded") for m in cl.admin.command(
        {"replSetGetConfig": 1, "$_internalIncludeNewlyAdded": True})["config"]["members"]), 30, what="newlyAdded cleared")
    st = c.wait_for_states({extra.index: "SECONDARY"}, 30)
    c.wait_for(lambda: cl.admin.command("replSetGetStatus")["votingMembersCount"] == 3, 20)
    assert st["set"] == c.set_name


@pytest.mark.parametrize("a, b, same", [
    ((5, -1), (5, 2), True),     # a force reconfig's term -1: versions only
    ((5, 2), (5, -1), True),
    ((4, -1), (5, 2), False),
    ((5, 1), (5, 2), False),     # two real terms must match
    ((5, 2), (5, 2), True),
])
def test_config_version_and_term_equality_is_mongods(a, b, same):
    from mongosim import rsconfig
    assert rsconfig.same_version(a, b) is same
