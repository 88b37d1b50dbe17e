"""What ``replSetGetConfig`` shows a client (``processReplSetGetConfig``): the server-managed ``newlyAdded`` flag is
left out unless the caller asks with ``$_internalIncludeNewlyAdded: true``; the member then reads as the voter it
was configured as, while the vote counts (``votingMembersCount``) still leave it out until it has synced."""
from __future__ import annotations

import pytest
from conformance_support import config, next_config, run, start_set, status


@pytest.mark.timeout(120)
def test_newly_added_is_hidden_unless_asked_for(mongosim_cluster):
    c = start_set(mongosim_cluster, 3)
    p = c.wait_for_primary()
    joining = f"{c.prefix}.{100}:{c.port}"  # nothing listens there: it never syncs, so it stays newlyAdded
    cfg = next_config(p)
    cfg["members"].append({"_id": 10, "host": joining})
    run(p, {"replSetReconfig": cfg, "maxTimeMS": 20000})
    shown = next(m for m in config(p)["members"] if m["host"] == joining)
    assert "newlyAdded" not in shown
    assert shown.get("votes", 1) == 1
    internal = next(m for m in config(p, newly_added=True)["members"] if m["host"] == joining)
    assert internal.get("newlyAdded") is True
    assert status(p)["votingMembersCount"] == 3
    # A secondary answers the same way.
    secondary = next(m for m in c.members if m is not p)
    c.wait_for(lambda: config(secondary)["version"] == config(p)["version"], 20, what="the secondary has it")
    assert all("newlyAdded" not in m for m in config(secondary)["members"])
    assert any(m.get("newlyAdded") for m in config(secondary, newly_added=True)["members"])
