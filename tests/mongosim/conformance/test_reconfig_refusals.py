"""Reconfigs mongod refuses without changing anything, and the argument rules of replSetStepDown/replSetFreeze.

mongod rewraps every validation failure of a reconfig as NewReplicaSetConfigurationIncompatible (103)
(``_doReplSetReconfig`` around ``validateConfigForReconfig``), except that a node missing from the new config answers
NodeNotFound (74) and a primary that a non-force reconfig would make unelectable answers NodeNotElectable (104).
"""
from __future__ import annotations

import pytest
from conformance_support import config, next_config, refused, run, start_set
from mongosim.testing import Cluster, Member


@pytest.fixture(scope="module")
def rs(module_cluster_factory) -> Cluster:
    return start_set(module_cluster_factory, 3)


def unchanged(rs: Cluster, primary: Member, version: int) -> None:
    assert config(primary)["version"] == version
    assert rs.primary() is primary


def spare(rs: Cluster, k: int) -> str:
    """An address in the cluster's /24 where nothing listens."""
    return f"{rs.prefix}.{100 + k}:{rs.port}"


def test_changing_two_voters_at_once_answers_103(rs):
    p = rs.wait_for_primary()
    cfg = next_config(p)
    others = [m for m in cfg["members"] if m["host"] != p.address]
    for m in others:
        m.update(votes=0, priority=0)
    refused(p, {"replSetReconfig": cfg}, 103, "Non force replica set reconfig can only add or remove at most 1 "
            "voting member")
    unchanged(rs, p, cfg["version"] - 1)


def test_more_than_seven_voters_answers_103_even_with_force(rs):
    p = rs.wait_for_primary()
    cfg = next_config(p)
    cfg["members"] += [{"_id": 10 + k, "host": spare(rs, k)} for k in range(5)]
    refused(p, {"replSetReconfig": cfg, "force": True}, 103, "no more than 7")
    unchanged(rs, p, cfg["version"] - 1)


def test_version_not_greater_answers_103(rs):
    p = rs.wait_for_primary()
    cfg = next_config(p)
    cfg["version"] -= 1
    refused(p, {"replSetReconfig": cfg}, 103, "version must be greater than old")
    unchanged(rs, p, cfg["version"])


@pytest.mark.parametrize("change", [{"priority": 0}, {"priority": 0, "votes": 0}], ids=["priority0", "nonvoter"])
def test_making_the_primary_unelectable_answers_104(rs, change):
    p = rs.wait_for_primary()
    cfg = next_config(p)
    next(m for m in cfg["members"] if m["host"] == p.address).update(change)
    refused(p, {"replSetReconfig": cfg}, 104, "is not electable under the new configuration")
    unchanged(rs, p, cfg["version"] - 1)


def test_freeze_on_the_primary_answers_95(rs):
    p = rs.wait_for_primary()
    refused(p, {"replSetFreeze": 30}, 95, "cannot freeze node when primary")
    assert rs.primary() is p


@pytest.mark.parametrize("command, fragment", [
    # secondaryCatchUpPeriodSecs defaults to 10 s (0 only with force), so 5 s is too short a step-down
    ({"replSetStepDown": 5}, "stepdown period must be longer than secondaryCatchUpPeriodSecs"),
    ({"replSetStepDown": 20, "secondaryCatchUpPeriodSecs": 30},
     "stepdown period must be longer than secondaryCatchUpPeriodSecs"),
    ({"replSetStepDown": -1}, "stepdown period must be a positive integer"),
    ({"replSetStepDown": 20, "secondaryCatchUpPeriodSecs": -1}, "secondaryCatchUpPeriodSecs"),
], ids=["default-catch-up", "catch-up-longer", "negative", "negative-catch-up"])
def test_step_down_argument_rules_answer_bad_value(rs, command, fragment):
    p = rs.wait_for_primary()
    refused(p, command, 2, fragment)
    assert rs.primary() is p


def test_step_down_on_a_secondary_answers_10107(rs):
    p = rs.wait_for_primary()
    s = next(m for m in rs.members if m is not p)
    refused(s, {"replSetStepDown": 60}, 10107, "not primary")
    assert run(p, {"hello": 1})["isWritablePrimary"] is True
