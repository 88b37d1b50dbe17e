"""Recovering from a lost majority (issue 13) through ansible-playbook against replica-set processes on loopback.

Two of three voters are killed for good. recover_majority refuses without the set's name, changes nothing in check
mode, then forces the config to the survivor; ensure_availability and peergroup bring the set back to 3 from
spares. Every write acknowledged before the loss is present because it had reached every member before the loss:
a write acknowledged by a majority that does not include a survivor is what a forced reconfig can lose, and the
module says so in its report. A partition is not a loss: members a survivor still sees, and survivors that only
cannot reach each other, are refused with nothing changed.
"""

from __future__ import annotations

import pytest
from cluster import MACHINE_TAG, SET_NAME, SETTINGS, Cluster
from mongosim.testing import using_real_mongod
from playbook import run_tasks
from pymongo import MongoClient
from test_modules import Writer, assert_converged, ea, pg, voters

pytestmark = pytest.mark.timeout(600)

RM = "stateserver.ha.recover_majority"


def recover(cluster: Cluster, confirm: str, **extra) -> dict:
    return {RM: {"confirm": confirm, "seeds": cluster.addresses[:3], "server_selection_timeout": 5, **extra}}


def count_on(cluster: Cluster, index: int) -> int:
    with MongoClient(cluster.addresses[index], directConnection=True, serverSelectionTimeoutMS=3000) as c:
        return c.get_database("writer").get_collection("docs").count_documents({})


def three_voters(cluster: Cluster, **settings) -> None:
    """Initiate sm1..sm3 as one set of three voters (as ensure-ha.yml leaves it) and wait until all are healthy."""
    members = [{"_id": i, "host": cluster.addresses[i], "tags": {MACHINE_TAG: cluster.names[i]}} for i in range(3)]
    with cluster.direct(0) as c:
        c.admin.command("replSetInitiate", {"_id": SET_NAME, "version": 1, "members": members,
                                            "settings": {**SETTINGS, **settings}})
    cluster.wait_for(lambda: cluster.primary_name() and all(
        m["health"] == 1 and m["state"] in (1, 2) for m in cluster.read()[1]["members"]), 30, "three healthy voters")


def configs(cluster: Cluster, indexes) -> list[dict]:
    """Each member's config without its term, which elections move (a reconfig changes the version)."""
    return [{k: v for k, v in cluster.direct_config(i).items() if k != "term"} for i in indexes]


def test_members_a_survivor_still_sees_are_not_lost(tmp_path, cluster_factory):
    """The controller cannot reach two of three voters, but the survivor's own status still has them healthy:
    from the survivor's side there is no loss, so recover_majority refuses and nothing changes. The two are frozen
    (SIGSTOP: they keep their sockets and stop answering), and the survivor keeps them healthy for the set's
    heartbeatTimeoutSecs, here long enough for the whole run; the test checks that it did."""
    cluster = cluster_factory(size=3)
    three_voters(cluster, heartbeatTimeoutSecs=90)
    primary = cluster.primary_name()
    survivor = next(n for n in cluster.names if n != primary)
    s = cluster.names.index(survivor)
    frozen = [i for i in range(3) if i != s]
    before = configs(cluster, range(3))
    for i in frozen:
        cluster.sim.freeze(i)
    try:
        # A frozen member accepts the connection and never answers: a short selection timeout bounds each probe.
        run = run_tasks(tmp_path / "partition", [recover(cluster, "stateserver", server_selection_timeout=2)])
        with cluster.direct(s) as c:
            seen = {m["name"]: m["health"] for m in c.admin.command("replSetGetStatus")["members"]}
    finally:
        for i in frozen:
            cluster.sim.thaw(i)
    refused = run[0]
    assert refused.get("failed") is True and refused["changed"] is False, refused
    assert "a partition is not a loss" in refused["msg"] and "nothing was changed" in refused["msg"], refused["msg"]
    # The refusal's premise held for the whole run: the survivor still saw both as healthy.
    assert all(seen[cluster.addresses[i]] == 1 for i in frozen), seen
    cluster.wait_for(cluster.primary_name, 30, "a primary once the two answer again")
    assert configs(cluster, range(3)) == before
    assert sorted(r["name"] for r in cluster.read()[1]["members"]) == sorted(cluster.addresses)


@pytest.mark.skipif(using_real_mongod(), reason="cuts member traffic with the simulator's mongosimPartition")
def test_survivors_cut_off_from_each_other_are_not_a_majority_loss(tmp_path, cluster_factory):
    """One voter is lost for good and the other two cannot reach each other, so no member is primary; but the
    controller reaches both, a majority of the votes: the set needs its network mended, not a forced reconfig."""
    cluster = cluster_factory(size=3)
    three_voters(cluster)
    before = configs(cluster, range(3))
    cluster.kill(0)
    b, c = cluster.addresses[1], cluster.addresses[2]
    for index, other in ((1, c), (2, b)):
        with cluster.direct(index) as client:
            client.admin.command("configureFailPoint", "mongosimPartition", mode="alwaysOn",
                                 data={"hosts": [other], "instant": True})

    def no_primary() -> bool:
        states = []
        for i in (1, 2):
            with cluster.direct(i) as client:
                states.append(client.admin.command("replSetGetStatus")["myState"])
        return 1 not in states

    cluster.wait_for(no_primary, 30, "the survivors to have no primary")
    run = run_tasks(tmp_path / "cut", [recover(cluster, "stateserver")])
    refused = run[0]
    assert refused.get("failed") is True and refused["changed"] is False, refused
    assert "not a majority loss" in refused["msg"] and "nothing was changed" in refused["msg"], refused["msg"]
    assert configs(cluster, (1, 2)) == before[1:]
    assert no_primary()


def test_two_of_three_lost_recovered_to_three_from_spares(tmp_path, cluster_factory):
    cluster = cluster_factory(size=5, start=5)
    cluster.initiate(0)
    run = run_tasks(tmp_path / "grow", [ea(cluster, 3, 3), pg(cluster)])
    assert all(r.get("failed") is not True for r in run.results), run.results
    assert_converged(cluster, ["sm1", "sm2", "sm3"])
    with Writer(cluster) as writer:
        cluster.wait_for(lambda: len(writer.acked) >= 20, 30, "acknowledged writes")
    acked = list(writer.acked)
    cluster.wait_for(lambda: all(count_on(cluster, i) >= len(acked) for i in range(3)), 30,
                     "every write on every member")

    primary = cluster.primary_name()
    survivor = next(n for n in ("sm1", "sm2", "sm3") if n != primary)
    lost = sorted({"sm1", "sm2", "sm3"} - {survivor})
    s = cluster.names.index(survivor)
    for name in lost:
        cluster.kill(cluster.names.index(name))
    cluster.wait_for(lambda: all(cluster.member_down_for(v, via=s) > 1 for v in lost), 60, "the loss seen")
    before = cluster.direct_config(s)

    run = run_tasks(tmp_path / "guarded", [recover(cluster, "wrong"), recover(cluster, "stateserver")], check=True)
    refused, planned = run.results
    assert refused.get("failed") is True and refused["changed"] is False and "'stateserver'" in refused["msg"]
    assert planned.get("failed") is not True, planned
    assert planned["changed"] is True and planned["survivors"] == [survivor] and sorted(planned["lost"]) == lost
    assert planned["most_advanced"] == survivor and planned["primary"] is None
    assert any("may be gone" in line for line in planned["report"])
    assert any(line.startswith(f"survivor {survivor}") for line in planned["report"])
    assert cluster.direct_config(s) == before

    # The lost machines do not answer the controller (the playbook's ping marks them unreachable).
    spares = [{"name": n, "address": cluster.hosts[i], "reachable": n not in lost} for i, n in enumerate(cluster.names)]
    run = run_tasks(tmp_path / "recover", [
        recover(cluster, "stateserver"),
        {**ea(cluster, 3, 5), "stateserver.ha.ensure_availability": {
            **ea(cluster, 3, 5)["stateserver.ha.ensure_availability"], "pool": spares}},
        pg(cluster, timeout=180),
        recover(cluster, "stateserver"),
    ])
    done, plan, converge, again = run.results
    assert done.get("failed") is not True, done
    assert done["primary"] == cluster.addresses[s] and done["config_version"] > before["version"] + 10000
    assert sorted(r["name"] for r in done["records"]) == [survivor]
    assert plan.get("failed") is not True and sorted(plan["added"]) == ["sm4", "sm5"], plan
    assert converge.get("failed") is not True and converge["converged"] is True, converge
    # With a primary again it is no longer a majority loss: refused, nothing changed.
    assert again.get("failed") is True and again["changed"] is False and "not a majority loss" in again["msg"]

    config, status, records = cluster.read()
    machines = sorted([survivor, "sm4", "sm5"])
    assert voters(config) == set(machines)
    assert sorted(m["tags"][MACHINE_TAG] for m in config["members"]) == machines
    assert sorted(r["_id"] for r in records) == machines
    assert len([m for m in status["members"] if m["state"] == 1]) == 1
    assert writer.missing() == []
    with Writer(cluster) as after:
        cluster.wait_for(lambda: len(after.acked) >= 5, 30, "writes acknowledged after the recovery")


def test_three_of_five_lost_the_most_advanced_survivor_is_elected(tmp_path, cluster_factory):
    """Two survivors, one of them behind (it stopped fetching the oplog): the one with every write becomes the
    only voter and is elected, so the lagging one catches up from it instead of rolling its writes back."""
    cluster = cluster_factory(size=6, start=6)
    cluster.initiate(0)
    run = run_tasks(tmp_path / "grow", [ea(cluster, 5, 5), pg(cluster, timeout=180)])
    assert all(r.get("failed") is not True for r in run.results), run.results
    assert_converged(cluster, cluster.names[:5])
    primary = cluster.primary_name()
    ahead, behind = [n for n in cluster.names[:5] if n != primary][:2]
    a, b = cluster.names.index(ahead), cluster.names.index(behind)
    with cluster.direct(b) as c:
        c.admin.command("configureFailPoint", "stopReplProducer", mode="alwaysOn")
    with Writer(cluster) as writer:
        cluster.wait_for(lambda: len(writer.acked) >= 20, 30, "acknowledged writes")
    acked = list(writer.acked)
    cluster.wait_for(lambda: count_on(cluster, a) >= len(acked), 30, f"every write on {ahead}")
    assert count_on(cluster, b) < len(acked)
    lost = [n for n in cluster.names[:5] if n not in (ahead, behind)]
    for name in lost:
        cluster.kill(cluster.names.index(name))
    cluster.wait_for(lambda: all(cluster.member_down_for(v, via=a) > 1 for v in lost), 60, "the loss seen")
    with cluster.direct(b) as c:
        c.admin.command("configureFailPoint", "stopReplProducer", mode="off")

    pool = [{"name": n, "address": cluster.hosts[i], "reachable": n not in lost} for i, n in enumerate(cluster.names)]
    seeds = {"seeds": cluster.addresses[:5], "server_selection_timeout": 5}
    run = run_tasks(tmp_path / "recover", [
        {RM: {"confirm": "stateserver", **seeds}},
        {"stateserver.ha.ensure_availability": {"n": 3, "pool": pool, **seeds}},
        {"stateserver.ha.peergroup": {"timeout": 180, **seeds}},
    ])
    done, plan, converge = run.results
    assert done.get("failed") is not True, done
    assert done["most_advanced"] == ahead and sorted(done["survivors"]) == sorted([ahead, behind])
    assert done["primary"] == cluster.addresses[a]
    assert [(m["tags"][MACHINE_TAG], m["votes"]) for m in done["config"]["members"]] == sorted(
        [(ahead, 1), (behind, 0)], key=lambda x: cluster.names.index(x[0]))
    assert plan.get("failed") is not True and plan["added"] == ["sm6"], plan
    assert converge.get("failed") is not True and converge["converged"] is True, converge
    config, _status, records = cluster.read()
    assert voters(config) == {ahead, behind, "sm6"}
    assert sorted(r["_id"] for r in records) == sorted([ahead, behind, "sm6"])
    assert writer.missing() == []
    cluster.wait_for(lambda: count_on(cluster, b) >= len(acked), 30, f"{behind} caught up")
