"""The convergence loop against refusals the simulator sends as mongod does, provoked between the loop's read and its send.

The loop runs in-process against a loopback set (the adapter is the real one); a wrapper around the adapter's
reconfig changes the set just before the planned step is sent, as another actor would, and records the code the
server answered. Each test asserts on the set read back afterwards.
"""

from __future__ import annotations

import pytest
from ansible_collections.stateserver.ha.plugins.module_utils import _converge
from ansible_collections.stateserver.ha.plugins.module_utils._model import MachineRecord
from ansible_collections.stateserver.ha.plugins.module_utils._replset import ReplSet, TransientError
from cluster import MACHINE_TAG, Cluster
from pymongo.errors import PyMongoError
from test_modules import voters

pytestmark = pytest.mark.timeout(420)


def records(cluster: Cluster, count: int, no_vote: tuple = ()) -> list[MachineRecord]:
    return [MachineRecord(cluster.names[i], cluster.addresses[i], f"{cluster.hosts[i]}:17070",
                          cluster.names[i] not in no_vote) for i in range(count)]


def connect(cluster: Cluster) -> ReplSet:
    return ReplSet({"seeds": cluster.addresses, "server_selection_timeout": 10})


def voting(config: dict) -> set[str]:
    return {m["tags"][MACHINE_TAG] for m in config["members"] if m.get("votes", 1) > 0}


def converged_to(cluster: Cluster, rs: ReplSet, before: list[MachineRecord], after: list[MachineRecord]) -> None:
    rs.write_records(before, after)
    assert _converge.converge(rs, 120).converged


class Interceptor:
    """Wraps rs.reconfig: the first config for which `when(old, new)` holds runs `act()` first; the codes the
    server answered are kept in `codes`."""

    def __init__(self, rs: ReplSet, when, act, after=None) -> None:
        self.rs, self.when, self.act, self.after = rs, when, act, after
        self.real = rs.reconfig
        self.fired = False
        self.codes: list[int | None] = []
        rs.reconfig = self

    def __call__(self, config: dict, max_time: float = 60.0) -> bool:
        if self.fired or not self.when(config):
            return self.real(config, max_time)
        self.fired = True
        self.act()
        try:
            return self.real(config, max_time)
        except TransientError as exc:
            self.codes.append(exc.code)
            if self.after is not None:
                self.after()
            raise


def test_a_member_that_went_away_between_read_and_send_is_re_read_and_re_planned(cluster_factory):
    # 74 NodeNotFound: the promotion of sm4 needs 3 of 4 voters to answer the quorum check; sm4 and one voter
    # die after the read. Nothing is installed; once they are back the loop re-reads and finishes.
    cluster = cluster_factory(size=5)
    cluster.initiate(0)
    with connect(cluster) as rs:
        converged_to(cluster, rs, [], records(cluster, 3))
        primary = cluster.primary_name()
        voter = next(n for n in cluster.names[:3] if n != primary)
        gone = [cluster.names.index(voter), 3]
        version = {}

        def away() -> None:
            version["before"] = cluster.read()[0]["version"]
            for i in gone:
                cluster.kill(i)

        def back() -> None:
            version["refused"] = cluster.direct_config(cluster.names.index(primary))["version"]
            for i in gone:
                cluster.sim.start(i)

        watch = Interceptor(rs, lambda cfg: "sm4" in voting(cfg), away, back)
        rs.write_records(records(cluster, 3), records(cluster, 5))
        outcome = _converge.converge(rs, 180)
    assert watch.codes == [74]
    assert version["refused"] == version["before"]  # the refused promotion installed nothing
    assert outcome.converged
    assert voters(cluster.read()[0]) == set(cluster.names)


def test_a_primary_that_changed_before_its_demotion_is_stepped_down_first(cluster_factory):
    # 104 NodeNotElectable: the loop plans to demote sm4, a secondary; before the send sm4 is elected. The
    # reconfig reaches sm4, which refuses to make itself unelectable; the loop re-reads, and the new plan steps
    # sm4 down before it takes its vote.
    cluster = cluster_factory(size=5)
    cluster.initiate(0)
    with connect(cluster) as rs:
        converged_to(cluster, rs, [], records(cluster, 5))
        target = cluster.names.index("sm4")

        def elect_sm4() -> None:
            others = [i for i in cluster.running if i != target]
            for i in others:
                try:
                    with cluster.direct(i) as c:
                        c.admin.command("replSetFreeze", 60)
                except PyMongoError:
                    pass  # the primary refuses to freeze; its step-down below keeps it out instead
            primary = cluster.names.index(cluster.primary_name())
            try:
                with cluster.direct(primary) as c:
                    c.admin.command("replSetStepDown", 30, secondaryCatchUpPeriodSecs=10)
            except PyMongoError:
                pass  # the connection drops when it steps down
            cluster.wait_for(lambda: cluster.primary_name() == "sm4", 60, "sm4 to be elected")
            for i in others:
                with cluster.direct(i) as c:
                    c.admin.command("replSetFreeze", 0)

        def demotes_sm4(cfg: dict) -> bool:
            return "sm4" not in voting(cfg)

        watch = Interceptor(rs, demotes_sm4, elect_sm4)
        rs.write_records(records(cluster, 5), records(cluster, 5, no_vote=("sm4", "sm5")))
        outcome = _converge.converge(rs, 240)
    assert watch.codes == [104]
    assert outcome.converged
    actions = [(s["action"], s["machine"]) for s in outcome.steps]
    assert actions.index(("step_down", "sm4")) < actions.index(("demote", "sm4")), actions
    config = cluster.read()[0]
    assert voters(config) == {"sm1", "sm2", "sm3"}
    assert cluster.primary_name() in {"sm1", "sm2", "sm3"}
