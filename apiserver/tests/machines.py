"""State machines on loopback for the integration tests and bench.py: each is a replica-set member started by
mongosim.testing (the simulator, or a real mongod when $MONGOD_BIN is set) plus an API server, both on the same
127.30.X.N address, like one real machine. mongosim.testing locks a free /24 of 127.30.0.0/16 per cluster, so
concurrent runs never collide. Processes are started and killed by PID only.

Everything is encrypted as deployed: a throwaway CA per cluster, members in requireTLS, and each API server serving
HTTPS with a certificate for its machine's address while talking TLS to the members.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from mongosim.certs import make_ca
from mongosim.testing import Cluster, Member, server_binary
from pymongo import MongoClient
from pymongo.errors import PyMongoError
from stateserver_client import StateClient

T = TypeVar("T")
VENV_BIN = Path(sys.executable).parent
SET_NAME = "stateserver"
BLOCK = "127.30"
API_PORT = 17070
MACHINE_TAG = "stateserver-machine"


def mongod_binary() -> str | None:
    """$MONGOD_BIN (a real mongod) when set, else the simulator's launcher; None when neither is runnable."""
    candidate = server_binary()
    return candidate if shutil.which(candidate) else None


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll until predicate() is truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (PyMongoError, httpx.HTTPError, OSError) as exc:
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_error})")


@dataclass
class Machine:
    name: str
    host: str
    member: Member | None = None
    api: subprocess.Popen | None = None
    # What verifies its API server's certificate (set when the server starts).
    tls: ssl.SSLContext | None = None

    @property
    def mongo_address(self) -> str:
        return self.member.address if self.member else f"{self.host}:37017"

    @property
    def api_address(self) -> str:
        return f"{self.host}:{API_PORT}"

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        """GET over HTTPS from the machine's API server, verifying the deployment CA."""
        return httpx.get(f"https://{self.api_address}{path}", verify=self.tls or True, trust_env=False, **kwargs)


class StateMachines:
    """`count` machines m1..mN; machine i is member i-1 of a mongosim.testing cluster plus an API server."""

    def __init__(self, workdir: Path, count: int = 3, token: str = "integration-token-0123456789",
                 auth: bool = False, metrics_token: str | None = None) -> None:
        self.workdir = workdir
        self.token = token
        self.token_file = workdir / "token"
        self.token_file.write_text(token + "\n")
        self.token_file.chmod(0o400)
        # A token that opens /metrics only, as a Prometheus server would hold it.
        self.metrics_token = metrics_token
        self.metrics_token_file = workdir / "metrics-token"
        if metrics_token:
            self.metrics_token_file.write_text(metrics_token + "\n")
            self.metrics_token_file.chmod(0o400)
        # With auth the members run with a keyfile and authorization, as the mongod role deploys them, and the API
        # servers log in as the admin user created through the localhost exception.
        self.auth = auth
        self.admin_user, self.admin_password = "admin", "integration-admin-pw-0123"
        self.password_file = workdir / "mongo-password"
        keyfile = workdir / "keyfile"
        if auth:
            self.password_file.write_text(self.admin_password + "\n")
            self.password_file.chmod(0o400)
            keyfile.write_text("c2ltdWxhdGVkLWtleWZpbGUtZm9yLXRoZS1hcGktdGVzdHMtMDEyMzQ1Njc4OQ==\n")
            keyfile.chmod(0o400)
        self.ca = make_ca(workdir / "tls", "stateserver test CA")
        self.tls = ssl.create_default_context(cafile=self.ca.path)
        # Short elections keep the tests quick; the client and server do not depend on these values.
        self.cluster = Cluster(count, block=BLOCK, workdir=workdir / "members", election_timeout_ms=1000,
                               heartbeat_interval_ms=200, key_file=str(keyfile) if auth else None, auth=auth,
                               client_options={"tls": True, "tlsCAFile": self.ca.path})
        # One certificate names every address of the cluster's block a member may take (spares included).
        members_pem = self.ca.issue("members", [f"{self.cluster.prefix}.{i}" for i in range(1, 255)])
        self.cluster.extra_args += ["--tlsMode", "requireTLS", "--tlsCertificateKeyFile", members_pem,
                                    "--tlsCAFile", self.ca.path, "--tlsAllowConnectionsWithoutCertificates"]
        self.binary = server_binary()
        self.machines = [Machine(f"m{m.index + 1}", m.ip, m) for m in self.cluster.members]
        self.apis: list[subprocess.Popen] = []

    def spare_host(self) -> str:
        """An address of this cluster's /24 that no machine uses yet (mongosim.testing keeps two spare)."""
        return f"{self.cluster.prefix}.{len(self.machines) + 1}"

    # -- processes ---------------------------------------------------------------------------------------------

    def start_mongo(self, machine: Machine) -> None:
        """Start (or restart after a kill) the machine's member on its own dbpath."""
        assert machine.member is not None
        self.cluster.start(machine.member)

    def start_api(self, machine: Machine, seeds: list[str] | None = None, password_file: Path | None = None) -> None:
        seeds = seeds or [machine.mongo_address]
        pem = self.ca.issue(f"api-{machine.name}", [machine.host])
        machine.tls = self.tls
        tls = ["--tls-cert-file", pem, "--tls-key-file", pem, "--tls-ca-file", self.ca.path,
               "--mongo-tls-ca-file", self.ca.path]
        login = ["--mongo-user", self.admin_user, "--mongo-password-file", str(password_file or self.password_file)]
        scrape = ["--metrics-token-file", str(self.metrics_token_file)] if self.metrics_token else []
        with (self.workdir / f"{machine.name}-api.log").open("ab") as log:
            machine.api = subprocess.Popen(
                [str(VENV_BIN / "stateserver-api"), "--host", machine.host, "--port", str(API_PORT),
                 "--mongo-seeds", ",".join(seeds), "--token-file", str(self.token_file),
                 "--server-selection-timeout-ms", "2000", "--wtimeout-ms", "3000", *(login if self.auth else []),
                 *scrape, *tls],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.apis.append(machine.api)
        proc = machine.api

        def live() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"the API server of {machine.name} exited with {proc.returncode}")
            return machine.get("/v1/live", timeout=1).status_code == 200

        wait_for(live, 30, f"{machine.name}'s API server to answer")

    def kill_api(self, machine: Machine) -> None:
        if machine.api is not None and machine.api.poll() is None:
            os.kill(machine.api.pid, signal.SIGKILL)
            machine.api.wait(10)
        machine.api = None

    def kill(self, machine: Machine) -> None:
        """SIGKILL both processes of a machine, the way a machine dies."""
        self.kill_api(machine)
        if machine.member is not None:
            self.cluster.kill(machine.member)

    def stop(self) -> None:
        for proc in self.apis:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
        for proc in self.apis:
            proc.wait(10)
        self.cluster.stop()

    # -- the replica set ---------------------------------------------------------------------------------------

    def start(self) -> StateMachines:
        """Start every member, initiate the set with all of them, write the machine records, start the APIs."""
        self.cluster.start()
        config = self.cluster.config_document()
        for member, machine in zip(config["members"], self.machines, strict=True):
            member["tags"] = {MACHINE_TAG: machine.name}
        self.cluster.initiate(config)
        if self.auth:
            primary = self.cluster.wait_for_primary()
            with primary.client() as c:
                # The localhost exception: the first user may be created without logging in.
                c.admin.command("createUser", self.admin_user, pwd=self.admin_password,
                                roles=[{"role": "root", "db": "admin"}])
        wait_for(self.primary, 30, "a primary")
        wait_for(lambda: self.healthy_secondaries() == len(self.machines) - 1, 30, "every secondary")
        for machine in self.machines:
            self.write_record(machine)
        for machine in self.machines:
            self.start_api(machine)
        return self

    def mongo(self) -> MongoClient:
        login = {"username": self.admin_user, "password": self.admin_password} if self.auth else {}
        return MongoClient([m.mongo_address for m in self.machines], replicaSet=SET_NAME,
                           serverSelectionTimeoutMS=15000, w="majority", tls=True, tlsCAFile=self.ca.path, **login)

    def write_record(self, machine: Machine) -> None:
        """What ensure_availability does for a machine it maintains or adds."""
        with self.mongo() as c:
            c[SET_NAME].machines.replace_one({"_id": machine.name}, {
                "mongo_address": machine.mongo_address, "api_address": machine.api_address, "wants_vote": True,
                "created": time.time()}, upsert=True)

    def status(self) -> dict:
        with self.mongo() as c:
            return c.admin.command("replSetGetStatus")

    def primary(self) -> Machine | None:
        names = [m["name"] for m in self.status()["members"] if m["state"] == 1]
        return next((m for m in self.machines if m.mongo_address in names), None) if len(names) == 1 else None

    def healthy_secondaries(self) -> int:
        return sum(1 for m in self.status()["members"] if m["state"] == 2 and m.get("health", 1) == 1)

    def election_timeout_ms(self) -> int:
        with self.mongo() as c:
            return int(c.admin.command("replSetGetConfig")["config"]["settings"]["electionTimeoutMillis"])

    def client(self, cache_file: Path | None = None, seed: int | None = None, **kwargs: Any) -> StateClient:
        return StateClient([m.api_address for m in self.machines], self.token, cache_file,
                           rng=random.Random(seed), tls=self.tls, **kwargs)
