"""ensure-availability planning (juju-peergrouper.md §5 and §6.4, with the §8 problems fixed)."""

from __future__ import annotations

import pytest
from ansible_collections.stateserver.ha.plugins.module_utils._availability import PoolHost, plan_availability
from fixtures import DOWN, PRIMARY, STARTUP2, addr, config, member, rec, view

POOL = [PoolHost(x, f"10.0.0.{i}:37017", f"10.0.0.{i}:17070") for i, x in enumerate("abcdefg")]


def three():
    return config([member(0, "a"), member(1, "b"), member(2, "c")], version=5)


RECORDS3 = [rec("a", 0), rec("b", 1), rec("c", 2)]


@pytest.mark.parametrize("n", [0, 1, 2, 4, 6, 8, 9, -1, "abc", 3.5])
def test_bad_count_is_refused(n):
    plan = plan_availability(n, RECORDS3, POOL, view(three(), {0: PRIMARY}))
    assert plan.error and "3, 5 or 7" in plan.error and not plan.changed and not plan.added


def test_first_deployment_bootstraps_the_first_pool_host_and_records_nothing():
    plan = plan_availability(3, [], POOL, view(None))
    assert plan.bootstrap == "a" and plan.added == [] and plan.changed and plan.records_after == []
    assert plan.messages == ["bootstrapping machine: a"]


def test_bootstrap_skips_unreachable_hosts():
    pool = [PoolHost("a", "x:1", "x:2", reachable=False)] + POOL[1:]
    plan = plan_availability(3, [], pool, view(None))
    assert plan.bootstrap == "b" and plan.added == []


def test_bootstrap_with_too_few_hosts_says_how_many_more():
    plan = plan_availability(5, [], POOL[:3], view(None))
    assert plan.error and "2 more" in plan.error


def test_bootstrapped_member_is_adopted_and_grown():
    """MockBootstrap (lp:1748275): the machine that bootstrapped is maintained, never replaced."""
    plan = plan_availability(3, [], POOL, view(config([member(0, "a")]), {0: PRIMARY}))
    assert plan.maintained == ["a"] and plan.added == ["b", "c"] and not plan.error


def test_nothing_to_do_is_not_changed():
    plan = plan_availability(3, RECORDS3, POOL, view(three(), {0: PRIMARY}))
    assert not plan.changed and plan.maintained == ["a", "b", "c"] and plan.messages == ["maintaining machines: a, b, c"]


def test_grow_to_five_adds_two_spares_in_inventory_order():
    plan = plan_availability(5, RECORDS3, POOL, view(three(), {0: PRIMARY}))
    assert plan.added == ["d", "e"] and plan.target == 5 and plan.changed
    assert [r.name for r in plan.records_after if r.wants_vote] == ["a", "b", "c", "d", "e"]


def test_never_shrinks():
    records = RECORDS3 + [rec("d", 3), rec("e", 4)]
    cfg = config([member(i, x) for i, x in enumerate("abcde")])
    plan = plan_availability(3, records, POOL, view(cfg, {0: PRIMARY}))
    assert not plan.changed and not plan.error and "never reduces" in plan.messages[0]
    assert plan.records_after == records


def test_voter_down_longer_than_down_after_is_replaced():
    plan = plan_availability(3, RECORDS3, POOL, view(three(), {0: PRIMARY, 2: DOWN}, {2: 120}), down_after=60)
    assert plan.demoted == ["c"] and plan.added == ["d"] and plan.maintained == ["a", "b"]
    assert plan.messages == ["maintaining machines: a, b", "adding machines: d", "demoting machines: c"]
    after = {r.name: r.wants_vote for r in plan.records_after}
    assert after == {"a": True, "b": True, "c": False, "d": True}


def test_voter_down_briefly_is_kept():
    plan = plan_availability(3, RECORDS3, POOL, view(three(), {0: PRIMARY, 2: DOWN}, {2: 10}), down_after=60)
    assert plan.demoted == [] and not plan.changed


@pytest.mark.parametrize("state", [0, 3, STARTUP2], ids=["STARTUP", "RECOVERING", "STARTUP2"])
def test_starting_or_syncing_member_is_never_demoted(state):
    """Juju lp:1384549: a machine still booting was taken for dead and replaced."""
    plan = plan_availability(3, RECORDS3, POOL, view(three(), {0: PRIMARY, 2: state}), down_after=0)
    assert plan.demoted == [] and not plan.changed


def test_down_voter_replaced_by_recorded_standby_first():
    records = RECORDS3 + [rec("d", 3, False)]
    cfg = config([member(0, "a"), member(1, "b"), member(2, "c"), member(3, "d", 0)])
    plan = plan_availability(3, records, POOL, view(cfg, {0: PRIMARY, 2: DOWN}, {2: 300}))
    assert plan.promoted == ["d"] and plan.added == [] and plan.demoted == ["c"]


def test_majority_down_fails_and_names_the_machines():
    plan = plan_availability(3, RECORDS3, POOL, view(three(), {0: DOWN, 1: 2, 2: DOWN}, {0: 300, 2: 300}))
    assert plan.error and "a, c" in plan.error and "majority" in plan.error
    assert not plan.changed and plan.records_after == []


def test_too_few_spares_says_how_many_more():
    plan = plan_availability(7, RECORDS3, POOL[:5], view(three(), {0: PRIMARY}))
    assert plan.error and "add 2 more" in plan.error and not plan.changed


def test_replanning_the_result_is_a_no_op():
    plan = plan_availability(5, RECORDS3, POOL, view(three(), {0: PRIMARY}))
    again = plan_availability(5, plan.records_after, POOL, view(three(), {0: PRIMARY}))
    assert not again.changed and again.added == []


# -- repairs of addresses the inventory changed (issue 12) ---------------------------------------------------------

MOVED = [PoolHost("a", addr(0), "10.0.0.0:17070"), PoolHost("b", addr(1), "10.0.0.1:17070"),
         PoolHost("c", "10.0.9.9:37017", "10.0.9.9:17070")] + POOL[3:]


def test_a_moved_address_of_a_down_member_is_repaired():
    plan = plan_availability(3, RECORDS3, MOVED, view(three(), {0: PRIMARY, 2: DOWN}, {2: 10}))
    assert not plan.error and plan.changed
    assert {r.name: r.mongo_address for r in plan.records_after}["c"] == "10.0.9.9:37017"
    assert plan.repaired == [f"c ({addr(2)} -> 10.0.9.9:37017, its member is down)"]
    assert plan.messages[0] == f"repairing the address of machine c ({addr(2)} -> 10.0.9.9:37017, its member is down)"
    again = plan_availability(3, plan.records_after, MOVED, view(three(), {0: PRIMARY, 2: DOWN}, {2: 10}))
    assert not again.changed and again.repaired == []


def test_a_healthy_member_is_never_moved_to_an_address_that_is_not_it():
    """Issue 12: a record's mongo_address changed to a dead host moved a healthy voter onto it."""
    for answer in (None, "connection refused", {"isWritablePrimary": False}, {"setName": "stateserver", "me": "x:1"}):
        plan = plan_availability(3, RECORDS3, MOVED, view(three(), {0: PRIMARY}), answers={"10.0.9.9:37017": answer})
        assert plan.error and "machine c" in plan.error and "10.0.9.9:37017" in plan.error
        assert "nothing was changed" in plan.error and not plan.changed and plan.records_after == []


def test_a_healthy_member_answering_at_its_new_address_is_repaired():
    hello = {"setName": "stateserver", "me": addr(2), "secondary": True}
    plan = plan_availability(3, RECORDS3, MOVED, view(three(), {0: PRIMARY}), answers={"10.0.9.9:37017": hello})
    assert not plan.error and plan.repaired == [f"c ({addr(2)} -> 10.0.9.9:37017, the new address answers as its member)"]


def test_a_record_that_is_not_a_member_yet_is_repaired():
    cfg = config([member(0, "a"), member(1, "b")])
    plan = plan_availability(3, RECORDS3, MOVED, view(cfg, {0: PRIMARY}))
    assert not plan.error and "c" in plan.repaired[0] and "not a member yet" in plan.repaired[0]


def test_a_changed_api_address_is_repaired():
    pool = [PoolHost("a", addr(0), "10.0.0.0:9999")] + POOL[1:]
    plan = plan_availability(3, RECORDS3, pool, view(three(), {0: PRIMARY}))
    assert plan.repaired == ["a (API 10.0.0.0:17070 -> 10.0.0.0:9999)"] and plan.changed
    assert {r.name: r.api_address for r in plan.records_after}["a"] == "10.0.0.0:9999"


def test_a_repair_onto_another_machines_address_is_refused():
    records = RECORDS3 + [rec("d", 3, False)]
    pool = [PoolHost("a", addr(0), "10.0.0.0:17070"), PoolHost("b", addr(1), "10.0.0.1:17070"),
            PoolHost("c", addr(3), "10.0.0.3:17070")]
    plan = plan_availability(3, records, pool, view(three(), {0: PRIMARY, 2: DOWN}, {2: 5}))
    assert plan.error and "'c' and 'd'" in plan.error and not plan.changed


def test_records_of_deleted_voters_are_written_again():
    """Issue 12: deleting the records of 2 of 3 voters; the members' tags give them back."""
    plan = plan_availability(3, [rec("a", 0)], POOL, view(three(), {0: PRIMARY}))
    assert not plan.error and plan.added == [] and plan.maintained == ["a", "b", "c"]
    assert {r.name: (r.mongo_address, r.wants_vote) for r in plan.records_after} == {
        "a": (addr(0), True), "b": (addr(1), True), "c": (addr(2), True)}


def test_adopted_records_are_valid_records():
    from ansible_collections.stateserver.ha.plugins.module_utils._records import parse_record_docs, record_to_doc

    plan = plan_availability(3, [], [], view(three(), {0: PRIMARY}))
    assert parse_record_docs([record_to_doc(r) for r in plan.records_after])[1] == []
