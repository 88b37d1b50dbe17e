"""A backup waits until its source has learned the primary's majority commit point (issue 16): the ordering of
optimes it relies on, and the refusal of a status without one."""

from __future__ import annotations

import pytest
from ansible_collections.stateserver.ha.plugins.module_utils._backup import SourceError, majority_point, reached
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
