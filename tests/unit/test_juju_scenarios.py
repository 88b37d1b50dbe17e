"""Juju's worker and enable-ha scenarios (juju-peergrouper.md §6.3, §6.4) run as plan -> apply -> new status, and
regression tests named after what broke in Juju (§8), each asserting the fix."""

from __future__ import annotations

import pytest
from ansible_collections.stateserver.ha.plugins.module_utils._availability import PoolHost, plan_availability
from ansible_collections.stateserver.ha.plugins.module_utils._model import MACHINE_TAG
from ansible_collections.stateserver.ha.plugins.module_utils._peergroup import (
    convergence_report,
    desired_peer_group,
    plan_steps,
)
from ansible_collections.stateserver.ha.plugins.module_utils._rules import validate_config, validate_reconfig
from fixtures import DOWN, PRIMARY, SECONDARY, STARTUP2, ToySet, addr, config, member, rec, view, voting

POOL = [PoolHost(x, addr(i), f"10.0.0.{i}:17070") for i, x in enumerate("abcdefg")]


def primary_id(toy: ToySet) -> int:
    return next(i for i, s in toy.states.items() if s == PRIMARY)


def settle(toy: ToySet, machines, limit: int = 40) -> list:
    """Run the planner the way the convergence loop does: one step, new status, plan again; members sync when
    nothing is left to do now. Every reconfig is checked against MongoDB's rules and the primary's vote."""
    done = []
    for _attempt in range(limit):
        steps = plan_steps(toy.view(), machines, assume_ready=False)
        if not steps:
            toy.sync()
            steps = plan_steps(toy.view(), machines, assume_ready=False)
            if not steps:
                return done
        step = steps[0]
        if step.config is not None:
            assert validate_reconfig(toy.cfg, step.config) == []
            prim = primary_id(toy)
            kept = next((m for m in step.config["members"] if m["_id"] == prim), None)
            assert kept is not None and kept["votes"] == 1 and kept["priority"] > 0, "primary lost its vote"
        toy.apply(step)
        done.append((step.action, step.machine))
    raise AssertionError(f"did not settle: {done}")


def assert_converged(toy: ToySet, machines) -> None:
    assert convergence_report(toy.view(), machines) == (True, [])
    assert len(voting(toy.cfg)) % 2 == 1


# --- §6.3 worker scenarios ---------------------------------------------------------------------------------------

def test_dying_machines_are_removed():
    """Juju DyingMachinesAreRemoved: 3 voters, b dies and goes -> a votes, c is a standby (parity); c goes -> a
    alone. The machines are down as well as unrecorded: a healthy voter whose record alone is gone keeps its vote
    (test_deleted_records_of_healthy_voters_remove_nothing)."""
    toy = ToySet(config([member(0, "a"), member(1, "b"), member(2, "c")]), {0: PRIMARY, 1: DOWN})
    machines = [rec("a", 0), rec("c", 2)]
    settle(toy, machines)
    assert voting(toy.cfg) == ["a"] and sorted(m["_id"] for m in toy.cfg["members"]) == [0, 2]
    assert_converged(toy, machines)
    toy.states[2] = DOWN
    machines = [rec("a", 0)]
    settle(toy, machines)
    assert [m["_id"] for m in toy.cfg["members"]] == [0] and voting(toy.cfg) == ["a"]
    assert_converged(toy, machines)


def test_remove_primary_with_valid_secondaries():
    """Juju RemovePrimaryValidSecondaries: the primary stops wanting its vote and a replacement wants one ->
    step-down, then unvote. When the new primary stops wanting too with no replacement, the floor of 3 keeps its
    vote (issue 12: Juju went down to 1 voter here)."""
    toy = ToySet(config([member(0, "a"), member(1, "b"), member(2, "c"), member(3, "d", 0)]), {0: PRIMARY})
    machines = [rec("a", 0, False), rec("b", 1), rec("c", 2), rec("d", 3)]
    done = settle(toy, machines)
    assert done.index(("step_down", "a")) < done.index(("demote", "a"))
    assert "a" not in voting(toy.cfg) and primary_id(toy) != 0 and voting(toy.cfg) == ["b", "c", "d"]
    assert_converged(toy, machines)
    new_primary = primary_id(toy)
    name = {1: "b", 2: "c", 3: "d"}[new_primary]
    machines = [rec("a", 0, False)] + [rec(x, i, x != name) for i, x in ((1, "b"), (2, "c"), (3, "d"))]
    assert settle(toy, machines) == []
    assert primary_id(toy) == new_primary and voting(toy.cfg) == ["b", "c", "d"]
    assert_converged(toy, machines)


def test_address_change_updates_only_that_member():
    """Juju AddressChange: b moves; its member keeps _id 1, one reconfig, no vote moves."""
    cfg = config([member(0, "a"), member(1, "b"), member(2, "c")], version=4)
    machines = [rec("a", 0), rec("b", 1, address="10.0.99.99:37017"), rec("c", 2)]
    steps = plan_steps(view(cfg, {0: PRIMARY}), machines)
    assert [(s.action, s.member_id) for s in steps] == [("update_address", 1)]
    after = {m["_id"]: m for m in steps[0].config["members"]}
    assert after[1]["host"] == "10.0.99.99:37017" and after[1]["votes"] == 1
    assert [after[i]["host"] for i in (0, 2)] == [addr(0), addr(2)] and steps[0].config["version"] == 5


def test_sets_members_then_adds_a_standby_then_swaps_the_primary_out():
    """Juju SetsAndUpdatesMembers, NEW flavour: the primary that stops wanting is stepped down before the swap."""
    toy = ToySet(config([member(0, "a")]), {0: PRIMARY})
    machines = [rec("a", 0), rec("b", 1), rec("c", 2)]
    assert settle(toy, machines) == [("add", "b"), ("promote", "b"), ("promote", "c")]
    machines.append(rec("d", 3, False))
    assert settle(toy, machines) == [("add", "d")]
    machines = [rec("a", 0, False), rec("b", 1), rec("c", 2), rec("d", 3)]
    done = settle(toy, machines)
    assert done.index(("step_down", "a")) < done.index(("demote", "a"))
    assert voting(toy.cfg) == ["b", "c", "d"]
    machines = machines[1:]
    settle(toy, machines)
    assert [m["_id"] for m in toy.cfg["members"]] == [1, 2, 3]
    assert_converged(toy, machines)


# --- §6.4 ensure-availability scenarios, continued through the peer group ----------------------------------------

def test_demotes_unavailable_then_promotes_the_returning_standby():
    """Juju OLD DemotesUnavailable + PromotesAvailable: a down voter is replaced; when it is back as a healthy
    standby and another voter dies, the standby is promoted before any new host is added."""
    cfg = config([member(0, "a"), member(1, "b"), member(2, "c")])
    records = [rec("a", 0), rec("b", 1), rec("c", 2)]
    plan = plan_availability(3, records, POOL, view(cfg, {0: DOWN, 1: PRIMARY}, {0: 600}), down_after=60)
    assert (plan.maintained, plan.added, plan.demoted) == (["b", "c"], ["d"], ["a"])
    toy = ToySet(cfg, {0: DOWN, 1: PRIMARY})
    settle(toy, plan.records_after)
    assert voting(toy.cfg) == ["b", "c", "d"]
    toy.states[0] = SECONDARY  # a comes back
    again = plan_availability(3, plan.records_after, POOL, toy.view(), down_after=60)
    assert not again.changed and again.demoted == again.added == again.promoted == []
    toy.states[3] = DOWN
    down = toy.view()
    for doc in down.status["members"]:
        if doc["_id"] == 3:
            doc["lastHeartbeatRecv"] = down.status["date"].replace(hour=11)
    grow = plan_availability(5, plan.records_after, POOL, down, down_after=60)
    assert (grow.demoted, grow.promoted, grow.added) == (["d"], ["a"], ["e", "f"])
    assert sorted(r.name for r in grow.records_after if r.wants_vote) == ["a", "b", "c", "e", "f"]


def test_lp1748275_bootstrap_machine_is_maintained_not_replaced():
    """Juju lp:1748275: right after bootstrap machine 0 looked unavailable and enable-ha replaced it."""
    cfg = config([member(0, "a")])
    plan = plan_availability(3, [], POOL, view(cfg, {0: PRIMARY}), down_after=0)
    assert (plan.maintained, plan.added, plan.demoted) == (["a"], ["b", "c"], [])
    toy = ToySet(cfg, {0: PRIMARY})
    settle(toy, plan.records_after)
    assert voting(toy.cfg) == ["a", "b", "c"]
    assert not plan_availability(3, plan.records_after, POOL, toy.view()).changed


def test_lp1384549_machine_still_joining_is_not_replaced():
    """Juju lp:1384549: a new machine that was still booting was demoted and replaced by yet another one."""
    records = [rec("a", 0), rec("b", 1), rec("c", 2)]
    cfg = config([member(0, "a"), member(1, "b", 0)])  # c not a member yet, b still syncing
    plan = plan_availability(3, records, POOL, view(cfg, {0: PRIMARY, 1: STARTUP2}), down_after=0)
    assert not plan.changed and plan.maintained == ["a", "b", "c"] and plan.demoted == []


# --- regressions named after what broke in Juju (§8) -------------------------------------------------------------

def test_pr8625_primary_never_loses_its_vote_in_a_reconfig():
    cfg = config([member(0, "a"), member(1, "b"), member(2, "c"), member(3, "d", 0), member(4, "e", 0)])
    machines = [rec("a", 0, False), rec("b", 1, False), rec("c", 2), rec("d", 3), rec("e", 4)]
    toy = ToySet(cfg, {0: PRIMARY})
    settle(toy, machines)  # asserts on every reconfig that the primary of the moment keeps votes and priority
    assert voting(toy.cfg) == ["c", "d", "e"]


def test_pr8660_lone_primary_swap_does_not_dead_spin():
    """N=2: a single voter wants out; the planner makes progress instead of retrying one refused reconfig."""
    toy = ToySet(config([member(0, "a"), member(1, "b", 0)]), {0: PRIMARY})
    machines = [rec("a", 0, False), rec("b", 1)]
    assert settle(toy, machines) == [("promote", "b"), ("step_down", "a"), ("demote", "a")]
    assert_converged(toy, machines)


def test_lp1765387_dying_non_voters_are_reaped():
    cfg = config([member(0, "a"), member(1, "b"), member(2, "c"), member(3, "gone", 0), member(4, "gone2", 0)])
    steps = plan_steps(view(cfg, {0: PRIMARY}), [rec("a", 0), rec("b", 1), rec("c", 2)])
    assert [(s.action, s.member_id) for s in steps] == [("remove", 3)]  # one batch of non-voter removals
    assert [m["_id"] for m in steps[0].config["members"]] == [0, 1, 2]


def test_pr8627_even_voter_count_is_repaired():
    toy = ToySet(config([member(0, "a"), member(1, "b"), member(2, "c", 0)]), {0: PRIMARY})
    machines = [rec("a", 0), rec("b", 1), rec("c", 2)]
    assert settle(toy, machines) == [("promote", "c")]
    toy = ToySet(config([member(i, x) for i, x in enumerate("abcd")]), {0: PRIMARY})
    machines = [rec(x, i) for i, x in enumerate("abcd")]
    done = settle(toy, machines)
    assert len(done) == 1 and done[0][0] == "demote" and done[0][1] != "a"
    assert len(voting(toy.cfg)) == 3


def test_pr13521_ids_are_never_reused_and_no_machine_is_added_and_removed():
    cfg = config([member(0, "a"), member(1, "b"), member(2, "c"), member(7, "old", 0)])
    machines = [rec("a", 0), rec("b", 1), rec("c", 2), rec("d", 3), rec("e", 4)]
    steps = plan_steps(view(cfg, {0: PRIMARY}), machines)
    ids = {m["_id"]: m["tags"][MACHINE_TAG] for s in steps for m in s.config["members"]}
    assert ids[8] == "d" and ids[9] == "e"
    for prev, step in zip([cfg] + [s.config for s in steps], steps):
        before = {m["host"]: m["_id"] for m in prev["members"]}
        after = {m["host"]: m["_id"] for m in step.config["members"]}
        assert all(before[h] == i for h, i in after.items() if h in before)


def test_pr13911_address_update_keeps_member_id_across_a_full_plan():
    cfg = config([member(0, "a"), member(1, "b"), member(2, "c")])
    machines = [rec("a", 0, address="10.9.9.1:37017"), rec("b", 1, address="10.9.9.2:37017"), rec("c", 2), rec("d", 3),
                rec("e", 4)]
    steps = plan_steps(view(cfg, {0: PRIMARY}), machines)
    final = {m["_id"]: m["host"] for m in steps[-1].config["members"]}
    assert final[0] == "10.9.9.1:37017" and final[1] == "10.9.9.2:37017" and final[2] == addr(2)


def test_pr14402_unwanted_machine_stays_a_member_while_recorded():
    """A machine that gave up its vote keeps its member (a standby) until its record goes: removal never races
    the vote change."""
    cfg = config([member(0, "a"), member(1, "b"), member(2, "c"), member(3, "d"), member(4, "e")])
    machines = [rec("a", 0), rec("b", 1), rec("c", 2), rec("d", 3, False), rec("e", 4, False)]
    toy = ToySet(cfg, {0: PRIMARY})
    settle(toy, machines)
    assert sorted(m["_id"] for m in toy.cfg["members"]) == [0, 1, 2, 3, 4] and voting(toy.cfg) == ["a", "b", "c"]


def test_juju21355_majority_loss_plans_nothing_and_reports_why():
    cfg = config([member(0, "a"), member(1, "b"), member(2, "c")])
    machines = [rec("a", 0), rec("b", 1), rec("c", 2)]
    lost = view(cfg, {0: DOWN, 1: DOWN, 2: SECONDARY}, {0: 600, 1: 600})
    assert plan_steps(lost, machines, assume_ready=False) == []
    ok, reasons = convergence_report(lost, machines)
    assert not ok and any("PRIMARY" in r for r in reasons)
    plan = plan_availability(3, machines, POOL, lost)
    assert plan.error and "a, b" in plan.error and not plan.changed


def test_juju36_never_zero_voters_even_without_a_visible_primary():
    """Juju 3.6 could compute zero voters when nobody wanted a vote and no primary was visible."""
    cfg = config([member(0, "a"), member(1, "b"), member(2, "c")])
    machines = [rec("a", 0, False), rec("b", 1, False), rec("c", 2, False)]
    desired = desired_peer_group(machines, view(cfg, {0: SECONDARY, 1: SECONDARY, 2: SECONDARY}))
    assert desired.voters and len(desired.voters) % 2 == 1


def test_voting_member_of_a_gone_machine_hands_its_vote_over():
    """Every voter belongs to a machine that is gone and the remaining machine wants the vote: it is voted in, the
    old primary steps down and is removed; the set never has zero voters. (With no record wanting a vote, a
    healthy voter whose record is gone keeps its vote: issue 12.)"""
    toy = ToySet(config([member(0, "a", 0), member(1, "gone")]), {1: PRIMARY, 0: SECONDARY})
    machines = [rec("a", 0)]
    assert settle(toy, machines) == [("promote", "a"), ("step_down", "gone"), ("remove", "gone")]
    assert [m["_id"] for m in toy.cfg["members"]] == [0] and validate_config(toy.cfg) == []


# --- §6.2 rows about losing votes: the goal (desired_peer_group) and whether the primary must step down first ------

LOSING_VOTES = [
    # about, wants (a, b, c), primary, goal voters, step_down_primary
    ("all leave: current voters keep their votes (never zero)", (False, False, False), 2, ["a", "b", "c"], False),
    # Issue 12: Juju cut these healthy sets to 1 voter; the floor of 3 keeps every healthy voter's vote instead.
    ("two lose vote: the floor keeps them", (False, True, False), 1, ["a", "b", "c"], False),
    ("one loses vote: no parity cut of a working voter", (True, True, False), 0, ["a", "b", "c"], False),
    ("primary wants out, no replacement: kept", (False, True, True), 0, ["a", "b", "c"], False),
    ("three voters, secondary leaves: kept", (True, True, False), 2, ["a", "b", "c"], False),
]


@pytest.mark.parametrize("about,wants,primary,goal,step_down", LOSING_VOTES, ids=[r[0] for r in LOSING_VOTES])
def test_losing_votes(about, wants, primary, goal, step_down):
    cfg = config([member(0, "a"), member(1, "b"), member(2, "c")])
    machines = [rec(x, i, w) for i, (x, w) in enumerate(zip("abc", wants))]
    v = view(cfg, {primary: PRIMARY})
    desired = desired_peer_group(machines, v)
    assert desired.voters == goal and desired.step_down_primary is step_down
    assert [m.id for m in desired.members] == [0, 1, 2]  # unwanted voters stay as non-voting standbys
    toy = ToySet(cfg, {primary: PRIMARY})
    settle(toy, machines)
    assert voting(toy.cfg) == goal
    assert_converged(toy, machines)
