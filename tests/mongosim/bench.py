"""Benchmark of the replica-set simulator (or $MONGOD_BIN): prints figures, asserts nothing.

  .venv/bin/python tests/mongosim/bench.py [--election-timeout-ms 1000] [--rounds 10] [--inserts 3000]

Prints: time to start a 3-node set and elect a primary, majority-insert throughput (one client thread and
several), and failover time after SIGKILL of the primary (median and max over --rounds), each beside the configured
electionTimeoutMillis.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mongosim.testing import Cluster, server_binary
from pymongo import WriteConcern


def throughput(cluster: Cluster, total: int, threads: int) -> float:
    coll = cluster.client().bench.get_collection(f"t{threads}", write_concern=WriteConcern(w="majority"))
    coll.insert_one({"warm": True})
    per = total // threads

    def work(k: int) -> None:
        for i in range(per):
            coll.insert_one({"k": k, "i": i})

    ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return per * threads / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--election-timeout-ms", type=int, default=1000)
    ap.add_argument("--heartbeat-interval-ms", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--inserts", type=int, default=3000)
    ap.add_argument("--block", default="127.10")
    args = ap.parse_args()
    et = args.election_timeout_ms
    print(f"server: {server_binary()}")
    print(f"configured electionTimeoutMillis={et} heartbeatIntervalMillis={args.heartbeat_interval_ms}")
    with Cluster(3, block=args.block, election_timeout_ms=et, heartbeat_interval_ms=args.heartbeat_interval_ms) as c:
        t0 = time.perf_counter()
        c.start()
        started = time.perf_counter() - t0
        c.initiate(wait=False)
        c.wait_for_primary(60)
        elected = time.perf_counter() - t0
        print(f"start 3 processes:            {started:7.3f} s")
        print(f"start + initiate + elected:   {elected:7.3f} s   (electionTimeoutMillis {et} ms)")
        for threads in (1, 8):
            rate = throughput(c, args.inserts, threads)
            print(f"majority inserts, {threads} thread(s): {rate:9.0f} /s")
        times = []
        for _ in range(args.rounds):
            old = c.wait_for_primary(60)
            c.client().bench.get_collection("f", write_concern=WriteConcern(w="majority")).insert_one({})
            c.wait_for_states({m.index: ("PRIMARY" if m is old else "SECONDARY") for m in c.members}, 60)
            t0 = time.perf_counter()
            c.kill(old)
            c.wait_for_primary(60, exclude=[old])
            times.append(time.perf_counter() - t0)
            c.start(old)
        print(f"failover after SIGKILL ({args.rounds} rounds): median {statistics.median(times) * 1000:6.0f} ms, "
              f"max {max(times) * 1000:6.0f} ms   (electionTimeoutMillis {et} ms; target median < {2 * et} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
