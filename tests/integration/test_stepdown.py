"""Issue 13: never step down an innocent primary.

When the planned primary must lose its vote, peergroup steps it down and demotes it once another member is primary.
Re-reading at once after the step-down could see a secondary's stale view that still lists the old primary, plan
"step down" again and send it to whoever is primary now: a second election, and two voters frozen. This repeats
that scenario many times on one simulator set (200 ms heartbeats, 1 s election timeout) and counts elections by
the set's term.
"""

from __future__ import annotations

import pytest
from ansible_collections.stateserver.ha.plugins.module_utils import _converge
from ansible_collections.stateserver.ha.plugins.module_utils._model import MachineRecord
from ansible_collections.stateserver.ha.plugins.module_utils._replset import ReplSet
from cluster import MACHINE_TAG, Cluster
from pymongo.errors import PyMongoError

pytestmark = pytest.mark.timeout(300)

ROUNDS = 20


def record(cluster: Cluster, name: str, wants_vote: bool) -> MachineRecord:
    i = cluster.names.index(name)
    return MachineRecord(name, cluster.addresses[i], f"{cluster.hosts[i]}:17070", wants_vote)


def voting(config: dict) -> set[str]:
    return {m["tags"][MACHINE_TAG] for m in config["members"] if m.get("votes", 1) > 0}


def term_and_primary(cluster: Cluster) -> tuple[int, str | None]:
    """The term and primary as the primary itself says (asked directly, not through a secondary's view)."""
    for i in cluster.running:
        try:
            with cluster.direct(i) as c:
                status = c.admin.command("replSetGetStatus")
        except PyMongoError:
            continue
        if status.get("myState") == 1:
            return int(status["term"]), cluster.names[i]
    return -1, None


def unfreeze(cluster: Cluster, machines: set[str]) -> None:
    """A step-down freezes the old primary for 60 s; the rounds come faster than that, so thaw the members."""
    for name in machines:
        with cluster.direct(cluster.names.index(name)) as c:
            c.admin.command("replSetFreeze", 0)


def test_a_planned_primary_that_loses_its_vote_is_stepped_down_once_and_no_other_primary_is(tmp_path, cluster_factory):
    cluster = cluster_factory(size=4)
    cluster.initiate(0)
    records = [record(cluster, name, name != "sm4") for name in cluster.names]
    with ReplSet({"seeds": cluster.addresses, "server_selection_timeout": 10}) as rs:
        rs.write_records([], records)
        assert _converge.converge(rs, 120).converged
        for round_ in range(ROUNDS):
            term, primary = cluster.wait_for(lambda: term_and_primary(cluster)[1] and term_and_primary(cluster),
                                             30, "a primary")
            spare = next(r.name for r in records if not r.wants_vote)
            planned = [record(cluster, r.name, r.name != primary) for r in records]
            unfreeze(cluster, set(cluster.names) - {primary})
            rs.write_records(records, planned)
            records = planned

            outcome = _converge.converge(rs, 60)

            assert outcome.converged, (round_, outcome.reasons)
            assert [s["action"] for s in outcome.steps] == ["promote", "step_down", "demote"], (round_, outcome.steps)
            after_term, after_primary = term_and_primary(cluster)
            assert after_term == term + 1, f"round {round_}: {after_term - term} elections for one planned step-down"
            assert after_primary not in (None, primary), (round_, primary, after_primary)
            config = cluster.read()[0]
            assert voting(config) == set(cluster.names) - {primary}, (round_, config["members"])
            assert spare in voting(config)
