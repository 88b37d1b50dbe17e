"""How soon mongod marks a member DOWN (``TopologyCoordinator::processHeartbeatResponse``): a refused connection
(SIGKILL) after a couple of quick retries; lost packets (SIGSTOP) only once no heartbeat has been answered for
heartbeatTimeoutSecs."""
from __future__ import annotations

import time

import pytest
from conformance_support import member_status, start_set

TIMEOUT_SECS = 3


def seconds_until_down(c, observer, target, limit: float) -> float:
    started = time.monotonic()
    c.wait_for(lambda: member_status(observer, target.address)["health"] == 0, limit, interval=0.05,
               what=f"{target} reported DOWN")
    return time.monotonic() - started


@pytest.mark.timeout(120)
def test_sigstop_is_down_only_after_heartbeat_timeout_and_sigkill_at_once(mongosim_cluster):
    c = start_set(mongosim_cluster, 3, settings={"electionTimeoutMillis": 15000,
                                                 "heartbeatTimeoutSecs": TIMEOUT_SECS})
    p = c.wait_for_primary()
    frozen, killed = [m for m in c.members if m is not p]
    c.freeze(frozen)
    try:
        waited = seconds_until_down(c, p, frozen, 20)
        assert member_status(p, frozen.address)["state"] == 8
    finally:
        c.thaw(frozen)
    # The last answered heartbeat was at most one interval (200 ms) before the freeze.
    assert TIMEOUT_SECS - 0.3 <= waited <= TIMEOUT_SECS + 5, waited
    c.wait_for(lambda: member_status(p, frozen.address)["health"] == 1, 20, what="thawed member healthy again")
    c.kill(killed)
    assert seconds_until_down(c, p, killed, 20) < TIMEOUT_SECS - 1
