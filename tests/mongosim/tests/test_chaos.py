"""Seeded, bounded chaos: random kills, restarts, freezes and partitions under a majority-write load.

Ends with every acknowledged majority write present exactly once. Seed and rounds come from
MONGOSIM_CHAOS_SEED / MONGOSIM_CHAOS_ROUNDS so a failure can be replayed.
"""
from __future__ import annotations

import os
import random
import threading
import time

import pytest
from mongosim.testing import using_real_mongod
from pymongo import MongoClient, WriteConcern
from pymongo.errors import PyMongoError

SEED = int(os.environ.get("MONGOSIM_CHAOS_SEED", "20261128"))
ROUNDS = int(os.environ.get("MONGOSIM_CHAOS_ROUNDS", "8"))


class Writer(threading.Thread):
    def __init__(self, uri: str) -> None:
        super().__init__(daemon=True)
        self.client = MongoClient(uri, serverSelectionTimeoutMS=3000, connectTimeoutMS=1000, socketTimeoutMS=5000,
                                  retryWrites=True)
        self.coll = self.client.app.get_collection("chaos", write_concern=WriteConcern(w="majority", wtimeout=4000))
        self.stop_event = threading.Event()
        self.acked: list[int] = []
        self.failed = 0

    def run(self) -> None:
        seq = 0
        while not self.stop_event.is_set():
            try:
                self.coll.insert_one({"seq": seq})
                self.acked.append(seq)
            except PyMongoError:
                self.failed += 1
                time.sleep(0.05)
            seq += 1


@pytest.mark.timeout(240)
def test_chaos_keeps_every_acknowledged_majority_write(mongosim_cluster):
    rng = random.Random(SEED)
    c = mongosim_cluster(3, election_timeout_ms=1000, heartbeat_interval_ms=200)
    uri = "mongodb://" + ",".join(c.addresses) + f"/?replicaSet={c.set_name}"
    writer = Writer(uri)
    writer.start()
    actions = ["kill_primary", "kill_random", "freeze_primary", "sigterm_random"]
    if not using_real_mongod():
        actions += ["partition_primary", "partition_random"]
    log = []
    try:
        for rnd in range(ROUNDS):
            time.sleep(rng.uniform(0.3, 1.0))
            action = rng.choice(actions)
            primary = c.primary()
            victim = primary if (action.endswith("primary") and primary) else rng.choice(c.members)
            log.append((rnd, action, victim.index))
            if action.startswith("kill"):
                c.kill(victim)
            elif action.startswith("sigterm"):
                c.terminate(victim)
            elif action.startswith("freeze"):
                c.freeze(victim)
            else:
                c.partition([victim])
            time.sleep(rng.uniform(0.5, 2.5))
            # repair: every member back, no partition
            if victim.frozen:
                c.thaw(victim)
            if not victim.running:
                c.start(victim)
            if action.startswith("partition"):
                c.heal()
            c.wait_for_primary(timeout=30)
        time.sleep(1.0)
    finally:
        writer.stop_event.set()
        writer.join(30)
        writer.client.close()
    p = c.wait_for_primary(timeout=30)
    assert writer.acked, f"no write was acknowledged at all (log: {log})"
    client = c.client()
    coll = client.app.get_collection("chaos", write_concern=WriteConcern(w="majority", wtimeout=20000))
    coll.insert_one({"seq": -1})  # a final majority write: everything before it is on a majority
    from pymongo.read_concern import ReadConcern
    docs = list(coll.with_options(read_concern=ReadConcern("majority")).find({}, {"seq": 1}))
    seen: dict[int, int] = {}
    for d in docs:
        seen[d["seq"]] = seen.get(d["seq"], 0) + 1
    missing = [s for s in writer.acked if seen.get(s, 0) == 0]
    dupes = [s for s, n in seen.items() if n > 1]
    assert not missing, f"acknowledged majority writes lost: {missing[:20]} (seed {SEED}, log {log})"
    assert not dupes, f"writes applied more than once: {dupes[:20]} (seed {SEED}, log {log})"
    # every member converges on the same data
    for m in c.members:
        c.wait_for(lambda m=m: _count(m) == len(docs), 30, what=f"{m} converged")
    assert p is not None


def _count(member) -> int:
    cl = member.client(readPreference="secondaryPreferred")
    try:
        return cl.app.chaos.count_documents({})
    finally:
        cl.close()
