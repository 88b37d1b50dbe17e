"""The desired peer group and its safe steps.

Tables adapted from Juju's desired_test.go (juju-peergrouper.md §6.2) and its worker scenarios (§6.3): "now" is what
the convergence loop reaches on the set as it is (new members not yet ready), "goal" what it reaches once they are.
Where Juju's behaviour was a known problem (§8), the test is named after it and asserts the fix.
"""

from __future__ import annotations

import pytest
from ansible_collections.stateserver.ha.plugins.module_utils._model import MACHINE_TAG
from ansible_collections.stateserver.ha.plugins.module_utils._peergroup import (
    PeerGroupError,
    convergence_report,
    desired_peer_group,
    plan_steps,
)
from ansible_collections.stateserver.ha.plugins.module_utils._rules import validate_reconfig
from fixtures import DOWN, PRIMARY, STARTUP2, ToySet, addr, config, member, rec, view, voting


def reach_now(cfg, states, machines):
    """Apply every step that is valid without waiting for any member to become ready; return the final config."""
    toy = ToySet(cfg, states)
    for _attempt in range(50):
        steps = plan_steps(toy.view(), machines, assume_ready=False)
        if not steps:
            return toy.cfg
        before = toy.cfg
        toy.apply(steps[0])
        if steps[0].config is not None:
            assert validate_reconfig(before, toy.cfg) == []
    raise AssertionError("the planner did not settle")


S = 2  # SECONDARY

TABLE = [
    # about, machines, members, states, expected voters now
    ("one controller, one more proposed", [rec("a", 0), rec("b", 1)], [member(0, "a")], {0: PRIMARY}, ["a"]),
    ("one controller, two more proposed", [rec("a", 0), rec("b", 1), rec("c", 2)], [member(0, "a")], {0: PRIMARY},
     ["a"]),
    ("single, no change", [rec("a", 0)], [member(0, "a")], {0: PRIMARY}, ["a"]),
    ("one ready: no add, parity", [rec("a", 0), rec("b", 1)], [member(0, "a"), member(1, "b", 0)], {0: PRIMARY},
     ["a"]),
    ("two ready: both added", [rec("a", 0), rec("b", 1), rec("c", 2)],
     [member(0, "a"), member(1, "b", 0), member(2, "c", 0)], {0: PRIMARY}, ["a", "b", "c"]),
    ("two ready, one unhealthy", [rec("a", 0), rec("b", 1), rec("c", 2)],
     [member(0, "a"), member(1, "b", 0), member(2, "c", 0)], {0: PRIMARY, 2: DOWN}, ["a"]),
    ("three ready: two added", [rec(x, i) for i, x in enumerate("abcd")],
     [member(0, "a")] + [member(i, x, 0) for i, x in enumerate("bcd", 1)], {0: PRIMARY}, ["a", "b", "c"]),
    ("lone voter wants out: kept", [rec("a", 0, False)], [member(0, "a")], {0: PRIMARY}, ["a"]),
    # Issue 12: Juju's parity cut took the set to 1 voter here; a healthy voter now keeps its vote (the floor of 3).
    ("one loses vote: the floor of 3 keeps it", [rec("a", 0), rec("b", 1), rec("c", 2, False)],
     [member(0, "a"), member(1, "b"), member(2, "c")], {1: PRIMARY}, ["a", "b", "c"]),
    ("candidate takes the vote", [rec("a", 0), rec("b", 1), rec("c", 2, False), rec("d", 3)],
     [member(0, "a"), member(1, "b"), member(2, "c"), member(3, "d", 0)], {0: PRIMARY}, ["a", "b", "d"]),
    ("several candidates", [rec(x, i, x in "abfgh") for i, x in enumerate("abcdefgh")],
     [member(i, x, 1 if i < 5 else 0) for i, x in enumerate("abcdefgh")], {0: PRIMARY}, ["a", "b", "f", "g", "h"]),
    ("add a non-voting machine", [rec("a", 0), rec("b", 1), rec("c", 2), rec("d", 3, False)],
     [member(0, "a"), member(1, "b"), member(2, "c")], {2: PRIMARY}, ["a", "b", "c"]),
    ("two voters, secondary first", [rec("a", 0), rec("b", 1)], [member(0, "a"), member(1, "b")], {1: PRIMARY},
     ["b"]),
    ("two voters, secondary second", [rec("a", 0), rec("b", 1)], [member(0, "a"), member(1, "b")], {0: PRIMARY},
     ["a"]),
]


@pytest.mark.parametrize("about,machines,members,states,expected", TABLE, ids=[t[0] for t in TABLE])
def test_desired_now(about, machines, members, states, expected):
    final = reach_now(config(members), states, machines)
    assert voting(final) == expected
    assert len(voting(final)) % 2 == 1


def test_foreign_voting_member_is_refused():
    cfg = config([member(0, "a"), dict(member(1), host="10.9.9.9:37017")])
    with pytest.raises(PeerGroupError, match="not a state machine"):
        desired_peer_group([rec("a", 0)], view(cfg, {0: PRIMARY}))


def test_foreign_non_voting_member_is_removed():
    cfg = config([member(0, "a"), member(1, None, 0)])
    final = reach_now(cfg, {0: PRIMARY}, [rec("a", 0)])
    assert [m["_id"] for m in final["members"]] == [0]


def test_members_of_gone_machines_are_removed():
    cfg = config([member(0, "a"), member(1, "b", 0), member(2, "c", 0)])
    final = reach_now(cfg, {0: PRIMARY}, [rec("a", 0)])
    assert [m["_id"] for m in final["members"]] == [0]


def test_gone_voter_removed_and_parity_kept():
    """Juju 'controller Dead -> removed': 3 voters, one machine gone (record and mongod) -> 1 voter + 1 standby,
    never 2 voters."""
    cfg = config([member(0, "a"), member(1, "b"), member(2, "c")])
    final = reach_now(cfg, {0: PRIMARY, 2: DOWN}, [rec("a", 0), rec("b", 1)])
    assert voting(final) == ["a"] and [m["_id"] for m in final["members"]] == [0, 1]


def test_address_change_keeps_the_member_id():
    cfg = config([member(0, "a"), member(1, "b"), member(2, "c")])
    machines = [rec("a", 0), rec("b", 1), rec("c", 2, address="10.0.1.99:37017")]
    final = reach_now(cfg, {0: PRIMARY}, machines)
    assert {m["_id"]: m["host"] for m in final["members"]}[2] == "10.0.1.99:37017"
    assert voting(final) == ["a", "b", "c"]


def test_empty_address_is_ignored():
    cfg = config([member(0, "a"), member(1, "b"), member(2, "c")])
    machines = [rec("a", 0), rec("b", 1), rec("c", 2, address="")]
    assert plan_steps(view(cfg, {0: PRIMARY}), machines) == []


def test_ids_are_never_reused():
    cfg = config([member(0, "a"), member(5, "x", 0)])
    desired = desired_peer_group([rec("a", 0), rec("b", 1)], view(cfg, {0: PRIMARY}))
    assert [m.id for m in desired.members] == [0, 6]


def test_removing_the_primary_steps_it_down_first():
    """Juju lp:1766571 / PR 8625: a config that strips the primary's vote wedged the worker."""
    cfg = config([member(0, "a"), member(1, "b"), member(2, "c"), member(3, "d", 0)])
    machines = [rec("a", 0, False), rec("b", 1), rec("c", 2), rec("d", 3)]
    steps = plan_steps(view(cfg, {0: PRIMARY}), machines)
    actions = [(s.action, s.machine) for s in steps]
    assert actions.index(("step_down", "a")) < actions.index(("demote", "a"))
    assert desired_peer_group(machines, view(cfg, {0: PRIMARY})).step_down_primary


def test_lone_primary_hands_over_through_two_voters():
    """Juju's "N=2" dance: one voter that wants out, a ready candidate: add, step down, then unvote."""
    cfg = config([member(0, "a"), member(1, "b", 0)])
    toy = ToySet(cfg, {0: PRIMARY, 1: 2})
    machines = [rec("a", 0, False), rec("b", 1)]
    seen = []
    for _attempt in range(10):
        steps = plan_steps(toy.view(), machines, assume_ready=False)
        if not steps:
            break
        seen.append(steps[0].action)
        toy.apply(steps[0])
    assert seen == ["promote", "step_down", "demote"]
    assert voting(toy.cfg) == ["b"] and toy.states[1] == PRIMARY


def test_down_voter_is_replaced_without_losing_majority():
    """Repair: c is down and no longer wanted, d replaces it. c goes first (a down voter costs nothing)."""
    cfg = config([member(0, "a"), member(1, "b"), member(2, "c")])
    machines = [rec("a", 0), rec("b", 1), rec("c", 2, False), rec("d", 3)]
    toy = ToySet(cfg, {0: PRIMARY, 2: DOWN})
    steps = plan_steps(toy.view(), machines, assume_ready=False)
    assert [s.action for s in steps] == ["demote"]  # d joins non-voting in the same reconfig, then must sync
    toy.apply(steps[0])
    assert toy.states[3] == STARTUP2 and voting(toy.cfg) == ["a", "b"]
    assert plan_steps(toy.view(), machines, assume_ready=False) == []  # not ready yet: nothing to do
    toy.sync()
    steps = plan_steps(toy.view(), machines, assume_ready=False)
    assert [s.action for s in steps] == ["promote"]
    toy.apply(steps[0])
    assert voting(toy.cfg) == ["a", "b", "d"]


def test_no_step_that_would_lose_the_voting_majority():
    cfg = config([member(0, "a"), member(1, "b"), member(2, "c")])
    machines = [rec("a", 0), rec("b", 1), rec("c", 2, False)]
    # Only a and c up: demoting the healthy c would leave a + down b, without a majority.
    steps = plan_steps(view(cfg, {0: PRIMARY, 1: DOWN}), machines, assume_ready=False)
    for step in steps:
        if step.config:
            up = {0, 2}
            voters = {m["_id"] for m in step.config["members"] if m["votes"]}
            assert len(voters & up) >= len(voters) // 2 + 1


@pytest.mark.parametrize("start,grow_to,expected_steps", [(1, 3, 3), (3, 5, 3), (5, 7, 3), (1, 7, 7)])
def test_growth_uses_the_minimum_number_of_reconfigs(start, grow_to, expected_steps):
    """One reconfig adds every new member non-voting, then one promotion per new voter (MongoDB's minimum)."""
    names = "abcdefg"
    cfg = config([member(i, names[i]) for i in range(start)])
    machines = [rec(names[i], i) for i in range(grow_to)]
    steps = plan_steps(view(cfg, {0: PRIMARY}), machines)
    assert len(steps) == expected_steps
    assert [s.action for s in steps] == ["add"] + ["promote"] * (grow_to - start)
    assert voting(steps[-1].config) == list(names[:grow_to])


def test_versions_increase_by_one_per_step():
    cfg = config([member(0, "a")], version=7)
    steps = plan_steps(view(cfg, {0: PRIMARY}), [rec(x, i) for i, x in enumerate("abc")])
    assert [s.config["version"] for s in steps] == [8, 9, 10]


def test_new_members_are_tagged_with_their_machine():
    cfg = config([member(0, "a")])
    steps = plan_steps(view(cfg, {0: PRIMARY}), [rec("a", 0), rec("b", 1), rec("c", 2)])
    added = {m["host"]: m for m in steps[0].config["members"]}
    assert added[addr(1)]["tags"] == {MACHINE_TAG: "b"} and added[addr(1)]["votes"] == 0
    assert added[addr(1)]["priority"] == 0


def test_converged_report():
    cfg = config([member(0, "a"), member(1, "b"), member(2, "c")])
    machines = [rec("a", 0), rec("b", 1), rec("c", 2)]
    assert convergence_report(view(cfg, {0: PRIMARY}), machines) == (True, [])
    ok, reasons = convergence_report(view(cfg, {0: PRIMARY, 2: DOWN}), machines)
    assert not ok and any("c" in r for r in reasons)
    ok, reasons = convergence_report(view(cfg, {0: PRIMARY}), machines + [rec("d", 3), rec("e", 4)])
    assert not ok and any("not a member" in r for r in reasons)


def test_down_standby_does_not_block_convergence():
    cfg = config([member(0, "a"), member(1, "b"), member(2, "c", 0), member(3, "d")])
    machines = [rec("a", 0), rec("b", 1), rec("c", 2, False), rec("d", 3)]
    assert convergence_report(view(cfg, {0: PRIMARY, 2: DOWN}), machines) == (True, [])


def test_worker_scenario_sets_and_updates_members():
    """Juju SetsAndUpdatesMembers: 1 -> 3 voters; a non-voting machine joins; the primary swaps its vote out."""
    toy = ToySet(config([member(0, "a")]), {0: PRIMARY})
    machines = [rec("a", 0), rec("b", 1), rec("c", 2)]

    def settle(machines):
        for _attempt in range(30):
            steps = plan_steps(toy.view(), machines, assume_ready=False)
            if not steps:
                toy.sync()
                steps = plan_steps(toy.view(), machines, assume_ready=False)
                if not steps:
                    return
            toy.apply(steps[0])
        raise AssertionError("did not settle")

    settle(machines)
    assert voting(toy.cfg) == ["a", "b", "c"]
    machines.append(rec("d", 3, False))
    settle(machines)
    assert voting(toy.cfg) == ["a", "b", "c"] and len(toy.cfg["members"]) == 4
    machines = [rec("a", 0, False), rec("b", 1), rec("c", 2), rec("d", 3)]
    settle(machines)
    assert voting(toy.cfg) == ["b", "c", "d"] and toy.states[0] != PRIMARY
    assert convergence_report(toy.view(), machines) == (True, [])


def test_converged_needs_matching_config_version_and_term_and_no_newly_added():
    cfg = config([member(0, "a"), member(1, "b"), member(2, "c"), member(3, "d", 0)], version=3)
    machines = [rec("a", 0), rec("b", 1), rec("c", 2), rec("d", 3, False)]
    v = view(cfg, {0: PRIMARY})
    assert convergence_report(v, machines) == (True, [])
    v.status["members"][3]["configVersion"] = 2  # the standby has not installed version 3 yet
    ok, reasons = convergence_report(v, machines)
    assert not ok and any("standby d" in r for r in reasons)
    v.status["members"][3]["configVersion"] = 3
    v.status["members"][1]["configTerm"] = 0
    assert not convergence_report(v, machines)[0]
    v.status["members"][1]["configTerm"] = -1  # kept the force reconfig's term: mongod compares versions only
    assert convergence_report(v, machines) == (True, [])
    v.status["members"][1]["configVersion"] = 2
    assert not convergence_report(v, machines)[0]
    v.status["members"][1]["configVersion"] = 3
    v.status["members"][1]["configTerm"] = 1
    cfg["members"][2]["newlyAdded"] = True
    ok, reasons = convergence_report(v, machines)
    assert not ok and any("newlyAdded" in r for r in reasons)


def test_converged_needs_exactly_one_primary():
    cfg = config([member(0, "a"), member(1, "b"), member(2, "c")])
    machines = [rec("a", 0), rec("b", 1), rec("c", 2)]
    ok, reasons = convergence_report(view(cfg, {}), machines)
    assert not ok and any("exactly one PRIMARY" in r for r in reasons)
    ok, reasons = convergence_report(view(cfg, {0: PRIMARY, 1: PRIMARY}), machines)
    assert not ok and any("exactly one PRIMARY" in r for r in reasons)


def test_planned_configs_never_carry_the_server_owned_newly_added_flag():
    cfg = config([member(0, "a"), member(1, "b"), dict(member(2, "c"), newlyAdded=True)])
    machines = [rec("a", 0), rec("b", 1), rec("c", 2), rec("d", 3, False)]
    steps = plan_steps(view(cfg, {0: PRIMARY}), machines)
    assert steps and all("newlyAdded" not in m for s in steps for m in s.config["members"])
    assert validate_reconfig(cfg, steps[0].config) == []


def test_no_records_is_refused():
    """Planning against an empty stateserver.machines would remove every member: refuse, and say what to run."""
    v = view(config([member(0, "a")]), {0: PRIMARY})
    with pytest.raises(PeerGroupError, match="ensure_availability"):
        plan_steps(v, [])
    assert convergence_report(v, [])[0] is False


def test_never_eight_voters_when_replacing_at_the_cap():
    """Found by hypothesis: at 7 voters, replacing the (gone) primary promoted the newcomer first -> 8 voters."""
    cfg = config([member(i, f"m{i}") for i in range(7)])
    machines = [rec(f"m{i}", i) for i in range(1, 7)] + [rec("n", 7)]
    steps = plan_steps(view(cfg, {0: PRIMARY}), machines)
    actions = [(s.action, s.machine) for s in steps]
    assert actions[0] == ("step_down", "m0") and actions.index(("remove", "m0")) < actions.index(("promote", "n"))
    assert all(sum(m["votes"] for m in s.config["members"]) <= 7 for s in steps if s.config)


# -- the safety floor (issue 12): records that say too little never shrink a healthy set ----------------------------

FLOOR = [
    # about, records, current members, states, goal voters
    ("wants_vote false on one voter", [rec("a", 0), rec("b", 1), rec("c", 2, False)],
     [member(0, "a"), member(1, "b"), member(2, "c")], {0: PRIMARY}, ["a", "b", "c"]),
    ("records of 2 of 3 voters deleted", [rec("a", 0)],
     [member(0, "a"), member(1, "b"), member(2, "c")], {0: PRIMARY}, ["a", "b", "c"]),
    ("every record deleted but one that wants no vote", [rec("a", 0, False)],
     [member(0, "a"), member(1, "b"), member(2, "c")], {1: PRIMARY}, ["a", "b", "c"]),
    ("records of 2 of 5 voters deleted", [rec("a", 0), rec("b", 1), rec("c", 2)],
     [member(i, x) for i, x in enumerate("abcde")], {0: PRIMARY}, ["a", "b", "c"]),
    ("deleted record of a down voter: removed", [rec("a", 0), rec("b", 1)],
     [member(0, "a"), member(1, "b"), member(2, "c")], {0: PRIMARY, 2: DOWN}, ["a"]),
    ("4 wanted voters and an unwanted healthy one: 5, not 3", [rec(x, i) for i, x in enumerate("abcd")] + [rec("e", 4, False)],
     [member(i, x) for i, x in enumerate("abcde")], {0: PRIMARY}, ["a", "b", "c", "d", "e"]),
]


@pytest.mark.parametrize("about,machines,members,states,goal", FLOOR, ids=[t[0] for t in FLOOR])
def test_the_floor_keeps_healthy_voters(about, machines, members, states, goal):
    v = view(config(members), states)
    assert desired_peer_group(machines, v).voters == goal
    toy = ToySet(config(members), states)
    for _attempt in range(20):
        steps = plan_steps(toy.view(), machines, assume_ready=False)
        if not steps:
            break
        toy.apply(steps[0])
    assert voting(toy.cfg) == goal


def test_a_voter_swap_promotes_the_replacement_before_any_healthy_demotion():
    """Juju demoted b and c first and held a 1-voter set while d and e synced; now the count never drops below 3."""
    toy = ToySet(config([member(0, "a"), member(1, "b"), member(2, "c")]), {0: PRIMARY})
    machines = [rec("a", 0), rec("b", 1, False), rec("c", 2, False), rec("d", 3), rec("e", 4)]
    done = []
    for _attempt in range(20):
        steps = plan_steps(toy.view(), machines, assume_ready=False)
        if not steps:
            toy.sync()
            steps = plan_steps(toy.view(), machines, assume_ready=False)
            if not steps:
                break
        toy.apply(steps[0])
        done.append((steps[0].action, steps[0].machine))
        assert len(voting(toy.cfg)) >= 3
    assert done == [("add", "d"), ("promote", "d"), ("demote", "b"), ("promote", "e"), ("demote", "c")]
    assert voting(toy.cfg) == ["a", "d", "e"]
