"""Start and control replica-set members (the simulator, or a real mongod via ``$MONGOD_BIN``) for tests.

Every cluster takes its own /24 inside a caller-given loopback block (``"127.10"`` → ``127.10.X.1..N``), held by a
file lock for its lifetime, so concurrent suites and tests never collide. Each member has its own dbpath and log under
``workdir``. Processes are controlled by PID only; ``stop()`` (or leaving the ``with`` block) ends them all.
"""
from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Self

from pymongo import MongoClient
from pymongo.errors import PyMongoError

DEFAULT_PORT = 37017
SET_NAME = "stateserver"
_LOCK_DIR = Path(tempfile.gettempdir()) / "mongosim-address-locks"


def using_real_mongod() -> bool:
    """True when ``$MONGOD_BIN`` points at a real mongod (simulator-only features are unavailable)."""
    return bool(os.environ.get("MONGOD_BIN"))


def server_binary() -> str:
    """``$MONGOD_BIN`` when set, else the ``mongosim`` launcher next to the running interpreter."""
    env = os.environ.get("MONGOD_BIN")
    if env:
        return env
    return str(Path(sys.executable).parent / "mongosim")


def down_seconds(status: dict[str, Any], host: str) -> float:
    """Seconds since the member ``host`` last answered a heartbeat, by one replSetGetStatus document: 0 while it is
    healthy (or not listed), infinity if it never answered."""
    for member in status["members"]:
        if member["name"] != host or member.get("health") == 1:
            continue
        last = member.get("lastHeartbeatRecv")
        if last is None or last.year < 2000:
            return float("inf")
        return (status["date"] - last).total_seconds()
    return 0.0


def _port_free(ip: str, port: int) -> bool:
    s = socket.socket()
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((ip, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def allocate_subnet(block: str, port: int = DEFAULT_PORT, size: int = 1) -> tuple[str, Any]:
    """Lock a free ``block.X`` (/24) and return (prefix, lock file); keep the file open to hold it."""
    parts = block.split(".")
    if len(parts) != 2 or parts[0] != "127":
        raise ValueError(f"block must look like '127.N' (a loopback /16), got {block!r}")
    _LOCK_DIR.mkdir(parents=True, exist_ok=True)
    for x in range(1, 255):
        f = open(_LOCK_DIR / f"{block}.{x}.lock", "a+")  # noqa: SIM115 - returned to the caller
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            continue
        prefix = f"{block}.{x}"
        if all(_port_free(f"{prefix}.{i}", port) for i in range(1, size + 1)):
            return prefix, f
        f.close()
    raise RuntimeError(f"no free /24 left in {block}.0.0/16")


class Member:
    """One member process: ``address`` is the ``host:port`` string used in the replica-set config."""

    def __init__(self, index: int, ip: str, port: int, workdir: Path, client_options: dict | None = None) -> None:
        self.index = index
        self.client_options = dict(client_options or {})
        self.ip = ip
        self.port = port
        self.dbpath = workdir / f"node{index}"
        self.logpath = workdir / f"node{index}.log"
        self.proc: subprocess.Popen | None = None
        self.frozen = False
        self.dbpath.mkdir(parents=True, exist_ok=True)

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def client(self, **kwargs: Any) -> MongoClient:
        """A direct connection to this member only (with the cluster's client options, e.g. TLS)."""
        kwargs = {**self.client_options, **kwargs}
        kwargs.setdefault("serverSelectionTimeoutMS", 5000)
        kwargs.setdefault("connectTimeoutMS", 2000)
        return MongoClient(self.ip, self.port, directConnection=True, **kwargs)

    def hello(self, timeout: float = 2.0) -> dict | None:
        """This member's ``hello`` reply, or None when it does not answer in time."""
        if not self.running or self.frozen:
            return None
        c = self.client(serverSelectionTimeoutMS=int(timeout * 1000), socketTimeoutMS=int(timeout * 1000))
        try:
            return c.admin.command("hello")
        except PyMongoError:
            return None
        finally:
            c.close()

    def __repr__(self) -> str:
        return f"Member({self.index}, {self.address}, pid={self.pid})"


class Cluster:
    """N members on ``<block>.X.1..N:port``; not started until ``start()``."""

    def __init__(self, n: int = 3, *, block: str = "127.10", workdir: str | Path | None = None,
                 port: int = DEFAULT_PORT, set_name: str = SET_NAME, election_timeout_ms: int = 1000,
                 heartbeat_interval_ms: int = 200, key_file: str | None = None, auth: bool = False,
                 test_commands: bool = True, extra_args: Sequence[str] = (), spare: int = 2,
                 client_options: dict | None = None) -> None:
        """``client_options`` are pymongo options for every client the helpers open (e.g. ``tls``, ``tlsCAFile``),
        for members started with matching ``extra_args``."""
        self.set_name = set_name
        self.port = port
        self.election_timeout_ms = election_timeout_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.key_file = key_file
        self.auth = auth
        self.test_commands = test_commands
        self.extra_args = list(extra_args)
        self._tmp = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="mongosim-")
            workdir = self._tmp.name
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.prefix, self._lock = allocate_subnet(block, port, n + spare)
        self.client_options = dict(client_options or {})
        self.members: list[Member] = [Member(i, f"{self.prefix}.{i + 1}", port, self.workdir, self.client_options)
                                      for i in range(n)]
        self._clients: list[MongoClient] = []

    # ---- processes -------------------------------------------------------------------------------

    def _m(self, which: int | Member) -> Member:
        return which if isinstance(which, Member) else self.members[which]

    @property
    def addresses(self) -> list[str]:
        return [m.address for m in self.members]

    def command_line(self, m: Member) -> list[str]:
        """Only options a real mongod accepts, so the same helper drives ``$MONGOD_BIN``."""
        args = [server_binary(), "--replSet", self.set_name, "--port", str(m.port), "--bind_ip", m.ip,
                "--dbpath", str(m.dbpath), "--logpath", str(m.logpath), "--logappend"]
        if self.test_commands:
            args += ["--setParameter", "enableTestCommands=1"]
        if self.key_file:
            args += ["--keyFile", self.key_file]
        if self.auth:
            args += ["--auth"]
        return args + self.extra_args

    def start(self, which: int | Member | None = None, timeout: float = 30.0) -> None:
        """Start one member (or all that are not running) and wait until each answers ``hello``."""
        targets = [self._m(which)] if which is not None else [m for m in self.members if not m.running]
        for m in targets:
            if m.running:
                continue
            err = open(m.dbpath.parent / f"node{m.index}.stderr", "ab")  # noqa: SIM115 - child owns it
            # The simulator exits if this test process dies without cleaning up (a real mongod ignores this).
            env = dict(os.environ, MONGOSIM_EXIT_WITH_PID=str(os.getpid()))
            m.proc = subprocess.Popen(self.command_line(m), stdout=err, stderr=err, stdin=subprocess.DEVNULL,
                                      start_new_session=True, env=env)
            err.close()
            m.frozen = False
        for m in targets:
            self.wait_ready(m, timeout)

    def wait_ready(self, which: int | Member, timeout: float = 30.0) -> None:
        m = self._m(which)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not m.running:
                raise RuntimeError(f"{m} exited with {m.proc.returncode if m.proc else None}; see {m.logpath}")
            if m.hello(1.0) is not None:
                return
            time.sleep(0.05)
        raise TimeoutError(f"{m} did not answer hello within {timeout}s")

    def add_node(self) -> Member:
        """Start one more (uninitiated) member on the next address of this cluster's /24."""
        m = Member(len(self.members), f"{self.prefix}.{len(self.members) + 1}", self.port, self.workdir,
                   self.client_options)
        self.members.append(m)
        self.start(m)
        return m

    def kill(self, which: int | Member) -> None:
        """SIGKILL, then reap."""
        m = self._m(which)
        if m.proc is not None and m.running:
            os.kill(m.proc.pid, signal.SIGKILL)
            m.proc.wait(10)
        m.frozen = False

    def terminate(self, which: int | Member, timeout: float = 20.0) -> int | None:
        """SIGTERM (clean shutdown); SIGKILL if it has not exited within ``timeout``. Returns the exit code."""
        m = self._m(which)
        if m.proc is None:
            return None
        if m.running:
            if m.frozen:
                self.thaw(m)
            os.kill(m.proc.pid, signal.SIGTERM)
            try:
                m.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(m.proc.pid, signal.SIGKILL)
                m.proc.wait(10)
        return m.proc.returncode

    def freeze(self, which: int | Member) -> None:
        """SIGSTOP: the process stops answering but keeps its sockets."""
        m = self._m(which)
        if m.running:
            os.kill(m.proc.pid, signal.SIGSTOP)  # type: ignore[union-attr]
            m.frozen = True

    def thaw(self, which: int | Member) -> None:
        m = self._m(which)
        if m.running:
            os.kill(m.proc.pid, signal.SIGCONT)  # type: ignore[union-attr]
        m.frozen = False

    def restart(self, which: int | Member, timeout: float = 30.0) -> None:
        """SIGKILL (if running) and start again on the same dbpath."""
        self.kill(which)
        self.start(which, timeout)

    def stop(self) -> None:
        """End every member process (SIGCONT, SIGTERM, then SIGKILL), close clients, release the address lock."""
        for c in self._clients:
            c.close()
        self._clients.clear()
        for m in self.members:
            if m.running:
                if m.frozen:
                    self.thaw(m)
                os.kill(m.proc.pid, signal.SIGTERM)  # type: ignore[union-attr]
        deadline = time.monotonic() + 10
        for m in self.members:
            if m.proc is not None and m.proc.poll() is None:
                try:
                    m.proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    os.kill(m.proc.pid, signal.SIGKILL)
                    m.proc.wait(10)
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- replica set ------------------------------------------------------------------------------

    def config_document(self, members: Iterable[int | Member] | None = None, settings: dict | None = None,
                        **member_overrides: dict) -> dict:
        """The initiate config for the given members (default: all) with this cluster's timing settings."""
        chosen = [self._m(w) for w in members] if members is not None else list(self.members)
        s = {"electionTimeoutMillis": self.election_timeout_ms, "heartbeatIntervalMillis": self.heartbeat_interval_ms}
        s.update(settings or {})
        return {"_id": self.set_name, "version": 1,
                "members": [{"_id": m.index, "host": m.address} for m in chosen], "settings": s}

    def initiate(self, config: dict | None = None, *, members: Iterable[int | Member] | None = None,
                 settings: dict | None = None, wait: bool = True, timeout: float = 30.0) -> dict:
        """Run ``replSetInitiate`` on the first configured member; wait for a primary unless ``wait=False``."""
        cfg = config or self.config_document(members, settings)
        first = next(m for m in self.members if m.address == cfg["members"][0]["host"])
        c = first.client()
        try:
            c.admin.command("replSetInitiate", cfg)
        finally:
            c.close()
        if wait:
            self.wait_for_primary(timeout)
        return cfg

    def primary(self) -> Member | None:
        """The member that currently says ``isWritablePrimary`` (highest electionId if several do)."""
        best: tuple[Any, Member] | None = None
        for m in self.members:
            h = m.hello(1.0)
            if h and h.get("isWritablePrimary"):
                key = h.get("electionId")
                if best is None or (key is not None and (best[0] is None or key > best[0])):
                    best = (key, m)
        return best[1] if best else None

    def wait_for_primary(self, timeout: float = 30.0, exclude: Iterable[int | Member] = ()) -> Member:
        """Poll until some member (not in ``exclude``) is primary; raise TimeoutError otherwise."""
        skip = {self._m(e).index for e in exclude}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in self.members:
                if m.index in skip:
                    continue
                h = m.hello(1.0)
                if h and h.get("isWritablePrimary"):
                    return m
            time.sleep(0.05)
        raise TimeoutError(f"no primary within {timeout}s")

    def wait_for(self, predicate: Any, timeout: float = 30.0, interval: float = 0.1, what: str = "condition") -> Any:
        """Poll ``predicate()`` until it returns a truthy value (returned); TimeoutError after ``timeout``."""
        deadline = time.monotonic() + timeout
        last_exc: Exception | None = None
        while time.monotonic() < deadline:
            try:
                v = predicate()
                if v:
                    return v
            except PyMongoError as e:
                last_exc = e
            time.sleep(interval)
        raise TimeoutError(f"{what} not reached within {timeout}s (last error: {last_exc})")

    def wait_for_states(self, states: dict[int, str], timeout: float = 30.0) -> dict:
        """Wait until the primary's replSetGetStatus shows ``{member index: stateStr}``; returns the status."""
        def check() -> dict | None:
            p = self.primary()
            if p is None:
                return None
            c = p.client()
            try:
                st = c.admin.command("replSetGetStatus")
            finally:
                c.close()
            by_name = {x["name"]: x["stateStr"] for x in st["members"]}
            ok = all(by_name.get(self._m(i).address) == s for i, s in states.items())
            return st if ok else None
        return self.wait_for(check, timeout, what=f"member states {states}")

    def client(self, **kwargs: Any) -> MongoClient:
        """A replica-set client (``replicaSet=<set name>``) seeded with every member; closed by ``stop()``."""
        kwargs = {**self.client_options, **kwargs}
        kwargs.setdefault("serverSelectionTimeoutMS", 15000)
        kwargs.setdefault("connectTimeoutMS", 2000)
        uri = "mongodb://" + ",".join(m.address for m in self.members) + f"/?replicaSet={self.set_name}"
        c: MongoClient = MongoClient(uri, **kwargs)
        self._clients.append(c)
        return c

    # ---- fault injection (simulator only) -----------------------------------------------------------

    def _failpoint(self, m: Member, hosts: list[str], instant: bool = False) -> None:
        c = m.client()
        try:
            if hosts:
                c.admin.command("configureFailPoint", "mongosimPartition", mode="alwaysOn",
                                data={"hosts": hosts, "instant": instant})
            else:
                c.admin.command("configureFailPoint", "mongosimPartition", mode="off")
        finally:
            c.close()

    def partition(self, side: Iterable[int | Member], *, instant: bool = False) -> None:
        """Cut member traffic between ``side`` and every other running member (simulator only). Packets are lost,
        so members notice only when their requests time out (heartbeatTimeoutSecs), as with a real network
        failure; ``instant=True`` refuses connections instead, so the cut is seen at once."""
        if using_real_mongod():
            raise RuntimeError("partition() needs the simulator's failpoint; not available with MONGOD_BIN")
        a = {self._m(x).index for x in side}
        for m in self.members:
            if not m.running or m.frozen:
                continue
            other = [o.address for o in self.members if (o.index in a) != (m.index in a)]
            self._failpoint(m, other, instant)

    def heal(self) -> None:
        """Remove every partition (simulator only)."""
        for m in self.members:
            if m.running and not m.frozen:
                try:
                    self._failpoint(m, [])
                except PyMongoError:
                    pass
