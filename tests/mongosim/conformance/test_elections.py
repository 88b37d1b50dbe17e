"""Election safety as mongod keeps it (``TopologyCoordinator::processReplSetRequestVotes`` and
``_shouldTakeOverPrimary``): one vote per term, persisted before the reply; no vote for a candidate whose log is
behind; a priority takeover only an election timeout after the higher-priority member is caught up."""
from __future__ import annotations

import datetime
import time

import pytest
from bson.int64 import Int64
from bson.timestamp import Timestamp
from conformance_support import config, next_config, run, start_set, status
from pymongo import WriteConcern


def vote_request(cfg: dict, term: int, candidate_index: int, last_term: int) -> dict:
    """A real (not dry-run) vote request from the member at ``candidate_index``, whose log is far ahead."""
    return {"replSetRequestVotes": 1, "setName": cfg["_id"], "dryRun": False, "term": Int64(term),
            "candidateIndex": candidate_index, "configVersion": cfg["version"], "configTerm": cfg["term"],
            "lastAppliedOpTime": {"ts": Timestamp(int(time.time()) + 3600, 1), "t": Int64(last_term)}}


@pytest.mark.timeout(120)
def test_a_voter_never_grants_two_votes_in_one_term_even_across_sigkill(mongosim_cluster):
    c = start_set(mongosim_cluster, 3)
    p = c.wait_for_primary()
    voter = next(m for m in c.members if m is not p)
    for m in c.members:
        if m is not voter:
            c.kill(m)  # nobody else moves the voter's term
    cfg = config(voter)
    term = int(status(voter)["term"])
    a, b = (i for i, m in enumerate(cfg["members"]) if m["host"] != voter.address)
    first = run(voter, vote_request(cfg, term + 1, a, term))
    assert first["voteGranted"] is True, first
    c.restart(voter)  # SIGKILL and start again
    c.wait_for(lambda: status(voter)["myState"] in (2, 3), 30, what="voter back")
    assert int(status(voter)["term"]) == term + 1
    second = run(voter, vote_request(cfg, term + 1, b, term))
    assert second["voteGranted"] is False, second
    assert "already voted" in second["reason"]


@pytest.mark.timeout(120)
def test_a_member_that_missed_committed_writes_is_never_elected(mongosim_cluster):
    # Member 1 votes but cannot stand; without chaining, the stale member can only sync from a primary.
    c = start_set(mongosim_cluster, 3, settings={"chainingAllowed": False}, overrides={1: {"priority": 0}})
    p = c.wait_for_primary()
    stale = next(m for m in c.members if m is not p and m.index != 1)
    c.kill(stale)
    coll = c.client().app.get_collection("docs", write_concern=WriteConcern(w="majority", wtimeout=20000))
    coll.insert_many([{"_id": i} for i in range(20)])  # committed by the primary and member 1
    c.kill(p)
    c.start(stale)
    # Member 1 refuses every vote to the stale member, which cannot win alone: no primary, for many timeouts.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        assert run(stale, {"hello": 1})["isWritablePrimary"] is False
        time.sleep(0.2)
    c.start(p)
    c.wait_for_primary(60)
    assert coll.count_documents({}) == 20


@pytest.mark.timeout(120)
def test_priority_takeover_waits_an_election_timeout_after_catching_up(mongosim_cluster):
    election_ms = 2000
    c = start_set(mongosim_cluster, 3, settings={"electionTimeoutMillis": election_ms})
    p = c.wait_for_primary()
    c.client().app.get_collection("docs", write_concern=WriteConcern(w=3, wtimeout=20000)).insert_one({"_id": 1})
    target = next(m for m in c.members if m is not p)
    cfg = next_config(p)
    next(m for m in cfg["members"] if m["host"] == target.address)["priority"] = 2
    sent = datetime.datetime.now(datetime.UTC)
    run(p, {"replSetReconfig": cfg, "maxTimeMS": 20000})
    c.wait_for(lambda: run(target, {"hello": 1})["isWritablePrimary"], 30, what="priority takeover")
    metrics = status(target)["electionCandidateMetrics"]
    assert metrics["lastElectionReason"] == "priorityTakeover"
    started = metrics["lastElectionDate"].replace(tzinfo=datetime.UTC)
    assert (started - sent).total_seconds() >= election_ms / 1000 - 0.01, (sent, started)
