"""``replSetReconfig`` with ``force: true`` (``_doReplSetReconfig``; jstests/replsets/force_reconfig*.js): the way
back when a majority is gone. No primary, commitment wait, single-voter rule, electability or quorum check is
needed, and the node adds 10000 plus a random amount below 100000 to the version it is given, so the forced config
outranks anything the lost members may still hold. It is still refused when this node is not in the new config
(NodeNotFound, 74) and when the config itself is invalid (NewReplicaSetConfigurationIncompatible, 103)."""
from __future__ import annotations

import copy

import pytest
from conformance_support import config, refused, run, start_set, status


def forced(cfg: dict, keep: list[str]) -> dict:
    """``cfg`` reduced to the members at ``keep``, version raised by one, as an operator would send it."""
    out = copy.deepcopy(cfg)
    out["members"] = [m for m in out["members"] if m["host"] in keep]
    out["version"] += 1
    out.pop("term", None)
    return out


@pytest.mark.timeout(180)
def test_force_on_a_secondary_without_a_majority_installs_with_a_version_jump_and_the_survivors_elect(
        mongosim_cluster):
    c = start_set(mongosim_cluster, 5)
    p = c.wait_for_primary()
    c.client().app.things.insert_one({"_id": "before"})
    survivors = [m for m in c.members if m is not p][:2]
    for m in c.members:
        if m not in survivors:
            c.kill(m)
    s = survivors[0]
    c.wait_for(lambda: status(s)["myState"] == 2 and all(
        x["health"] == 0 for x in status(s)["members"] if x["name"] not in {m.address for m in survivors}),
        30, what="the survivor sees the majority gone")
    old = config(s)
    cfg = forced(old, [m.address for m in survivors])
    # Without force the secondary refuses: only a primary reconfigures.
    refused(s, {"replSetReconfig": cfg}, 10107)
    run(s, {"replSetReconfig": cfg, "force": True})
    installed = config(s)
    assert cfg["version"] + 10000 <= installed["version"] < cfg["version"] + 110000
    assert sorted(m["host"] for m in installed["members"]) == sorted(m.address for m in survivors)
    # The two survivors form the whole set now: one of them is elected and the data is there.
    c.wait_for(lambda: c.primary() in survivors, 60, what="a survivor elected")
    primary = c.primary()
    assert primary is not None
    assert config(primary)["version"] == installed["version"]
    client = primary.client()
    try:
        assert client.app.things.find_one({"_id": "before"}) is not None
    finally:
        client.close()


@pytest.mark.timeout(120)
def test_force_is_refused_with_74_when_this_node_is_not_in_the_new_config(mongosim_cluster):
    c = start_set(mongosim_cluster, 3)
    p = c.wait_for_primary()
    s = next(m for m in c.members if m is not p)
    before = config(s)
    cfg = forced(before, [m.address for m in c.members if m is not s])
    refused(s, {"replSetReconfig": cfg, "force": True}, 74, "maps to this node")
    assert config(s)["version"] == before["version"]


@pytest.mark.timeout(120)
def test_force_is_refused_with_103_for_an_invalid_config(mongosim_cluster):
    c = start_set(mongosim_cluster, 3)
    p = c.wait_for_primary()
    before = config(p)
    cfg = forced(before, list(c.addresses))
    # Eight voters: no config may have more than seven, forced or not.
    cfg["members"] += [{"_id": 20 + k, "host": f"{c.prefix}.{100 + k}:{c.port}"} for k in range(5)]
    refused(p, {"replSetReconfig": cfg, "force": True}, 103, "no more than 7")
    renamed = forced(before, list(c.addresses))
    renamed["_id"] = "another-name"
    refused(p, {"replSetReconfig": renamed, "force": True}, 103, "differ in replica set name")
    assert config(p)["version"] == before["version"]
    assert run(p, {"hello": 1})["isWritablePrimary"] is True
