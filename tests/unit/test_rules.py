"""MongoDB's config and reconfig rules (server: repl_set_config_checks_test.cpp names), and the n rule."""

from __future__ import annotations

import pytest
from ansible_collections.stateserver.ha.plugins.module_utils._rules import (
    validate_config,
    validate_n,
    validate_reconfig,
)
from fixtures import config, member


def three(version: int = 1) -> dict:
    return config([member(0, "a"), member(1, "b"), member(2, "c")], version)


def with_members(members: list[dict], version: int = 2) -> dict:
    return config(members, version)


@pytest.mark.parametrize("n", [3, 5, 7])
def test_valid_n(n):
    assert validate_n(n) is None


@pytest.mark.parametrize("n", [0, 1, 2, 4, 6, 8, 9, -1, "abc", 3.5, "3", True, None, [3]])
def test_invalid_n_names_n_the_value_and_the_valid_values(n):
    message = validate_n(n)
    assert message is not None
    assert "n" in message and "3, 5 or 7" in message and repr(n) in message


def test_single_node_addition_allowed():
    new = with_members(three()["members"] + [member(3, "d")])
    assert validate_reconfig(three(), new) == []


def test_simultaneous_add_and_remove_disallowed():
    new = with_members([member(0, "a"), member(1, "b"), member(3, "d")])
    assert any("at most 1 voting member" in e for e in validate_reconfig(three(), new))


def test_multi_node_addition_disallowed():
    new = with_members(three()["members"] + [member(3, "d"), member(4, "e")])
    assert any("at most 1 voting member" in e for e in validate_reconfig(three(), new))


def test_multi_node_addition_of_non_voting_nodes_allowed():
    new = with_members(three()["members"] + [member(3, "d", votes=0), member(4, "e", votes=0)])
    assert validate_reconfig(three(), new) == []


def test_multi_node_addition_of_arbiters_disallowed():
    arbiters = [dict(member(i, None), arbiterOnly=True, priority=0) for i in (3, 4)]
    new = with_members(three()["members"] + arbiters)
    assert any("at most 1 voting member" in e for e in validate_reconfig(three(), new))


def test_vote_flip_counts_as_one_change():
    members = three()["members"]
    members[2] = member(2, "c", votes=0)
    assert validate_reconfig(three(), with_members(members)) == []


def test_force_skips_the_single_node_rule():
    new = with_members([member(0, "a"), member(3, "d"), member(4, "e")])
    assert validate_reconfig(three(), new, force=True) == []


def test_version_must_increase():
    assert any("must be greater" in e for e in validate_reconfig(three(5), three(5)))


def test_host_keeps_its_id():
    members = [member(0, "a"), member(1, "b"), dict(member(2, "c"), _id=7)]
    assert any("must keep member _id 2" in e for e in validate_reconfig(three(), with_members(members)))


def test_address_change_keeps_id_allowed():
    members = three()["members"]
    members[1] = dict(members[1], host="10.0.9.9:37017")
    assert validate_reconfig(three(), with_members(members)) == []


def test_set_name_cannot_change():
    new = dict(three(2), _id="other")
    assert any("name cannot change" in e for e in validate_reconfig(three(), new))


def test_at_most_seven_voters():
    cfg = config([member(i, str(i)) for i in range(8)])
    assert any("no more than 7" in e for e in validate_config(cfg))


def test_at_most_fifty_members():
    cfg = config([member(i, str(i), votes=1 if i < 3 else 0) for i in range(51)])
    assert any("at most 50" in e for e in validate_config(cfg))


def test_zero_voters_rejected():
    cfg = config([member(0, "a", votes=0)])
    assert any("at least 1" in e for e in validate_config(cfg))


def test_priority_requires_a_vote():
    cfg = config([member(0, "a"), dict(member(1, "b", votes=0), priority=1)])
    assert any("priority must be 0 when non-voting" in e for e in validate_config(cfg))


def test_needs_an_electable_member():
    cfg = config([dict(member(0, "a"), priority=0)])
    assert any("priority > 0" in e for e in validate_config(cfg))


def test_unique_ids_and_hosts():
    cfg = config([member(0, "a"), dict(member(1, "b"), _id=0), dict(member(2, "c"), host=member(0)["host"])])
    errors = validate_config(cfg)
    assert any("_id 0 appears more than once" in e for e in errors)
    assert any("appears more than once" in e and "10.0.0.0" in e for e in errors)


def test_arbiter_must_vote_and_have_priority_zero():
    cfg = config([member(0, "a"), dict(member(1, None, votes=0), arbiterOnly=True, priority=0)])
    assert any("arbiter must vote" in e for e in validate_config(cfg))


def test_newly_added_may_not_be_sent():
    cfg = config([member(0, "a"), dict(member(1, "b"), newlyAdded=True)])
    assert any("newlyAdded" in e for e in validate_config(cfg))


def test_localhost_all_or_none():
    cfg = config([dict(member(0, "a"), host="localhost:37017"), member(1, "b")])
    assert any("localhost" in e for e in validate_config(cfg))


def test_single_auto_reconfig_allowed():
    """Server: ValidateForReconfig_SingleAutoReconfigAllowed. A member the server flagged newlyAdded is sent back
    without the flag (the server owns it); that is not a voting change."""
    old = config([member(0, "a"), member(1, "b"), dict(member(2, "c"), newlyAdded=True)], 2)
    new = config([member(0, "a"), member(1, "b"), member(2, "c")], 3)
    assert validate_reconfig(old, new) == []


def test_multi_auto_reconfig_disallowed():
    """Server: ValidateForReconfig_MultiAutoReconfigDisallowed, seen from the client: two new voters at once."""
    old = config([member(0, "a")], 2)
    new = config([member(0, "a"), member(1, "b"), member(2, "c")], 3)
    assert any("at most 1 voting member" in e for e in validate_reconfig(old, new))
