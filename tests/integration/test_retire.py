"""Retiring a state machine (issue 13) through ansible-playbook against replica-set processes on loopback.

The seed document's gap: a set that began as one state machine A could not move away from A. Here A holds data,
grows to n=3, and is retired while a writer keeps writing with w: majority; B, C and a spare must vote, A must be
gone from the config and the records, and every acknowledged write must be there.
"""

from __future__ import annotations

import pytest
from cluster import MACHINE_TAG, Cluster
from playbook import run_tasks
from test_modules import EA, Writer, assert_converged, ea, pg, voters

pytestmark = pytest.mark.timeout(600)


def members(config: dict) -> set[str]:
    return {m["tags"][MACHINE_TAG] for m in config["members"]}


def retire(cluster: Cluster, name: str, count: int, **extra) -> dict:
    return ea(cluster, 3, count, retire=[name], **extra)


def test_the_first_machine_is_retired_while_writes_continue(tmp_path, cluster_factory):
    cluster = cluster_factory(size=4)
    cluster.initiate(0)
    with cluster.client() as c:
        c.app.data.insert_many([{"_id": i} for i in range(100)])
    run = run_tasks(tmp_path / "grow", [ea(cluster, 3, 3), pg(cluster)])
    assert all(r.get("failed") is not True for r in run.results), run.results
    assert_converged(cluster, ["sm1", "sm2", "sm3"])
    before = cluster.read()[0]["version"]

    # Check mode reports the whole plan (the spare, the reconfig steps) and changes nothing.
    run = run_tasks(tmp_path / "check", [retire(cluster, "sm1", 4), pg(cluster, records="{{ r0.records }}")],
                    check=True)
    plan, steps = run.results
    assert plan.get("failed") is not True and plan["changed"] is True, plan
    assert plan["retiring"] == ["sm1"] and plan["added"] == ["sm4"]
    assert steps.get("failed") is not True, steps
    assert [s["action"] for s in steps["steps"]][:2] == ["add", "promote"]
    assert ("demote", "sm1") in [(s["action"], s["machine"]) for s in steps["steps"]]
    config, _status, records = cluster.read()
    assert config["version"] == before and sorted(r["_id"] for r in records) == ["sm1", "sm2", "sm3"]

    with Writer(cluster) as writer:
        cluster.wait_for(lambda: len(writer.acked) >= 5, 30, "the writer's first acknowledged writes")
        primary_before = cluster.primary_name()
        # As retire-machine.yml does: peergroup converges to the records the plan returned.
        run = run_tasks(tmp_path / "retire", [retire(cluster, "sm1", 4), pg(cluster, records="{{ r0.records }}"),
                                              retire(cluster, "sm1", 4), pg(cluster), retire(cluster, "sm1", 4)])
        acked = len(writer.acked)
        cluster.wait_for(lambda: len(writer.acked) > acked + 5, 30, "writes acknowledged after the retirement")
    first, converge, second, remove, third = run.results
    for r in run.results:
        assert r.get("failed") is not True, r
    assert first["retiring"] == ["sm1"] and first["added"] == ["sm4"] and first["changed"] is True
    # What check mode printed is what the real run did: the same plan and records, the same reconfig steps (each
    # with its member and config version) in the same order.
    for key in ("retiring", "added", "machines", "records", "report"):
        assert first[key] == plan[key], key
    assert converge["steps"] == steps["steps"]
    assert second["removed"] == ["sm1"] and second["added"] == []
    assert third["retired"] == ["sm1"] and third["changed"] is False
    actions = [(s["action"], s["machine"]) for s in converge["steps"]]
    assert actions.index(("promote", "sm4")) < actions.index(("demote", "sm1"))
    # A primary steps down once, only when it is the one losing its vote.
    assert [a for a in actions if a[0] == "step_down"] == ([("step_down", "sm1")] if primary_before == "sm1" else [])
    assert [(s["action"], s["machine"]) for s in remove["steps"]] == [("remove", "sm1")]

    config, status, records = cluster.read()
    assert voters(config) == {"sm2", "sm3", "sm4"} and members(config) == {"sm2", "sm3", "sm4"}
    assert sorted(r["_id"] for r in records) == ["sm2", "sm3", "sm4"] and all(r["wants_vote"] for r in records)
    assert len([m for m in status["members"] if m["state"] == 1]) == 1
    assert writer.missing() == []
    with cluster.client() as c:
        assert c.app.data.count_documents({}) == 100


def test_refusals_change_nothing(tmp_path, cluster_factory):
    cluster = cluster_factory(size=3)
    cluster.initiate(0)
    run = run_tasks(tmp_path / "grow", [ea(cluster, 3, 3), pg(cluster)])
    assert all(r.get("failed") is not True for r in run.results), run.results
    config, _status, records = cluster.read()
    run = run_tasks(tmp_path / "refuse", [
        retire(cluster, "sm2", 3),                                  # no spare left in the pool
        {EA: {**ea(cluster, 3, 3)[EA], "retire": ["sm2", "sm3"]}},  # two of three at once
        retire(cluster, "nosuch", 3),                               # unknown name
        {EA: {**retire(cluster, "sm2", 3)[EA], "replace_with": "sm3"}},  # the replacement already votes
    ])
    words = ["1 more spare host", "one at a time", "unknown machine 'nosuch'", "already wants a vote"]
    for result, word in zip(run.results, words):
        assert result.get("failed") is True and result["changed"] is False, result
        assert word in result["msg"] and "nothing was changed" in result["msg"], result["msg"]
    assert cluster.read()[0] == config and cluster.read()[2] == records
