"""Retiring state machines (issue 13): ensure_availability's retire/replace_with plan and the steps peergroup takes."""

from __future__ import annotations

import pytest
from ansible_collections.stateserver.ha.plugins.module_utils._availability import PoolHost, plan_availability
from ansible_collections.stateserver.ha.plugins.module_utils._peergroup import plan_steps
from fixtures import DOWN, PRIMARY, ToySet, addr, config, member, rec, view, voting

POOL = [PoolHost(x, addr(i), f"10.0.0.{i}:17070") for i, x in enumerate("abcdefg")]
RECORDS3 = [rec("a", 0), rec("b", 1), rec("c", 2)]


def three(states=None, down_since=None):
    return view(config([member(0, "a"), member(1, "b"), member(2, "c")], version=5), states or {0: PRIMARY},
                down_since)


def wants(plan) -> dict:
    return {r.name: r.wants_vote for r in plan.records_after}


def test_retiring_a_voter_records_the_next_spare_in_its_place():
    plan = plan_availability(3, RECORDS3, POOL, three(), retire=["a"])
    assert not plan.error and plan.changed
    assert plan.retiring == ["a"] and plan.added == ["d"] and plan.maintained == ["b", "c"] and plan.target == 3
    assert wants(plan) == {"a": False, "b": True, "c": True, "d": True}
    assert plan.messages == ["maintaining machines: b, c", "adding machines: d", "retiring machines: a"]


def test_replace_with_names_the_spare():
    plan = plan_availability(3, RECORDS3, POOL, three(), retire=["b"], replace_with="f")
    assert not plan.error and plan.added == ["f"] and wants(plan)["b"] is False


def test_a_recorded_standby_named_as_replacement_is_promoted():
    records = RECORDS3 + [rec("d", 3, False)]
    cfg = config([member(0, "a"), member(1, "b"), member(2, "c"), member(3, "d", 0)])
    plan = plan_availability(3, records, POOL, view(cfg, {0: PRIMARY}), retire=["c"], replace_with="d")
    assert not plan.error and plan.promoted == ["d"] and plan.added == [] and wants(plan)["c"] is False


def test_a_rerun_does_not_undo_the_retirement():
    plan = plan_availability(3, RECORDS3, POOL, three(), retire=["a"])
    again = plan_availability(3, plan.records_after, POOL, three())
    assert not again.error and not again.changed and wants(again)["a"] is False and again.promoted == []


def test_the_record_goes_once_the_member_no_longer_votes_and_a_rerun_is_a_no_op():
    records = [rec("a", 0, False), rec("b", 1), rec("c", 2), rec("d", 3)]
    cfg = config([member(0, "a", 0), member(1, "b"), member(2, "c"), member(3, "d")])
    plan = plan_availability(3, records, POOL, view(cfg, {1: PRIMARY}), retire=["a"])
    assert not plan.error and plan.removed == ["a"] and plan.added == [] and plan.changed
    assert sorted(wants(plan)) == ["b", "c", "d"]
    gone = config([member(1, "b"), member(2, "c"), member(3, "d")])
    again = plan_availability(3, plan.records_after, POOL, view(gone, {1: PRIMARY}), retire=["a"])
    assert not again.error and not again.changed and again.retired == ["a"]
    assert "machine a is already retired (no record, not a member)" in again.messages


def test_retiring_two_of_five_with_n_3_needs_no_spare():
    records = RECORDS3 + [rec("d", 3), rec("e", 4)]
    cfg = config([member(i, x) for i, x in enumerate("abcde")])
    plan = plan_availability(3, records, POOL[:5], view(cfg, {0: PRIMARY}), retire=["d", "e"])
    assert not plan.error and plan.added == [] and plan.target == 3 and plan.retiring == ["d", "e"]


def test_retiring_one_of_five_keeps_the_count_odd_with_a_spare():
    records = RECORDS3 + [rec("d", 3), rec("e", 4)]
    cfg = config([member(i, x) for i, x in enumerate("abcde")])
    plan = plan_availability(3, records, POOL, view(cfg, {0: PRIMARY}), retire=["e"])
    assert not plan.error and plan.added == ["f"] and plan.target == 5


@pytest.mark.parametrize(("about", "kwargs", "pool", "words"), [
    ("no spare", {"retire": ["a"]}, POOL[:3], ["1 more spare host", "add them to state_machines"]),
    ("unknown name", {"retire": ["zz"]}, POOL, ["unknown machine 'zz'", "a, b, c"]),
    ("replace_with not in the pool", {"retire": ["a"], "replace_with": "zz"}, POOL, ["'zz' is not a host"]),
    ("replace_with is a voter", {"retire": ["a"], "replace_with": "b"}, POOL, ["already wants a vote"]),
    ("replace_with is the retiree", {"retire": ["a"], "replace_with": "a"}, POOL, ["being retired"]),
    ("replace_with without retire", {"replace_with": "d"}, POOL, ["retire is empty"]),
    ("two of three at once", {"retire": ["a", "b"]}, POOL, ["one at a time", "first a, then b"]),
])
def test_refusals_change_nothing_and_say_what_to_do(about, kwargs, pool, words):
    plan = plan_availability(3, RECORDS3, pool, three(), **kwargs)
    assert plan.error, about
    assert all(w in plan.error for w in words), plan.error
    assert "nothing was changed" in plan.error and not plan.changed and plan.records_after == []


def test_replace_with_unreachable_is_refused():
    pool = POOL[:3] + [PoolHost("d", addr(3), "10.0.0.3:17070", reachable=False)]
    plan = plan_availability(3, RECORDS3, pool, three(), retire=["a"], replace_with="d")
    assert plan.error and "not reachable" in plan.error


def test_retiring_while_another_voter_is_down_is_refused():
    plan = plan_availability(3, RECORDS3, POOL, three({0: PRIMARY, 2: DOWN}, {2: 10}), retire=["b"])
    assert plan.error and "while c is down" in plan.error and "bring c back" in plan.error


def test_retiring_the_down_voter_itself_is_allowed():
    plan = plan_availability(3, RECORDS3, POOL, three({0: PRIMARY, 2: DOWN}, {2: 10}), retire=["c"])
    assert not plan.error and plan.retiring == ["c"] and plan.added == ["d"]


def test_retiring_while_a_majority_is_down_is_refused():
    plan = plan_availability(3, RECORDS3, POOL, three({0: DOWN, 1: 2, 2: DOWN}, {0: 300, 2: 300}), retire=["a"])
    assert plan.error and "majority" in plan.error and not plan.changed
    assert "recover-majority-loss.yml -e confirm=" in plan.error


def test_retiring_before_any_set_exists_is_refused():
    plan = plan_availability(3, [], POOL, view(None), retire=["a"])
    assert plan.error and "no machine to retire" in plan.error


def run_loop(toy, machines, done, check=None):
    for _attempt in range(30):
        steps = plan_steps(toy.view(), machines, assume_ready=False)
        if not steps:
            toy.sync()
            steps = plan_steps(toy.view(), machines, assume_ready=False)
            if not steps:
                return
        toy.apply(steps[0])
        done.append((steps[0].action, steps[0].machine))
        if check:
            check(toy)
    raise AssertionError("the planner did not settle")


def test_retiring_the_primary_promotes_the_spare_then_steps_down_once_then_removes():
    toy = ToySet(config([member(0, "a"), member(1, "b"), member(2, "c")]), {0: PRIMARY})
    first = plan_availability(3, RECORDS3, POOL, toy.view(), retire=["a"])
    done = []

    def never_fewer_than_three(t):
        assert len(voting(t.cfg)) >= 3

    run_loop(toy, first.records_after, done, never_fewer_than_three)
    assert done == [("add", "d"), ("promote", "d"), ("step_down", "a"), ("demote", "a")]
    second = plan_availability(3, first.records_after, POOL, toy.view(), retire=["a"])
    assert second.removed == ["a"]
    run_loop(toy, second.records_after, done, never_fewer_than_three)
    assert done[-1] == ("remove", "a")
    assert voting(toy.cfg) == ["b", "c", "d"] and [m["_id"] for m in toy.cfg["members"]] == [1, 2, 3]
    assert not plan_availability(3, second.records_after, POOL, toy.view(), retire=["a"]).changed
