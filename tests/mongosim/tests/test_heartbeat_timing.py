"""Heartbeats after a config change, timed as mongod 7.0 times them (see the conformance suite's
test_config_propagation.py for what a real mongod guarantees): installs restart every heartbeat at once, a request
that shows a member's new config is answered with a heartbeat at once, and ``newlyAdded`` is cleared from the
primary's heartbeat responses, one member per automatic reconfig, only once the current config is committed."""
from __future__ import annotations

import time

import pytest

SLOW = {"heartbeatIntervalMillis": 5000, "electionTimeoutMillis": 10000, "heartbeatTimeoutSecs": 10}


def command(member, cmd: dict) -> dict:
    client = member.client()
    try:
        return client.admin.command(cmd)
    finally:
        client.close()


def next_config(member) -> dict:
    cfg = command(member, {"replSetGetConfig": 1})["config"]
    cfg["version"] += 1
    cfg.pop("term", None)
    return cfg


def slow_set(mongosim_cluster, n: int = 3):
    c = mongosim_cluster(n, initiate=False, election_timeout_ms=SLOW["electionTimeoutMillis"],
                         heartbeat_interval_ms=SLOW["heartbeatIntervalMillis"])
    c.initiate(c.config_document(settings=SLOW), wait=False)
    p = c.wait_for_primary(60)
    c.wait_for_states({m.index: "SECONDARY" for m in c.members if m is not p}, 60)
    return c, p


@pytest.mark.timeout(120)
def test_every_member_sees_every_other_on_a_new_config_well_within_one_heartbeat_interval(mongosim_cluster):
    # Secondaries too: one that installs a config from a heartbeat heartbeats every member at once, and a member
    # that has the config already answers that request with a heartbeat of its own.
    c, p = slow_set(mongosim_cluster)
    cfg = next_config(p)
    cfg["members"][1]["tags"] = {"dc": "east"}
    started = time.monotonic()
    command(p, {"replSetReconfig": cfg, "maxTimeMS": 30000})

    def all_views_current() -> bool:
        for m in c.members:
            st = command(m, {"replSetGetStatus": 1})["members"]
            if not all(x["health"] == 1 and x["configVersion"] == cfg["version"] for x in st):
                return False
        return True

    c.wait_for(all_views_current, 10, interval=0.02, what="every member's view on the new version")
    assert time.monotonic() - started < 2.5


@pytest.mark.timeout(180)
def test_two_new_voters_are_cleared_by_one_automatic_reconfig_each(mongosim_cluster):
    c = mongosim_cluster(3)
    new = [c.add_node(), c.add_node()]
    p = c.wait_for_primary()
    cfg = next_config(p)
    cfg["members"] += [{"_id": 10 + k, "host": m.address} for k, m in enumerate(new)]
    command(p, {"replSetReconfig": cfg, "maxTimeMS": 30000})
    c.wait_for_states({m.index: "SECONDARY" for m in new}, 60)

    def cleared() -> dict | None:
        got = command(p, {"replSetGetConfig": 1, "$_internalIncludeNewlyAdded": True})["config"]
        return None if any(m.get("newlyAdded") for m in got["members"]) else got

    final = c.wait_for(cleared, 60, what="newlyAdded cleared on both")
    # each removal changes one voter (3 -> 4 -> 5), so it is two reconfigs after the one that added them
    assert final["version"] == cfg["version"] + 2
    assert command(p, {"replSetGetStatus": 1})["votingMembersCount"] == 5
