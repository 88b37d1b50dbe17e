#!/usr/bin/env python3
"""Benchmark (prints figures; asserts nothing): failover as a unit sees it, and key/value writes per second.

Failover: 3 state machines on loopback (a replica-set member + an API server each, like the integration test).
Each round a unit client writes, the primary's machine is SIGKILLed (both processes), and the time from the kill to
the next acknowledged write is measured; the machine is then restarted and rejoins before the next round.
Throughput: PUTs of new keys through one API server, from 1 and from 4 concurrent callers.

Usage: .venv/bin/python apiserver/bench.py [--rounds 10] [--seconds 5]   (machines on a free 127.30.X.0/24)
"""

from __future__ import annotations

import argparse
import ssl
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
from pymongo import MongoClient
from pymongo.errors import PyMongoError

sys.path.insert(0, str(Path(__file__).resolve().parent / "tests"))
from machines import Machine, StateMachines, wait_for


def watch_for_new_primary(survivors: list[Machine], result: list[float], started: float, ca_file: str) -> None:
    """Poll the survivors directly until one says it is a writable primary; record when (the election alone)."""
    clients = [MongoClient(m.mongo_address, directConnection=True, serverSelectionTimeoutMS=200, tls=True,
                           tlsCAFile=ca_file) for m in survivors]
    try:
        while time.monotonic() - started < 60:
            for client in clients:
                try:
                    if client.admin.command("hello").get("isWritablePrimary"):
                        result.append(time.monotonic() - started)
                        return
                except PyMongoError:
                    pass
            time.sleep(0.01)
    finally:
        for client in clients:
            client.close()


def failover_rounds(machines: StateMachines, rounds: int, workdir: Path) -> tuple[list[float], list[float]]:
    timings: list[float] = []
    elections: list[float] = []
    for round_no in range(rounds):
        with machines.client(workdir / "unit-cache.json", seed=round_no, retry_for=120.0) as client:
            client.put(f"bench-{round_no}-before", round_no, 0)
            primary = wait_for(machines.primary, 30, "a primary")
            survivors = [m for m in machines.machines if m is not primary]
            killed = time.monotonic()
            machines.kill(primary)
            watcher = threading.Thread(target=watch_for_new_primary, args=(survivors, elections, killed, machines.ca.path))
            watcher.start()
            client.put(f"bench-{round_no}-after", round_no, 0)
            timings.append(time.monotonic() - killed)
            watcher.join()
        print(f"  round {round_no + 1}: killed {primary.name}; new primary after {elections[-1] * 1000:.0f} ms, "
              f"unit's next acknowledged write after {timings[-1] * 1000:.0f} ms", flush=True)
        machines.start_mongo(primary)
        machines.start_api(primary)
        wait_for(lambda: machines.healthy_secondaries() == len(machines.machines) - 1, 60,
                 f"{primary.name} to rejoin as a secondary")
    return timings, elections


def throughput(address: str, token: str, seconds: float, callers: int, tls: ssl.SSLContext) -> float:
    count = [0] * callers
    stop = time.monotonic() + seconds

    def caller(index: int) -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=10, verify=tls) as http:
            while time.monotonic() < stop:
                key = f"tp-{uuid.uuid4().hex}"
                response = http.put(f"https://{address}/v1/kv/{key}",
                                    json={"value": {"n": count[index]}, "version": 0, "request_id": key})
                response.raise_for_status()
                count[index] += 1

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(callers)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(count) / (time.monotonic() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each throughput run")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="stateserver-bench-") as tmp:
        machines = StateMachines(Path(tmp))
        try:
            machines.start()
            election_ms = machines.election_timeout_ms()
            print(f"replica set member: {machines.binary}")
            print(f"failover as seen by a unit ({args.rounds} rounds, SIGKILL of the primary's machine):")
            timings, elections = failover_rounds(machines, args.rounds, Path(tmp))
            median_ms = statistics.median(timings) * 1000
            print(f"election alone: median {statistics.median(elections) * 1000:.0f} ms, "
                  f"max {max(elections) * 1000:.0f} ms")
            print(f"failover: median {median_ms:.0f} ms, max {max(timings) * 1000:.0f} ms, "
                  f"electionTimeoutMillis {election_ms} ms (target: median < {election_ms + 1000} ms: "
                  f"{'met' if median_ms < election_ms + 1000 else 'NOT met'})")
            target = machines.machines[0]
            for callers in (1, 4):
                rate = throughput(target.api_address, machines.token, args.seconds, callers, machines.tls)
                print(f"kv writes through one API server ({callers} caller{'s' if callers > 1 else ''}): "
                      f"{rate:.0f} requests/s (w:majority, new keys)")
        finally:
            machines.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
