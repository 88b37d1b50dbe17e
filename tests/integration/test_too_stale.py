"""A member that fell off the end of its sync sources' oplog: reported as needing a resync, never given a vote.

Only the stale member itself knows it is too stale (its own replSetGetStatus says `tooStale`); the others see it
RECOVERING. The oplog is 1 MB here, so a few MB of writes while the member is stopped leave it behind for good.
"""

from __future__ import annotations

import pytest
from cluster import MACHINE_TAG, SET_NAME, SETTINGS
from mongosim.testing import using_real_mongod
from playbook import run_tasks
from pymongo import WriteConcern
from test_modules import STATUS, conn, pg, voters

# mongod's smallest oplog is 990 MB: writing past it is not a test anyone waits for.
pytestmark = [pytest.mark.timeout(420),
              pytest.mark.skipif(using_real_mongod(), reason="needs an oplog far smaller than mongod allows")]


def test_a_too_stale_member_is_reported_for_resync_and_never_promoted(tmp_path, cluster_factory):
    cluster = cluster_factory(size=4, extra_args=("--oplogSize", "1"))
    members = [{"_id": i, "host": cluster.addresses[i], "tags": {MACHINE_TAG: cluster.names[i]}} for i in range(4)]
    members[3].update(votes=0, priority=0)
    cluster.sim.initiate({"_id": SET_NAME, "version": 1, "settings": dict(SETTINGS), "members": members},
                         wait=False)
    cluster.wait_for(lambda: cluster.primary_name() is not None, 60, "a primary")
    with cluster.client() as c:
        # sm4 wants the vote sm3 gives up: the swap promotes sm4 before sm3 is demoted, which sm4 never allows.
        c.stateserver.machines.insert_many([
            {"_id": name, "mongo_address": cluster.addresses[i], "api_address": f"{cluster.hosts[i]}:17070",
             "wants_vote": name != "sm3"} for i, name in enumerate(cluster.names)])
        cluster.sim.terminate(3)
        coll = c.app.get_collection("docs", write_concern=WriteConcern(w="majority", wtimeout=60000))
        for i in range(40):
            coll.insert_one({"_id": i, "pad": "x" * 100 * 1024})
    cluster.sim.start(3)
    stale = cluster.addresses[3]

    def recovering():
        status = cluster.read()[1]
        return any(m["name"] == stale and m["state"] == 3 for m in status["members"])

    cluster.wait_for(recovering, 60, "sm4 to be RECOVERING")
    before = cluster.read()[0]

    run = run_tasks(tmp_path / "run", [{STATUS: conn(cluster)}, pg(cluster, timeout=6)])
    rows = {r["machine"]: r for r in run[0]["rows"]}
    assert rows["sm4"]["state"] == "RECOVERING" and "resync" in rows["sm4"]["note"], rows["sm4"]
    assert not any(rows[name]["note"] for name in ("sm1", "sm2", "sm3")), rows
    # peergroup waits for sm4 to become a healthy secondary, which it never does: it times out, sm4 gets no vote.
    assert run[1].get("failed") is True, run[1]
    after = cluster.read()[0]
    assert voters(after) == voters(before) == {"sm1", "sm2", "sm3"}
    assert next(m for m in after["members"] if m["host"] == stale).get("votes", 1) == 0
