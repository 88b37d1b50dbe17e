"""A backup waits until its source has learned the primary's majority commit point (issue 16): the ordering of
optimes it relies on, the refusal of a status without one, and the bounded wait itself over a fake source."""

from __future__ import annotations

import pytest
from ansible_collections.stateserver.ha.plugins.module_utils._backup import SourceError, majority_point, reached
from ansible_collections.stateserver.ha.plugins.modules import state_backup
from bson import Timestamp
from hypothesis import given
from hypothesis import strategies as st


def optime(t: int, seconds: int, inc: int) -> dict:
    return {"ts": Timestamp(seconds, inc), "t": t}


@pytest.mark.parametrize(("source", "target", "expected"), [
    (optime(3, 100, 2), optime(3, 100, 2), True),    # the same point
    (optime(3, 100, 3), optime(3, 100, 2), True),    # a later write in the same second
    (optime(3, 100, 1), optime(3, 100, 2), False),   # one write behind
    (optime(3, 99, 9), optime(3, 100, 0), False),    # an earlier second, whatever its increment
    (optime(4, 90, 1), optime(3, 100, 2), True),     # a newer term wins over a later timestamp (mongod's order)
    (optime(2, 200, 1), optime(3, 100, 2), False),
])
def test_reached_orders_term_then_timestamp(source, target, expected):
    assert reached(source, target) is expected


times = st.builds(optime, st.integers(0, 5), st.integers(1, 2**31 - 1), st.integers(0, 2**31 - 1))


@given(times, times)
def test_exactly_one_of_two_distinct_optimes_reaches_the_other(a, b):
    assert reached(a, a)
    if a != b:
        assert reached(a, b) != reached(b, a)


def test_majority_point_is_read_from_the_status_or_refused():
    point = optime(4, 100, 7)
    assert majority_point({"set": "stateserver", "optimes": {"readConcernMajorityOpTime": point}}) == point
    for status in ({"set": "stateserver"}, {"set": "stateserver", "optimes": {}},
                   {"set": "stateserver", "optimes": {"readConcernMajorityOpTime": {"t": 1}}}):
        with pytest.raises(SourceError, match="'stateserver' has no majority-committed optime"):
            majority_point(status)


class StatusSource:
    """A source member's replSetGetStatus, one document per call (the last repeats): a client.admin.command fake."""

    def __init__(self, *statuses: dict) -> None:
        self.statuses = list(statuses)
        self.calls = 0
        self.admin = self

    def command(self, name: str) -> dict:
        assert name == "replSetGetStatus"
        self.calls += 1
        return self.statuses[min(self.calls, len(self.statuses)) - 1]


def secondary(point: dict, state: int = 2) -> dict:
    return {"set": "stateserver", "myState": state, "optimes": {"readConcernMajorityOpTime": point}}


def test_the_backup_waits_for_its_source_to_learn_the_primarys_majority_point():
    target = optime(3, 100, 5)
    source = StatusSource(secondary(optime(3, 100, 2)), secondary(optime(3, 100, 4)), secondary(optime(3, 100, 6)))
    status = state_backup._caught_up_status(source, "b:1", False, target)
    assert source.calls == 3 and majority_point(status) == optime(3, 100, 6)


def test_a_source_that_never_catches_up_is_refused_after_the_deadline(monkeypatch):
    monkeypatch.setattr(state_backup, "CATCH_UP_SECONDS", 0.2)
    source = StatusSource(secondary(optime(3, 100, 2)))
    with pytest.raises(SourceError, match=r"b:1's majority-committed optime .* did not reach the primary's .* within "
                                          r"0.2s"):
        state_backup._caught_up_status(source, "b:1", False, optime(3, 100, 5))
    assert source.calls > 1


def test_a_source_that_is_no_longer_a_secondary_is_refused_at_once():
    source = StatusSource(secondary(optime(3, 100, 2), state=1))
    with pytest.raises(SourceError, match="b:1 is 1 now, not a SECONDARY"):
        state_backup._caught_up_status(source, "b:1", False, optime(3, 100, 5))
    assert source.calls == 1
    # Unless the primary may be read from.
    caught_up = StatusSource(secondary(optime(3, 100, 5), state=1))
    assert state_backup._caught_up_status(caught_up, "a:1", True, optime(3, 100, 5))["myState"] == 1
