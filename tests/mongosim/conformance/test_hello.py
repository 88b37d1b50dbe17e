"""What ``hello`` lists (``fillHelloForReplSet``): electable members under ``hosts``; priority-0 and newlyAdded
members under ``passives``; hidden and delayed members nowhere; ``setVersion`` is the config version and only the
primary sends ``electionId``."""
from __future__ import annotations

import pytest
from conformance_support import config, next_config, run, start_set


@pytest.mark.timeout(120)
def test_hello_lists_passives_and_leaves_out_hidden_and_delayed(mongosim_cluster):
    c = start_set(mongosim_cluster, 3)
    p = c.wait_for_primary()
    spare = [f"{c.prefix}.{100 + k}:{c.port}" for k in range(4)]  # nothing listens there
    cfg = next_config(p)
    cfg["members"] += [
        {"_id": 10, "host": spare[0], "priority": 0, "votes": 0},
        {"_id": 11, "host": spare[1], "priority": 0, "votes": 0, "hidden": True},
        {"_id": 12, "host": spare[2], "priority": 0, "votes": 0, "secondaryDelaySecs": 3600},
        {"_id": 13, "host": spare[3]},  # a new voter: newlyAdded until it has synced, which it never does
    ]
    run(p, {"replSetReconfig": cfg, "maxTimeMS": 20000})
    assert next(m for m in config(p, newly_added=True)["members"] if m["_id"] == 13).get("newlyAdded") is True
    hello = run(p, {"hello": 1})
    assert sorted(hello["hosts"]) == sorted(c.addresses)
    assert sorted(hello["passives"]) == sorted([spare[0], spare[3]])
    listed = hello["hosts"] + hello["passives"] + hello.get("arbiters", [])
    assert spare[1] not in listed and spare[2] not in listed
    assert hello["setVersion"] == config(p)["version"]
    assert "electionId" in hello
    secondary = next(m for m in c.members if m is not p)
    c.wait_for(lambda: run(secondary, {"hello": 1})["setVersion"] == hello["setVersion"], 20)
    assert "electionId" not in run(secondary, {"hello": 1})
