"""The convergence loop against refusals the simulator sends as mongod does, provoked between the loop's read and its send.

The loop runs in-process against a loopback set (the adapter is the real one); a wrapper around the adapter's
reconfig changes the set just before the planned step is sent, as another actor would, and records the code the
server answered. Each test asserts on the set read back afterwards.
"""

from __future__ import annotations

import threading
import time

import pytest
from ansible_collections.stateserver.ha.plugins.module_utils import _converge
from ansible_collections.stateserver.ha.plugins.module_utils._model import MachineRecord
from ansible_collections.stateserver.ha.plugins.module_utils._replset import ReplSet, ReplSetError, TransientError
from cluster import MACHINE_TAG, Cluster
from pymongo.errors import OperationFailure, PyMongoError
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


# -- the reconfig waits: 308, 109, 10107 ---------------------------------------------------------------------------

class Recorder:
    """Wraps rs.read_view and rs.reconfig. Every send is kept with the config it was planned from (the last view
    read) and the number of reads before it; before the first send for which `when(config)` holds, `act()` runs,
    and that send's server-side wait is `max_time` when given (the code path is the same, the suite stays short).
    `after()` runs once that send has returned or raised."""

    def __init__(self, rs: ReplSet, when, act, after=None, max_time: float | None = None) -> None:
        self.when, self.act, self.after, self.max_time = when, act, after, max_time
        self.real_read, self.real_reconfig = rs.read_view, rs.reconfig
        self.reads = 0
        self.base: dict | None = None
        self.sends: list[dict] = []
        self.fired = False
        rs.read_view, rs.reconfig = self.read_view, self.reconfig

    def read_view(self, *args, **kwargs):
        view = self.real_read(*args, **kwargs)
        self.reads += 1
        self.base = view.config
        return view

    def reconfig(self, config: dict, max_time: float = 60.0) -> bool:
        sent = {"config": config, "base": self.base, "reads": self.reads, "result": None, "code": None}
        self.sends.append(sent)
        intercepted = not self.fired and self.when(config)
        if intercepted:
            self.fired = True
            self.act()
            max_time = self.max_time or max_time
        started = time.monotonic()
        try:
            sent["result"] = self.real_reconfig(config, max_time)
            return sent["result"]
        except TransientError as exc:
            sent["code"] = exc.code
            raise
        finally:
            sent["seconds"] = time.monotonic() - started
            if intercepted and self.after is not None:
                self.after()

    def assert_safe(self) -> None:
        """Each send followed a fresh read of the set (never re-sent blindly) and changed at most one vote of the
        config it was planned from (the voting majority is never at stake)."""
        for earlier, later in zip(self.sends, self.sends[1:]):
            assert later["reads"] > earlier["reads"], "a reconfig was sent again without re-reading the set"
        for sent in self.sends:
            assert len(voting(sent["config"]) ^ voting(sent["base"])) <= 1, sent


def repl_producer(cluster: Cluster, indexes: list[int], on: bool) -> None:
    """mongod's stopReplProducer failpoint: the members stop fetching oplog entries; heartbeats go on."""
    for i in indexes:
        with cluster.direct(i) as c:
            c.admin.command("configureFailPoint", "stopReplProducer", mode="alwaysOn" if on else "off")


def elect(cluster: Cluster, target: int, members: list[int]) -> None:
    """Move the primary to `target`: the other `members` are frozen while the primary steps down, then released."""
    others = [i for i in members if i != target]
    for i in others:
        try:
            with cluster.direct(i) as c:
                c.admin.command("replSetFreeze", 30)
        except PyMongoError:
            pass  # the primary refuses (NotSecondary); its step-down keeps it out instead
    try:
        with cluster.direct(cluster.names.index(cluster.primary_name())) as c:
            c.admin.command("replSetStepDown", 30, secondaryCatchUpPeriodSecs=10)
    except PyMongoError:
        pass  # the connection drops when it steps down
    cluster.wait_for(lambda: cluster.primary_name() == cluster.names[target], 60, f"{cluster.names[target]} elected")
    for i in others:
        with cluster.direct(i) as c:
            c.admin.command("replSetFreeze", 0)


def uncommitted_new_primary(cluster: Cluster, rs: ReplSet) -> int:
    """Elect another voter while every other member fetches nothing: its first write of the new term is on it
    alone, so its config is not committed (mongod's awaitConfigCommitment). Returns its index once the
    collection's client routes to it."""
    members = [i for i in cluster.running if cluster.names[i] in voting(cluster.read()[0])]
    target = next(i for i in members if cluster.names[i] != cluster.primary_name())
    repl_producer(cluster, [i for i in members if i != target], True)
    elect(cluster, target, members)

    def routed() -> bool:
        rs.client.admin.command("hello")
        return rs.client.primary == tuple_address(cluster.addresses[target])

    cluster.wait_for(routed, 30, "the collection's client to see the new primary")
    return target


def tuple_address(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host, int(port)


def committed(cluster: Cluster, index: int) -> bool:
    with cluster.direct(index) as c:
        return bool(c.admin.command("replSetGetConfig", commitmentStatus=True)["commitmentStatus"])


def test_a_reconfig_refused_308_while_the_new_primary_has_not_committed_its_config_is_re_planned(cluster_factory):
    # 308 CurrentConfigNotCommittedYet: between the loop's read and its send a new primary is elected whose first
    # write cannot reach a majority (the others fetch nothing). The step waits maxTimeMS and is refused; nothing is
    # installed; once replication resumes the loop re-reads and finishes the growth.
    cluster = cluster_factory(size=5)
    cluster.initiate(0)
    with connect(cluster) as rs:
        converged_to(cluster, rs, [], records(cluster, 3))
        seen = {}

        def act() -> None:
            seen["version"] = cluster.read()[0]["version"]
            seen["primary"] = uncommitted_new_primary(cluster, rs)
            seen["committed"] = committed(cluster, seen["primary"])

        def after() -> None:
            seen["after_refusal"] = cluster.direct_config(seen["primary"])["version"]
            repl_producer(cluster, cluster.running, False)

        watch = Recorder(rs, lambda cfg: True, act, after, max_time=3)
        rs.write_records(records(cluster, 3), records(cluster, 5))
        outcome = _converge.converge(rs, 180)
    assert seen["committed"] is False
    assert watch.sends[0]["code"] == 308 and watch.sends[0]["seconds"] >= 2.5
    assert seen["after_refusal"] == seen["version"]  # the refused step installed nothing
    assert outcome.converged
    watch.assert_safe()
    assert voters(cluster.read()[0]) == set(cluster.names)


def test_a_reconfig_interrupted_10107_by_a_step_down_is_re_read_never_re_sent_blindly(cluster_factory):
    # 10107 NotWritablePrimary: the step waits for the new primary's config to commit, and that primary steps down
    # meanwhile. mongod answers at once; the adapter re-reads (the step did not land) and the loop re-plans
    # against the primary elected next.
    cluster = cluster_factory(size=5)
    cluster.initiate(0)
    with connect(cluster) as rs:
        converged_to(cluster, rs, [], records(cluster, 3))
        seen = {}

        def step_down_later() -> None:
            time.sleep(2)  # the step is waiting by then: its wait lasts up to a minute
            try:
                with cluster.direct(seen["primary"]) as c:
                    c.admin.command("replSetStepDown", 10, force=True)
            except PyMongoError:
                pass  # the connection drops when it steps down
            seen["stepped_down"] = time.monotonic()
            repl_producer(cluster, cluster.running, False)

        def act() -> None:
            seen["version"] = cluster.read()[0]["version"]
            seen["primary"] = uncommitted_new_primary(cluster, rs)
            threading.Thread(target=step_down_later, daemon=True).start()

        def after() -> None:
            seen["returned"] = time.monotonic()
            seen["after_refusal"] = cluster.direct_config(seen["primary"])["version"]

        watch = Recorder(rs, lambda cfg: True, act, after)
        rs.write_records(records(cluster, 3), records(cluster, 5))
        outcome = _converge.converge(rs, 240)
    first = watch.sends[0]
    assert first["result"] is False and first["code"] is None  # interrupted: re-read, not landed, not raised
    assert seen["returned"] - seen["stepped_down"] < 10  # answered at the step-down, not at maxTimeMS
    assert seen["after_refusal"] == seen["version"]
    assert outcome.converged
    watch.assert_safe()
    assert voters(cluster.read()[0]) == set(cluster.names)


def test_a_reconfig_refused_109_while_another_is_being_installed_is_retried_after_it(cluster_factory):
    # 109 ConfigurationInProgress: another actor's reconfig adds a stranger whose host is frozen, which holds that
    # reconfig in its quorum check (up to heartbeatTimeoutSecs); the loop's step arrives meanwhile. The loop backs
    # off, re-reads, removes the stranger (no state machine) and finishes.
    cluster = cluster_factory(size=5)
    cluster.initiate(0)
    with connect(cluster) as rs:
        converged_to(cluster, rs, [], records(cluster, 3))
        stranger = cluster.addresses[4]
        cluster.sim.start(4)
        cluster.sim.freeze(4)
        other = {}

        def probe_in_progress(primary: int, version: int) -> bool:
            # A reconfig to the current version changes nothing: 103 normally, 109 while one is being installed.
            config = cluster.direct_config(primary)
            config["version"] = version
            try:
                with cluster.direct(primary) as c:
                    c.admin.command("replSetReconfig", config)
            except OperationFailure as exc:
                return exc.code == 109
            return False

        def act() -> None:
            primary = cluster.names.index(cluster.primary_name())
            config = cluster.direct_config(primary)
            other["version"] = config["version"]
            config["version"] += 1
            config["members"].append({"_id": 99, "host": stranger, "votes": 0, "priority": 0})

            def send() -> None:
                try:
                    with cluster.direct(primary) as c:
                        other["result"] = c.admin.command("replSetReconfig", config, maxTimeMS=60000)
                except PyMongoError as exc:
                    other["result"] = exc

            threading.Thread(target=send, daemon=True).start()
            cluster.wait_for(lambda: probe_in_progress(primary, other["version"]), 10, "the other reconfig in flight")

        watch = Recorder(rs, lambda cfg: True, act)
        rs.write_records(records(cluster, 3), records(cluster, 4))
        outcome = _converge.converge(rs, 180)
    assert watch.sends[0]["code"] == 109
    assert outcome.converged
    watch.assert_safe()
    config = cluster.read()[0]
    assert stranger not in {m["host"] for m in config["members"]}
    assert {m["tags"][MACHINE_TAG] for m in config["members"]} == set(cluster.names[:4])


def test_a_stopped_standby_is_not_promoted_while_two_of_five_voters_are_down(cluster_factory):
    # mongod would refuse the promotion with 74 (its quorum check needs 4 of 6 voters; 3 can answer). peergroup
    # never sends it: a member that is down is not given a vote. The voters that are down cannot be replaced
    # either, so the run ends unconverged, says why, and the set keeps its primary and its five voters.
    cluster = cluster_factory(size=6)
    cluster.initiate(0)
    with connect(cluster) as rs:
        converged_to(cluster, rs, [], records(cluster, 6))
        before = cluster.read()[0]
        standby = next(n for n in cluster.names if n not in voting(before))
        primary = cluster.primary_name()
        down = [n for n in sorted(voting(before)) if n != primary][:2] + [standby]
        for name in down:
            cluster.kill(cluster.names.index(name))
        cluster.wait_for(lambda: cluster.member_down_for(standby) > 0, 30, f"{standby} seen down")
        watch = Recorder(rs, lambda cfg: False, lambda: None)
        with pytest.raises(_converge.ConvergeTimeout) as info:
            _converge.converge(rs, 20)
    after = cluster.read()[0]
    assert voting(after) == voting(before)
    assert cluster.primary_name() == primary
    # Nothing was sent; the reasons name the voters that are down.
    outcome = info.value.outcome
    assert watch.sends == [] and outcome.steps == []
    assert all(any(f"voter {name} " in reason for reason in outcome.reasons) for name in down[:2]), outcome.reasons


def test_a_records_write_pending_at_a_step_down_189_is_retried_on_the_new_primary(cluster_factory):
    # 189 PrimarySteppedDown: the records are written with majority write concern; the secondaries fetch nothing,
    # so the write waits, and the primary steps down meanwhile. mongod labels the error RetryableWriteError and the
    # driver retries the (idempotent) write once on the new primary: the records read back are the ones written.
    cluster = cluster_factory(size=3)
    cluster.initiate(0)
    with connect(cluster) as rs:
        converged_to(cluster, rs, [], records(cluster, 3))
        primary = cluster.names.index(cluster.primary_name())
        others = [i for i in cluster.running if i != primary]
        repl_producer(cluster, others, True)
        outcome = {}

        def write() -> None:
            try:
                outcome["written"] = rs.write_records(records(cluster, 3), records(cluster, 3, no_vote=("sm3",)))
            except ReplSetError as exc:  # reported below, with the test's assertion
                outcome["error"] = exc

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        time.sleep(1.5)
        assert writer.is_alive(), outcome  # the write is waiting for its majority
        try:
            with cluster.direct(primary) as c:
                c.admin.command("replSetStepDown", 10, force=True)
        except PyMongoError:
            pass  # the connection drops when it steps down
        repl_producer(cluster, others, False)
        writer.join(60)
    assert not writer.is_alive()
    assert "error" not in outcome, outcome
    assert outcome["written"] == ["sm3"]
    stored = {r["_id"]: r["wants_vote"] for r in cluster.read()[2]}
    assert stored == {"sm1": True, "sm2": True, "sm3": False}
    assert cluster.primary_name() != cluster.names[primary]
