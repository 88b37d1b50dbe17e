"""How fast the primary learns that the members have a new config, and what a force reconfig does to ``newlyAdded``.

mongod (7.0) does not wait for a heartbeat interval after a reconfig: the primary heartbeats every member at once
with the new version (``_setCurrentRSConfig`` restarts heartbeats); a member that sees a newer version fetches the
config at once, installs it and heartbeats every member at once; and a node that receives a request showing the
sender now has its own config heartbeats the sender back at once (``processHeartbeatV1``), because it records a
member's config version only from heartbeat responses. So the primary's ``replSetGetStatus`` shows every healthy
member on the new ``configVersion`` a few round trips after the reconfig, with no heartbeat-interval wait.

A force reconfig marks no member ``newlyAdded`` and so drops the flags the current config has
(``processReplSetReconfig``; jstests/replsets/force_reconfig_sets_newly_added_field_correctly.js)."""
from __future__ import annotations

import time

import pytest
from conformance_support import config, next_config, run, start_set, status

# A heartbeat interval long enough that waiting for one is plainly visible; the election timeout and heartbeat
# timeout are mongod's defaults, so a 5 s gap between heartbeats is never taken for a lost member.
SLOW_HEARTBEATS = {"heartbeatIntervalMillis": 5000, "electionTimeoutMillis": 10000, "heartbeatTimeoutSecs": 10}
# Half an interval: real mongod needs a few round trips plus a journal flush (milliseconds); waiting for even one
# regular heartbeat would take 0-5 s, so three reconfigs in a row all under this bound do not happen by chance.
PROPAGATION_BOUND = 2.5


def reconfig_and_time_propagation(c, p, cfg: dict, members: int) -> float:
    """Run ``cfg`` on the primary; seconds until its replSetGetStatus shows ``members`` healthy members, all on the
    primary's new config version."""
    started = time.monotonic()
    run(p, {"replSetReconfig": cfg, "maxTimeMS": 30000})
    version = config(p)["version"]

    def everyone_on_it() -> bool:
        healthy = [m for m in status(p)["members"] if m["health"] == 1]
        return len(healthy) == members and all(m["configVersion"] == version for m in healthy)

    c.wait_for(everyone_on_it, 30, interval=0.02, what=f"every member on config version {version}")
    return time.monotonic() - started


@pytest.mark.timeout(180)
def test_primary_sees_every_member_on_a_new_config_well_within_one_heartbeat_interval(mongosim_cluster):
    c = start_set(mongosim_cluster, 3, settings=SLOW_HEARTBEATS)
    joining = c.add_node()
    p = c.wait_for_primary()
    cfg = next_config(p)
    cfg["members"].append({"_id": 10, "host": joining.address, "votes": 0, "priority": 0})
    took = [reconfig_and_time_propagation(c, p, cfg, 4)]
    # Two more reconfigs of the grown set: make the new member a voter, then a non-voter again.
    for votes in (1, 0):
        cfg = next_config(p)
        cfg["members"][-1].update(votes=votes, priority=votes)
        took.append(reconfig_and_time_propagation(c, p, cfg, 4))
    assert max(took) < PROPAGATION_BOUND, took


@pytest.mark.timeout(120)
def test_force_reconfig_marks_no_member_newly_added_and_drops_the_flags_it_finds(mongosim_cluster):
    c = start_set(mongosim_cluster, 3)
    p = c.wait_for_primary()
    # Nothing listens at these addresses: a member added there never syncs, so only a reconfig can clear its flag.
    first, second = f"{c.prefix}.100:{c.port}", f"{c.prefix}.101:{c.port}"
    cfg = next_config(p)
    cfg["members"].append({"_id": 10, "host": first})
    run(p, {"replSetReconfig": cfg, "maxTimeMS": 20000})
    assert next(m for m in config(p, newly_added=True)["members"] if m["host"] == first).get("newlyAdded") is True
    assert status(p)["votingMembersCount"] == 3
    forced = next_config(p)  # as a client reads it: without the server's newlyAdded flag
    forced["members"].append({"_id": 11, "host": second})
    run(p, {"replSetReconfig": forced, "force": True})
    assert not any(m.get("newlyAdded") for m in config(p, newly_added=True)["members"])
    # Both count as voters at once: 5 voters, of which the 3 running ones are a majority.
    assert status(p)["votingMembersCount"] == 5
