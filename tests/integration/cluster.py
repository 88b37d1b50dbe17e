"""Replica-set members on loopback for the integration tests, and what the tests read back from them.

Processes come from mongosim.testing (the simulator, or $MONGOD_BIN when set), which gives every cluster its own
/24 of 127.20.0.0/16. Members listen on the default port 37017, so the modules' port default is exercised.
"""

from __future__ import annotations

from collections.abc import Callable

from mongosim import testing
from pymongo import MongoClient
from pymongo.errors import PyMongoError

MACHINE_TAG = "stateserver-machine"
SET_NAME = "stateserver"
PORT = 37017
# Fast elections and heartbeats keep the suite short; the modules do not depend on these values.
SETTINGS = {"electionTimeoutMillis": 1000, "heartbeatIntervalMillis": 200}


class Cluster:
    """size members named sm1..smN on one /24 of 127.20.0.0/16 (port 37017); the first `start` of them run."""

    def __init__(self, workdir, size: int, start: int | None = None, extra_args: tuple = ()) -> None:
        self.sim = testing.Cluster(size, block="127.20", workdir=workdir, set_name=SET_NAME, port=PORT,
                                   election_timeout_ms=SETTINGS["electionTimeoutMillis"],
                                   heartbeat_interval_ms=SETTINGS["heartbeatIntervalMillis"], spare=0,
                                   extra_args=extra_args)
        self.set_name = SET_NAME
        self.hosts = [m.ip for m in self.sim.members]
        self.addresses = [m.address for m in self.sim.members]
        self.names = [f"sm{i}" for i in range(1, size + 1)]
        try:
            for i in range(size if start is None else start):
                self.sim.start(i)
        except BaseException:
            self.sim.stop()
            raise

    @property
    def running(self) -> list[int]:
        return [m.index for m in self.sim.members if m.running]

    def kill(self, index: int) -> None:
        """SIGKILL the member's process (no clean shutdown)."""
        self.sim.kill(index)

    def stop(self) -> None:
        self.sim.stop()

    # -- direct access ----------------------------------------------------------------------------------------

    def direct(self, index: int) -> MongoClient:
        return MongoClient(self.addresses[index], directConnection=True, serverSelectionTimeoutMS=5000)

    def client(self) -> MongoClient:
        return MongoClient(self.addresses, replicaSet=SET_NAME, serverSelectionTimeoutMS=10000)

    def wait_for(self, predicate: Callable[[], object], timeout: float, what: str):
        """Poll until predicate() is truthy (driver errors count as "not yet"); TimeoutError naming `what`."""
        return self.sim.wait_for(predicate, timeout, interval=0.2, what=what)

    def initiate(self, index: int) -> None:
        """What the mongod role does on the bootstrap machine: a one-member set tagged with its machine name."""
        config = {"_id": SET_NAME, "version": 1, "settings": dict(SETTINGS),
                  "members": [{"_id": 0, "host": self.addresses[index], "tags": {MACHINE_TAG: self.names[index]}}]}
        with self.direct(index) as c:
            c.admin.command("replSetInitiate", config)
        self.wait_for(lambda: self.primary_name() == self.names[index], 30, f"{self.names[index]} to become primary")

    def is_uninitiated(self, index: int) -> bool:
        with self.direct(index) as c:
            hello = c.admin.command("hello")
        return not hello.get("setName")

    def read(self) -> tuple[dict, dict, list[dict]]:
        """(config, status, machine records) as the primary has them."""
        def once():
            with self.client() as c:
                config = c.admin.command("replSetGetConfig")["config"]
                status = c.admin.command("replSetGetStatus")
                records = list(c.stateserver.machines.find({}, {"created": 0}).sort("_id", 1))
            return config, status, records
        return self.wait_for(once, 30, "the replica set to answer")

    def primary_name(self) -> str | None:
        with self.client() as c:
            status = c.admin.command("replSetGetStatus")
            config = c.admin.command("replSetGetConfig")["config"]
        tags = {m["host"]: m["tags"].get(MACHINE_TAG) for m in config["members"]}
        primaries = [tags.get(m["name"]) for m in status["members"] if m["state"] == 1]
        return primaries[0] if len(primaries) == 1 else None

    def member_down_for(self, machine: str, via: int | None = None) -> float:
        """Seconds since the member of `machine` last answered a heartbeat, as a live member sees it (0 if up)."""
        address = self.addresses[self.names.index(machine)]
        indexes = [via] if via is not None else [i for i in self.running if self.addresses[i] != address]
        for i in indexes:
            try:
                with self.direct(i) as c:
                    status = c.admin.command("replSetGetStatus")
            except PyMongoError:
                continue
            if any(m["name"] == address for m in status["members"]):
                return testing.down_seconds(status, address)
        return 0.0

    def direct_config(self, index: int) -> dict:
        with self.direct(index) as c:
            return c.admin.command("replSetGetConfig")["config"]

    def direct_records(self, index: int) -> list[dict]:
        with self.direct(index) as c:
            return list(c.stateserver.machines.find({}, {"created": 0}).sort("_id", 1))
