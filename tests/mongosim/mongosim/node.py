"""One simulated replica-set member: oplog, replication, heartbeats, elections and config handling."""
from __future__ import annotations

import asyncio
import copy
import datetime
import logging
import random
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bson import ObjectId
from bson import encode as bson_encode
from bson.int64 import Int64
from bson.timestamp import Timestamp

from . import rsconfig, wire
from .errors import CommandError
from .storage import Journal, Store, load_state, save_state
from .tls import TlsSettings

log = logging.getLogger("mongosim")

STARTUP, PRIMARY, SECONDARY, RECOVERING, STARTUP2, UNKNOWN, ARBITER, DOWN, ROLLBACK, REMOVED = 0, 1, 2, 3, 5, 6, 7, 8, 9, 10
STATE_STR = {0: "STARTUP", 1: "PRIMARY", 2: "SECONDARY", 3: "RECOVERING", 5: "STARTUP2", 6: "UNKNOWN",
             7: "ARBITER", 8: "(not reachable/healthy)", 9: "ROLLBACK", 10: "REMOVED"}
NULL_OPTIME = (-1, 0, 0)
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
PULL_BATCH = 2000

# Failures of member-to-member calls: the peer is down, frozen, partitioned or answered garbage.
NET_ERRORS = (TimeoutError, OSError, asyncio.IncompleteReadError, ConnectionError, wire.ProtocolError)

OpTime = tuple  # (term, ts.time, ts.inc): MongoDB orders optimes by term first, then timestamp


def optime_of(e: dict) -> OpTime:
    return (int(e["t"]), e["ts"].time, e["ts"].inc)


def ot_doc(ot: OpTime) -> dict:
    return {"ts": Timestamp(ot[1], ot[2]), "t": Int64(ot[0])}


def ot_parse(d: dict | None) -> OpTime:
    if not d:
        return NULL_OPTIME
    return (int(d["t"]), d["ts"].time, d["ts"].inc)


def ot_date(ot: OpTime) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ot[1], datetime.UTC)


def now_utc() -> datetime.datetime:
    n = datetime.datetime.now(datetime.UTC)
    return n.replace(microsecond=n.microsecond // 1000 * 1000)


@dataclass
class MemberInfo:
    """What this node knows about another member, from heartbeats."""
    state: int = UNKNOWN
    health: int = -1
    applied: OpTime = NULL_OPTIME
    durable: OpTime = NULL_OPTIME
    last_ok: float = 0.0           # monotonic time of the last good heartbeat response
    last_hb: datetime.datetime | None = None
    last_hb_recv: datetime.datetime | None = None
    config_version: int = -1
    config_term: int = -1
    ping_ms: int = 0
    message: str = ""
    sync_source: str = ""
    election_time: Timestamp | None = None
    up_since: float = 0.0
    term: int = -1
    position: OpTime = NULL_OPTIME  # durable optime reported through pulls (primary only)
    position_applied: OpTime = NULL_OPTIME
    failures: int = 0               # failed heartbeats in a row (mongod retries twice before DOWN)


class Peer:
    """An outbound connection to another member; one request at a time."""

    def __init__(self, node: Node, host: str) -> None:
        self.node = node
        self.host = host
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.lock = asyncio.Lock()

    async def call(self, body: dict, timeout: float) -> dict:
        if self.node.blocked(self.host):
            if self.node.partition_instant:
                raise ConnectionError(f"traffic to {self.host} dropped by failpoint")
            # Lost packets: nothing comes back, so the caller only learns of it when its request times out.
            deadline = time.monotonic() + timeout
            while self.node.blocked(self.host):
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"no answer from {self.host} (packets dropped by failpoint)")
                await asyncio.sleep(min(0.05, deadline - time.monotonic()))
            timeout = max(0.01, deadline - time.monotonic())
        async with self.lock:
            try:
                return await asyncio.wait_for(self._call(body), timeout)
            except BaseException:
                self.close()
                raise

    async def _call(self, body: dict) -> dict:
        if self.writer is None:
            h, _, p = self.host.rpartition(":")
            h = h.strip("[]")  # an IPv6 member is written [::1]:port, as mongod writes it
            ctx = self.node.client_tls
            # Over TLS the peer's certificate must match the host string of the config, as mongod checks it.
            self.reader, self.writer = await asyncio.open_connection(h, int(p), ssl=ctx,
                                                                     server_hostname=h if ctx else None)
            await self.node.security.outbound_handshake(self)
        return await self.raw_call(body)

    async def raw_call(self, body: dict) -> dict:
        """Send one command on the open connection (used by Security for internal auth)."""
        assert self.reader is not None and self.writer is not None
        _rid, data = wire.encode_command(body)
        self.writer.write(data)
        await self.writer.drain()
        return await wire.read_reply(self.reader)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass
class Options:
    port: int = 27017
    bind_ips: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    repl_set: str | None = None
    dbpath: str = "/data/db"
    test_commands: bool = False
    key_file: str | None = None
    auth: bool = False
    parameters: dict = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)
    parsed: dict = field(default_factory=dict)
    oplog_size_mb: float | None = None  # None: never truncated (mongod's default is a share of the disk)
    tls: TlsSettings = field(default_factory=TlsSettings)


class Node:
    def __init__(self, opts: Options, security: Any) -> None:
        self.opts = opts
        self.security = security
        self.dbpath = Path(opts.dbpath)
        self.start_time = time.monotonic()
        self.process_id = ObjectId()
        self.topology_counter = 0
        self.store = Store()
        self.oplog: list[dict] = []
        self.ts_index: dict[tuple[int, int], int] = {}
        self.journal = Journal(self.dbpath / "oplog.bson")
        self.state_path = self.dbpath / "state.bson"
        self.config: dict | None = None
        self.my_id: int | None = None
        self.term = 0
        self.voted: tuple[int, int] | None = None
        self.state = STARTUP
        self.members: dict[int, MemberInfo] = {}
        self.peers: dict[str, Peer] = {}
        self.commit_point: OpTime = NULL_OPTIME
        self.durable: OpTime = NULL_OPTIME
        self.primary_id: int | None = None
        self.last_heard_primary = time.monotonic()
        self.election_deadline = 0.0
        self.frozen_until = 0.0
        self.election_time: Timestamp | None = None
        self.election_id: ObjectId | None = None
        self.last_election_reason = ""
        self.sync_source: str = ""
        self.sync_source_id: int = -1
        self.blocked_hosts: set[str] = set()
        self.partition_instant = False   # failpoint mode: refuse at once instead of dropping packets
        self.stop_repl_producer = False  # mongod's stopReplProducer failpoint: fetch no oplog entries
        self.client_tls: ssl.SSLContext | None = None  # member connections go over TLS (preferTLS, requireTLS)
        self.reconfig_running = False    # a reconfig is validating/quorum-checking/installing (mongod's 109)
        self.config_oplog_commitment: OpTime = NULL_OPTIME  # commit point when the current config was installed
        self.oplog_start = 0             # first oplog entry still inside the capped size
        self._oplog_sizes: list[int] = []
        self._oplog_bytes = 0
        self.too_stale = False
        self.election_date: datetime.datetime | None = None
        self.stepping_down: asyncio.Event | None = None
        self._changed = asyncio.Event()
        self._hb_tasks: dict[int, asyncio.Task] = {}
        self._hb_wake: dict[int, asyncio.Event] = {}  # set: the member's heartbeat loop sends its next one now
        self._tasks: list[asyncio.Task] = []
        self._electing = False
        self._takeover_since = 0.0
        self._last_ts = (0, 0)
        self.shutting_down = False
        self._self_cache: dict[str, bool] = {}
        self.server: Any = None  # the owning server.Server (set by it)

    # ---- lifecycle -----------------------------------------------------------------------------

    def load(self) -> None:
        st = load_state(self.state_path)
        self.term = int(st.get("term", 0))
        v = st.get("voted")
        self.voted = (int(v["term"]), int(v["id"])) if v else None
        self.oplog = self.journal.load()
        for i, e in enumerate(self.oplog):
            self.store.apply(e)
            self.ts_index[(e["ts"].time, e["ts"].inc)] = i
        self._cap_oplog(self.oplog)
        if self.oplog:
            self._last_ts = (self.oplog[-1]["ts"].time, self.oplog[-1]["ts"].inc)
        self.durable = self.applied
        if not self.opts.repl_set:
            self.commit_point = self.applied
        cfg = st.get("config")
        if cfg is not None:
            self._install_config(cfg, source="disk")

    def start(self) -> None:
        self._tasks = [asyncio.ensure_future(t) for t in
                       (self._election_loop(), self._sync_loop(), self._journal_loop())]

    def shutdown(self) -> None:
        self.shutting_down = True
        for t in list(self._tasks) + list(self._hb_tasks.values()):
            t.cancel()
        for p in self.peers.values():
            p.close()
        self.journal.close()

    # ---- API for server code (Security) ---------------------------------------------------------

    async def apply_local_write(self, db: str, coll: str, op: dict) -> dict:
        """A replicated write from server code, on the primary, waiting for w:majority (see auth.py)."""
        return await self.server.apply_local_write(db, coll, op)

    async def find_local(self, db: str, coll: str, flt: dict | None = None) -> list[dict]:
        """Documents of this member's local copy (any state)."""
        return await self.server.find_local(db, coll, flt)

    # ---- small helpers -------------------------------------------------------------------------

    @property
    def applied(self) -> OpTime:
        return optime_of(self.oplog[-1]) if self.oplog else NULL_OPTIME

    @property
    def settings(self) -> dict:
        return self.config["settings"] if self.config else {"heartbeatIntervalMillis": 2000,
                                                            "electionTimeoutMillis": 10000,
                                                            "heartbeatTimeoutSecs": 10}

    @property
    def hb_interval(self) -> float:
        return self.settings["heartbeatIntervalMillis"] / 1000.0

    @property
    def election_timeout(self) -> float:
        return self.settings["electionTimeoutMillis"] / 1000.0

    def me(self) -> dict | None:
        if self.config is None or self.my_id is None:
            return None
        return self.member_cfg(self.my_id)

    def member_cfg(self, mid: int | None) -> dict | None:
        if self.config is None or mid is None:
            return None
        for m in self.config["members"]:
            if m["_id"] == mid:
                return m
        return None

    def is_primary(self) -> bool:
        return self.state == PRIMARY

    def notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def topology_changed(self) -> None:
        self.topology_counter += 1
        self.notify()

    async def wait_change(self, timeout: float) -> None:
        ev = self._changed
        try:
            await asyncio.wait_for(ev.wait(), max(timeout, 0))
        except TimeoutError:
            pass

    async def wait_for(self, pred: Callable[[], bool], timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not pred():
            left = 3600.0 if deadline is None else deadline - time.monotonic()
            if left <= 0:
                return False
            await self.wait_change(min(left, 1.0))
        return True

    def blocked(self, host: str) -> bool:
        return host in self.blocked_hosts

    def peer(self, host: str, purpose: str = "hb") -> Peer:
        key = f"{purpose}:{host}"
        p = self.peers.get(key)
        if p is None:
            p = self.peers[key] = Peer(self, host)
        return p

    def is_self(self, host: str) -> bool:
        cached = self._self_cache.get(host)
        if cached is not None:
            return cached
        h, _, p = host.rpartition(":")
        h = h.strip("[]")
        result = False
        if p.isdigit() and int(p) == self.opts.port:
            try:
                ip = socket.gethostbyname(h)
            except OSError:
                ip = None
            binds = self.opts.bind_ips
            if ip in binds or h in binds:
                result = True
            elif ("0.0.0.0" in binds or "::" in binds) and ip is not None:
                result = ip.startswith("127.") or ip in _local_ips()
            elif h == "localhost" and "127.0.0.1" in binds:
                result = True
        self._self_cache[host] = result
        return result

    def persist_state(self) -> None:
        st: dict[str, Any] = {"term": Int64(self.term)}
        if self.voted:
            st["voted"] = {"term": Int64(self.voted[0]), "id": self.voted[1]}
        if self.config is not None:
            st["config"] = self.config
        save_state(self.state_path, st)

    def set_term(self, term: int) -> None:
        if term > self.term:
            self.term = term
            self.persist_state()
            if self.state == PRIMARY:
                self.step_down("saw a newer term")

    def host_of(self, mid: int | None) -> str:
        m = self.member_cfg(mid)
        return m["host"] if m else ""

    def my_host(self) -> str:
        m = self.me()
        if m:
            return m["host"]
        return f"{self.opts.bind_ips[0]}:{self.opts.port}"

    # ---- oplog ---------------------------------------------------------------------------------

    def _next_ts(self) -> Timestamp:
        now = int(time.time())
        if now > self._last_ts[0]:
            self._last_ts = (now, 1)
        else:
            self._last_ts = (self._last_ts[0], self._last_ts[1] + 1)
        return Timestamp(*self._last_ts)

    def log_ops(self, entries: list[dict]) -> OpTime:
        """Assign optimes, apply and journal entries written on this node (primary or standalone)."""
        wall = now_utc()
        for e in entries:
            e["ts"] = self._next_ts()
            e["t"] = Int64(self.term if self.opts.repl_set else -1)
            e["wall"] = wall
            self.ts_index[(e["ts"].time, e["ts"].inc)] = len(self.oplog)
            self.oplog.append(e)
            self.store.apply(e)
        self.journal.append(entries)
        self._cap_oplog(entries)
        if not self.opts.repl_set:
            self.commit_point = self.applied
        self._recompute_commit()
        self.notify()
        return self.applied

    def _append_remote(self, entries: list[dict]) -> None:
        for e in entries:
            self.ts_index[(e["ts"].time, e["ts"].inc)] = len(self.oplog)
            self.oplog.append(e)
            self.store.apply(e)
            self._last_ts = max(self._last_ts, (e["ts"].time, e["ts"].inc))
        self.journal.append(entries)
        self._cap_oplog(entries)
        self.notify()

    def _cap_oplog(self, added: list[dict]) -> None:
        """mongod's oplog is a capped collection: the oldest entries go once it exceeds its size. The journal keeps
        them (the simulator rebuilds its data from it), but they are no longer served to members that sync."""
        if self.opts.oplog_size_mb is None:
            return
        limit = self.opts.oplog_size_mb * 1024 * 1024
        for e in added:
            size = len(bson_encode(e))
            self._oplog_sizes.append(size)
            self._oplog_bytes += size
        while self._oplog_bytes > limit and self.oplog_start < len(self.oplog) - 1:
            self._oplog_bytes -= self._oplog_sizes[self.oplog_start]
            self.oplog_start += 1

    def find_index(self, ot: OpTime) -> int | None:
        i = self.ts_index.get((ot[1], ot[2]))
        if i is None or int(self.oplog[i]["t"]) != ot[0]:
            return None
        return i

    async def _journal_loop(self) -> None:
        # Group commit: one fdatasync covers every entry appended before it started.
        while True:
            if self.durable >= self.applied:
                await self.wait_change(1.0)
                continue
            target = self.applied
            # fdatasync inline: cheaper than a thread hop for the small appends the simulator makes
            self.journal.sync()
            await asyncio.sleep(0)
            if target > self.durable:
                self.durable = target
                if self.opts.repl_set is None:
                    self.commit_point = max(self.commit_point, target)
                self._recompute_commit()
                self.notify()

    async def sync_journal(self) -> None:
        target = self.applied
        await self.wait_for(lambda: self.durable >= target or self.applied < target, 30)

    def majority_position(self, cfg: dict) -> OpTime:
        """The newest durable optime that a write majority of ``cfg``'s voters has (primary's view)."""
        maj = rsconfig.majorities(cfg)
        positions = []
        for m in cfg["members"]:
            if not rsconfig.is_voter(m) or m["arbiterOnly"]:
                continue
            if m["_id"] == self.my_id:
                positions.append(self.durable)
            else:
                positions.append(self.members.get(m["_id"], MemberInfo()).position)
        positions.sort(reverse=True)
        if len(positions) < maj.write_majority or maj.write_majority == 0:
            return NULL_OPTIME
        return positions[maj.write_majority - 1]

    def _recompute_commit(self) -> None:
        if self.state != PRIMARY or self.config is None:
            return
        cand = self.majority_position(self.config)
        if cand[0] == self.term and cand > self.commit_point:
            self.commit_point = cand
            self.notify()

    # ---- config --------------------------------------------------------------------------------

    def _install_config(self, cfg: dict, source: str) -> None:
        old_state = self.state
        self.config = cfg
        self.my_id = None
        for m in cfg["members"]:
            if self.is_self(m["host"]):
                self.my_id = m["_id"]
                break
        old = self.members
        self.members = {m["_id"]: old.get(m["_id"], MemberInfo()) for m in cfg["members"] if m["_id"] != self.my_id}
        if source != "disk":
            self.persist_state()
        me = self.me()
        if me is None:
            if self.state == PRIMARY:
                self.step_down("removed from config")
            self.state = REMOVED
        elif me["arbiterOnly"]:
            self.state = ARBITER
        elif self.state in (STARTUP, REMOVED):
            self.state = STARTUP2 if (source == "heartbeat" and not self.oplog) else SECONDARY
        if self.state == PRIMARY and me is not None and not rsconfig.electable(me):
            self.step_down("no longer electable")
        self._restart_heartbeats()
        if old_state != self.state:
            self._heard_from_primary()  # a fresh member waits a full election timeout before standing
        log.info("installed config version %s term %s from %s; state %s", cfg["version"], cfg["term"], source,
                 STATE_STR[self.state])
        self.topology_changed()

    def _restart_heartbeats(self) -> None:
        """As mongod on every config install (a reconfig, a config from a heartbeat, initiate): a heartbeat to every
        member now, carrying the new version, so the others learn of it, and answer it, without waiting an interval."""
        wanted = set(self.members) if self.config else set()
        for mid in list(self._hb_tasks):
            if mid not in wanted:
                self._hb_tasks.pop(mid).cancel()
                self._hb_wake.pop(mid, None)
        for mid in wanted:
            if mid not in self._hb_tasks:
                self._hb_wake[mid] = asyncio.Event()
                self._hb_tasks[mid] = asyncio.ensure_future(self._heartbeat_loop(mid))
            self._kick_heartbeat(mid)

    def config_committed(self) -> bool:
        """mongod's rule: the config is on a majority of its voters, a write of this term is majority-committed,
        and what was committed under the previous config is committed by this config's voters too."""
        if self.config is None or self.state != PRIMARY:
            return False
        return (self.new_config_installed_on_majority(self.config) and self.commit_point[0] == self.term
                and self.majority_position(self.config) >= self.config_oplog_commitment)

    def new_config_installed_on_majority(self, cfg: dict) -> bool:
        mine = (cfg["version"], cfg["term"])
        maj = rsconfig.majorities(cfg)
        n = 0
        for m in cfg["members"]:
            if not rsconfig.is_voter(m):
                continue
            if m["_id"] == self.my_id:
                n += 1
            else:
                info = self.members.get(m["_id"])
                if info and rsconfig.same_version((info.config_version, info.config_term), mine):
                    n += 1
        return n >= maj.majority_vote

    def install_new_config(self, cfg: dict) -> None:
        self.config_oplog_commitment = self.commit_point
        self._install_config(cfg, source="reconfig")

    def _kick_heartbeat(self, mid: int) -> None:
        """The member's next heartbeat goes now (after the one in flight, if any) and its schedule restarts from it."""
        wake = self._hb_wake.get(mid)
        if wake is not None:
            wake.set()

    # ---- heartbeats ----------------------------------------------------------------------------

    async def _heartbeat_loop(self, mid: int) -> None:
        wake = self._hb_wake[mid]
        while True:
            wake.clear()  # a kick while this heartbeat is in flight sends the next one right after it
            started = time.monotonic()
            retry = await self._one_heartbeat(mid)
            if retry:
                await asyncio.sleep(0.01)
                continue
            try:
                await asyncio.wait_for(wake.wait(), max(0.0, self.hb_interval - (time.monotonic() - started)))
            except TimeoutError:
                pass

    def heartbeat_request(self) -> dict:
        body = {"replSetHeartbeat": self.config["_id"] if self.config else self.opts.repl_set,
                "configVersion": self.config["version"] if self.config else -2,
                "configTerm": self.config["term"] if self.config else -1,
                "term": Int64(self.term), "from": self.my_host(), "fromId": self.my_id if self.my_id is not None
                else -1, "state": self.state}
        if self.config is not None:
            body["replicaSetId"] = self.config["settings"]["replicaSetId"]
        return body

    def _mark_down(self, mid: int, info: MemberInfo, message: str) -> None:
        info.failures = 0
        info.message = message
        if info.health == 0:
            return
        info.health = 0
        info.state = DOWN
        info.up_since = 0.0
        info.config_version = info.config_term = -1
        if mid == self.primary_id:
            self.primary_id = None
            self.topology_changed()

    async def _one_heartbeat(self, mid: int) -> bool:
        """One heartbeat; True asks for an immediate retry. As in mongod, a member is DOWN once it has not answered
        for heartbeatTimeoutSecs (a frozen or cut-off peer), or after three refused attempts in a row (a dead one)."""
        m = self.member_cfg(mid)
        if m is None:
            return False
        info = self.members.setdefault(mid, MemberInfo())
        sent = time.monotonic()
        info.last_hb = now_utc()
        period = float(self.settings.get("heartbeatTimeoutSecs", 10))
        budget = period - (sent - info.last_ok) if info.health == 1 else period
        try:
            resp = await self.peer(m["host"]).call(self.heartbeat_request(), max(0.05, budget))
        except NET_ERRORS as e:
            info.failures += 1
            if time.monotonic() - info.last_ok >= period or info.failures >= 3 or info.health != 1:
                self._mark_down(mid, info, f"Error connecting to {m['host']}: {type(e).__name__}")
                return False
            return True
        if not resp.get("ok"):
            self._mark_down(mid, info, str(resp.get("errmsg", "")))
            return False
        if self.config is not None and resp.get("replicaSetId") not in (None, self.config["settings"]["replicaSetId"]):
            # A member of another set of the same name: never adopt its view (mongod checks the metadata).
            self._mark_down(mid, info, f"replica set IDs do not match, ours: {self.config['settings']['replicaSetId']}"
                                       f"; remote node's: {resp['replicaSetId']}")
            return False
        info.failures = 0
        self.process_heartbeat_response(mid, resp, sent)
        return False

    def process_heartbeat_response(self, mid: int, resp: dict, sent: float) -> None:
        info = self.members.setdefault(mid, MemberInfo())
        now = time.monotonic()
        was_up = info.health == 1
        info.ping_ms = int((now - sent) * 1000)
        info.last_ok = now
        info.health = 1
        if not was_up:
            info.up_since = now - float(resp.get("uptime", 0))
        prev_state = info.state
        # What waiters (config commitment, write concern) decide on: any change wakes them, as mongod's
        # condition variables do, instead of leaving them to their next timed re-check.
        prev_progress = (info.config_version, info.config_term, info.applied, info.durable)
        info.state = int(resp.get("state", UNKNOWN))
        info.applied = ot_parse(resp.get("appliedOpTime"))
        info.durable = ot_parse(resp.get("durableOpTime"))
        info.config_version = int(resp.get("configVersion", -1))
        info.config_term = int(resp.get("configTerm", -1))
        info.sync_source = resp.get("syncingTo", "")
        info.election_time = resp.get("electionTime")
        info.term = int(resp.get("term", -1))
        info.message = ""
        if info.term > self.term:
            self.set_term(info.term)
        cfg = resp.get("config")
        if cfg is not None and self._may_adopt(cfg):
            self._install_config(cfg, source="heartbeat")
            return
        if info.state == PRIMARY and info.term >= self.term:
            if self.state == PRIMARY and mid != self.my_id:
                # Two primaries in one term cannot happen; the older term has already stepped down above.
                pass
            elif self.primary_id != mid:
                self.primary_id = mid
                self.topology_changed()
            self._heard_from_primary()
        elif self.primary_id == mid and info.state != PRIMARY:
            self.primary_id = None
            self.topology_changed()
        if prev_state != info.state or prev_progress != (info.config_version, info.config_term, info.applied,
                                                         info.durable):
            self.notify()
        m = self.member_cfg(mid)
        if self.state == PRIMARY and m is not None and m.get("newlyAdded") and info.state in (SECONDARY, RECOVERING,
                                                                                              ROLLBACK):
            self._remove_newly_added(mid)

    def _may_adopt(self, cfg: dict) -> bool:
        """A config from a heartbeat: newer, of our set name, and (once we have one) of our replica set id."""
        if cfg.get("_id") != (self.opts.repl_set or cfg.get("_id")):
            return False
        if self.config is None:
            return True
        return (rsconfig.newer(cfg, self.config)
                and cfg.get("settings", {}).get("replicaSetId") == self.config["settings"]["replicaSetId"])

    def _heard_from_primary(self) -> None:
        self.last_heard_primary = time.monotonic()
        self.election_deadline = self.last_heard_primary + self.election_timeout * (1 + random.uniform(0, 0.15))

    def handle_heartbeat(self, body: dict) -> dict:
        """Answer replSetHeartbeat (a member-to-member command)."""
        set_name = body.get("replSetHeartbeat")
        if self.opts.repl_set is None:
            raise CommandError("NoReplicationEnabled", "not running with --replSet")
        if set_name != self.opts.repl_set:
            raise CommandError("InvalidReplicaSetConfig", f"Our set name of {self.opts.repl_set} does not match "
                               f"name {set_name} reported by remote node")
        theirs = body.get("replicaSetId")
        if self.config is not None and theirs is not None and theirs != self.config["settings"]["replicaSetId"]:
            raise CommandError("InvalidReplicaSetConfig", f"replica set IDs do not match, ours: "
                               f"{self.config['settings']['replicaSetId']}; remote node's: {theirs}")
        sender_id = body.get("fromId", -1)
        sender_cfg = (int(body.get("configVersion", -2)), int(body.get("configTerm", -1)))
        if sender_id in self.members and self.config and self.host_of(sender_id) == body.get("from"):
            sender = self.members[sender_id]
            sender.last_hb_recv = now_utc()
            if (rsconfig.same_version(sender_cfg, rsconfig.version_key(self.config))
                    and not rsconfig.same_version((sender.config_version, sender.config_term), sender_cfg)):
                # mongod takes a member's config version only from a heartbeat *response*; when a request shows the
                # member now has our config, it heartbeats the member at once so waiters on that config wake now.
                self._kick_heartbeat(sender_id)
        if int(body.get("term", -1)) > self.term and self.config is not None:
            self.set_term(int(body["term"]))
        resp: dict[str, Any] = {"ok": 1.0, "set": self.opts.repl_set, "state": self.state,
                                "term": Int64(self.term), "uptime": int(time.monotonic() - self.start_time),
                                "appliedOpTime": ot_doc(self.applied), "durableOpTime": ot_doc(self.durable),
                                "syncingTo": self.sync_source}
        if self.config is None:
            resp["configVersion"] = -2
            resp["configTerm"] = -1
            if sender_cfg[0] > 0 and body.get("from"):
                self._fetch_config(body["from"])
            return resp
        resp["configVersion"] = self.config["version"]
        resp["configTerm"] = self.config["term"]
        resp["replicaSetId"] = self.config["settings"]["replicaSetId"]
        if self.state == PRIMARY:
            resp["electionTime"] = self.election_time
        if sender_cfg[0] < 0 or rsconfig.newer(self.config, sender_cfg):
            resp["config"] = self.config
        elif rsconfig.newer(sender_cfg, self.config) and body.get("from"):
            self._fetch_config(body["from"])
        return resp

    def _fetch_config(self, host: str) -> None:
        async def fetch() -> None:
            try:
                resp = await self.peer(host, "cfg").call(self.heartbeat_request(), 5)
            except NET_ERRORS:
                return
            cfg = resp.get("config")
            if resp.get("ok") and cfg and self._may_adopt(cfg):
                self._install_config(cfg, source="heartbeat")
        asyncio.ensure_future(fetch())

    # ---- elections -----------------------------------------------------------------------------

    def can_stand(self) -> bool:
        me = self.me()
        return (me is not None and rsconfig.electable(me) and self.state == SECONDARY
                and time.monotonic() >= self.frozen_until and not self.shutting_down)

    async def _election_loop(self) -> None:
        self._heard_from_primary()
        while True:
            await asyncio.sleep(min(0.05, self.hb_interval / 4))
            if self.config is None:
                continue
            now = time.monotonic()
            if self.state == PRIMARY:
                self._check_primary_liveness(now)
                continue
            if self._electing or not self.can_stand():
                if self.state != SECONDARY:
                    self._heard_from_primary()
                continue
            voters = [m for m in self.config["members"] if rsconfig.is_voter(m)]
            if len(voters) == 1 and voters[0]["_id"] == self.my_id:
                await self.run_election("singleNodePromptElection", skip_dry_run=True)
                continue
            primary = self.members.get(self.primary_id) if self.primary_id is not None else None
            if primary is not None and primary.health == 1 and primary.state == PRIMARY:
                if self._takeover_candidate(primary):
                    if self._takeover_since == 0.0:
                        # mongod schedules a priority takeover one election timeout (plus its random offset)
                        # after it finds itself caught up with a lower-priority primary.
                        self._takeover_since = now + self.election_timeout * (1 + random.uniform(0, 0.15))
                    elif now >= self._takeover_since:
                        self._takeover_since = 0.0
                        await self.run_election("priorityTakeover")
                        continue
                else:
                    self._takeover_since = 0.0
            if now >= self.election_deadline:
                await self.run_election("electionTimeout")

    def _remove_newly_added(self, mid: int) -> None:
        """mongod's automatic reconfig that makes a synced newlyAdded member a voter, tried on each heartbeat response
        from it in SECONDARY, RECOVERING or ROLLBACK. It gives up at once when another reconfig runs or the current
        config is not committed yet; the member's next heartbeat response tries again."""
        if self.reconfig_running or not self.config_committed():
            return
        self.reconfig_running = True  # from now on, as for a user's reconfig: another one gets 109
        asyncio.ensure_future(self._reconfig_without_newly_added(mid))

    async def _reconfig_without_newly_added(self, mid: int) -> None:
        assert self.config is not None and self.my_id is not None
        term = self.term
        try:
            cfg = copy.deepcopy(self.config)
            # one member per automatic reconfig: each changes one voter, as every safe reconfig must
            member = next((m for m in cfg["members"] if m["_id"] == mid and m.get("newlyAdded")), None)
            if member is None:
                return
            member.pop("newlyAdded")
            cfg["version"] += 1
            cfg["term"] = term
            try:
                await self.server.reconfig_quorum_check(cfg, self.my_id)
            except CommandError as e:
                log.info("automatic reconfig for member %s failed its quorum check: %s", mid, e.message)
                return
            if (self.state != PRIMARY or self.term != term or self.config["version"] + 1 != cfg["version"]
                    or not self.config_committed()):
                return
            log.info("automatic reconfig: member %s is no longer newlyAdded", mid)
            self.install_new_config(cfg)
        finally:
            self.reconfig_running = False

    def _takeover_candidate(self, primary: MemberInfo) -> bool:
        me, pcfg = self.me(), self.member_cfg(self.primary_id)
        if me is None or pcfg is None or me["priority"] <= pcfg["priority"]:
            return False
        if self.applied < primary.applied:
            return False
        for mid, info in self.members.items():
            m = self.member_cfg(mid)
            if m and info.health == 1 and rsconfig.electable(m) and m["priority"] > me["priority"]:
                return False
        return True

    def _check_primary_liveness(self, now: float) -> None:
        assert self.config is not None
        maj = rsconfig.majorities(self.config)
        seen = 0
        for m in self.config["members"]:
            if not rsconfig.is_voter(m):
                continue
            if m["_id"] == self.my_id or now - self.members.get(m["_id"], MemberInfo()).last_ok < self.election_timeout:
                seen += 1
        if seen < maj.majority_vote:
            self.step_down("cannot see a majority of voting members")

    async def run_election(self, reason: str, skip_dry_run: bool = False) -> bool:
        if self._electing or self.config is None:
            return False
        self._electing = True
        try:
            if not skip_dry_run and not await self._request_votes(self.term + 1, dry_run=True):
                self._heard_from_primary()
                return False
            if not self.can_stand():
                return False
            self.term += 1
            self.voted = (self.term, self.my_id)
            self.persist_state()
            term = self.term
            won = await self._request_votes(term, dry_run=False)
            if won and self.term == term and self.state == SECONDARY:
                self._become_primary(reason)
                return True
            self._heard_from_primary()
            return False
        finally:
            self._electing = False

    async def _request_votes(self, term: int, dry_run: bool) -> bool:
        assert self.config is not None
        maj = rsconfig.majorities(self.config)
        body = {"replSetRequestVotes": 1, "setName": self.config["_id"], "dryRun": dry_run, "term": Int64(term),
                "candidateIndex": self._my_index(), "configVersion": self.config["version"],
                "configTerm": self.config["term"], "lastAppliedOpTime": ot_doc(self.applied),
                "from": self.my_host()}
        others = [m for m in self.config["members"] if rsconfig.is_voter(m) and m["_id"] != self.my_id]
        votes = 1
        if votes >= maj.majority_vote:
            return True

        async def ask(m: dict) -> dict | None:
            try:
                return await self.peer(m["host"], "vote").call(body, self.election_timeout)
            except NET_ERRORS:
                return None

        pending = {asyncio.ensure_future(ask(m)) for m in others}
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for d in done:
                    r = d.result()
                    if not r or not r.get("ok"):
                        continue
                    if int(r.get("term", 0)) > self.term:
                        self.set_term(int(r["term"]))
                        return False
                    if r.get("voteGranted"):
                        votes += 1
                if votes >= maj.majority_vote:
                    return True
            return False
        finally:
            for p in pending:
                p.cancel()

    def _my_index(self) -> int:
        assert self.config is not None
        return next(i for i, m in enumerate(self.config["members"]) if m["_id"] == self.my_id)

    def handle_request_votes(self, body: dict) -> dict:
        term = int(body["term"])
        dry = bool(body.get("dryRun"))
        index = body.get("candidateIndex")

        def answer(granted: bool, reason: str) -> dict:
            return {"ok": 1.0, "term": Int64(self.term), "voteGranted": granted, "reason": reason}

        if self.config is None or body.get("setName") != self.config["_id"]:
            return answer(False, "candidate's set name differs from mine")
        if self.me() is None or not rsconfig.is_voter(self.me()):
            return answer(False, "I am not a voting member")
        if term < self.term:
            return answer(False, f"candidate's term ({term}) is lower than mine ({self.term})")
        if not isinstance(index, int) or not 0 <= index < len(self.config["members"]):
            return answer(False, f"candidate index {index} is not in my config")
        cand = self.config["members"][index]["_id"]
        if not dry and term > self.term:
            self.set_term(term)  # mongod takes the newer term before it decides on the vote
        cand_cfg = (int(body.get("configVersion", 0)), int(body.get("configTerm", -1)))
        if rsconfig.newer(self.config, cand_cfg):
            return answer(False, "candidate's config is older than mine")
        if ot_parse(body.get("lastAppliedOpTime")) < self.applied:
            return answer(False, "candidate's data is staler than mine")
        if dry:
            if self.voted and self.voted[0] == term:
                return answer(False, "already voted for another candidate in this term")
            return answer(True, "")
        if self.voted and self.voted[0] == term and self.voted[1] != cand:
            return answer(False, f"already voted for another candidate ({self.host_of(self.voted[1])}) this term "
                                 f"({term})")
        self.voted = (term, cand)
        self.persist_state()
        self._heard_from_primary()  # do not stand ourselves right after voting
        return answer(True, "")

    def _become_primary(self, reason: str) -> None:
        assert self.config is not None
        log.info("election won (%s) in term %s", reason, self.term)
        self.last_election_reason = reason
        self.state = PRIMARY
        self.primary_id = self.my_id
        self.election_id = ObjectId(f"7fffffff{self.term:016x}")
        for info in self.members.values():
            info.position = NULL_OPTIME
        self.log_ops([{"op": "n", "ns": "", "o": {"msg": "new primary"}}])
        self.election_time = self.oplog[-1]["ts"]
        self.election_date = now_utc()
        cfg = dict(self.config)
        cfg["term"] = self.term
        self.config = cfg
        self.persist_state()
        self.topology_changed()
        for mid in list(self.members):
            self._kick_heartbeat(mid)

    def step_down(self, reason: str) -> None:
        if self.state != PRIMARY:
            return
        log.info("stepping down: %s", reason)
        self.state = SECONDARY
        self.primary_id = None
        self.election_id = None
        self._heard_from_primary()
        self.topology_changed()

    # ---- replication (pull side) -----------------------------------------------------------------

    def choose_source(self) -> tuple[int, str] | None:
        if self.config is None:
            return None
        if self.primary_id is not None and self.primary_id != self.my_id:
            info = self.members.get(self.primary_id)
            if info and info.health == 1 and not self.blocked(self.host_of(self.primary_id)):
                return self.primary_id, self.host_of(self.primary_id)
        if not self.config["settings"].get("chainingAllowed", True):
            return None  # chainingAllowed: false — a secondary syncs from the primary only
        best = None
        for mid, info in self.members.items():
            m = self.member_cfg(mid)
            if not m or m["arbiterOnly"] or info.health != 1 or info.state not in (PRIMARY, SECONDARY):
                continue
            if self.blocked(m["host"]) or info.applied <= self.applied:
                continue
            if best is None or info.applied > best[0]:
                best = (info.applied, mid, m["host"])
        return (best[1], best[2]) if best else None

    async def _sync_loop(self) -> None:
        while True:
            if self.config is None or self.state not in (SECONDARY, STARTUP2, RECOVERING, ROLLBACK):
                self.sync_source, self.sync_source_id = "", -1
                await self.wait_change(0.5)
                continue
            src = None if self.stop_repl_producer else self.choose_source()
            if src is None:
                self.sync_source, self.sync_source_id = "", -1
                await self.wait_change(min(self.hb_interval, 0.5))
                continue
            sid, host = src
            self.sync_source, self.sync_source_id = host, sid
            try:
                await self._pull_once(sid, host)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ConnectionError, wire.ProtocolError):
                await asyncio.sleep(min(self.hb_interval, 0.2))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sync from %s failed", host)
                await asyncio.sleep(0.5)

    async def _pull_once(self, sid: int, host: str) -> None:
        wait_ms = int(min(self.hb_interval, 0.5) * 1000)
        body = {"_mongosimPull": 1, "after": ot_doc(self.applied) if self.oplog else None,
                "durable": ot_doc(self.durable), "applied": ot_doc(self.applied), "fromId": self.my_id,
                "from": self.my_host(), "term": Int64(self.term), "maxWaitMS": wait_ms}
        resp = await self.peer(host, "pull").call(body, wait_ms / 1000 + 5)
        if self.blocked(host):
            return  # a partition was set while this reply was in flight
        if not resp.get("ok"):
            await asyncio.sleep(0.2)
            return
        if int(resp.get("term", -1)) > self.term:
            self.set_term(int(resp["term"]))
        if self.state == PRIMARY:
            return
        if resp.get("rollback"):
            await self._rollback(host)
            return
        if resp.get("tooStale"):
            # Our last entry has fallen off the source's capped oplog: mongod stays RECOVERING until resynced.
            if not self.too_stale:
                log.warning("too stale to catch up from %s: its oldest entry is newer than our last", host)
            self.too_stale = True
            if self.state in (SECONDARY, STARTUP2):
                self.state = RECOVERING
                self.topology_changed()
            await asyncio.sleep(min(self.hb_interval, 0.5))
            return
        entries = resp.get("entries", [])
        if entries and self.oplog and optime_of(entries[0]) <= self.applied:
            return  # stale batch (our oplog moved meanwhile)
        me = self.me()
        delay = int(me["secondaryDelaySecs"]) if me and self.state != STARTUP2 else 0
        if delay and entries:
            # A delayed secondary applies an entry only once it is secondaryDelaySecs old.
            cutoff = (now_utc() - datetime.timedelta(seconds=delay)).replace(tzinfo=None)
            ready = 0
            while ready < len(entries) and entries[ready]["wall"].replace(tzinfo=None) <= cutoff:
                ready += 1
            if ready < len(entries):
                entries = entries[:ready]
                await asyncio.sleep(min(self.hb_interval, 0.5))
        if entries:
            self._append_remote(entries)
            self.journal.sync()
            self.durable = max(self.durable, self.applied)
        cp = ot_parse(resp.get("commitPoint"))
        cp = min(cp, self.applied)
        self.commit_point = max(self.commit_point, cp)
        if self.state == STARTUP2 and self.applied >= ot_parse(resp.get("last")):
            self.state = SECONDARY
            self.topology_changed()
        if self.too_stale and entries:
            self.too_stale = False
            if self.state == RECOVERING:
                self.state = SECONDARY
                self.topology_changed()
        self.notify()

    async def _rollback(self, host: str) -> None:
        log.info("rolling back: our oplog diverged from %s", host)
        prev = self.state
        self.state = ROLLBACK
        self.topology_changed()
        try:
            common = -1
            i = len(self.oplog) - 1
            while i >= 0:
                lo = max(0, i - 999)
                chunk = [ot_doc(optime_of(e)) for e in reversed(self.oplog[lo:i + 1])]
                resp = await self.peer(host, "pull").call({"_mongosimFindCommon": 1, "optimes": chunk}, 10)
                found = resp.get("found")
                if found is not None:
                    idx = self.find_index(ot_parse(found))
                    common = idx if idx is not None else -1
                    break
                i = lo - 1
            dropped = len(self.oplog) - (common + 1)
            self.oplog = self.oplog[:common + 1]
            if self.opts.oplog_size_mb is not None:
                self._oplog_sizes = self._oplog_sizes[:common + 1]
                self.oplog_start = min(self.oplog_start, max(0, len(self.oplog) - 1))
                self._oplog_bytes = sum(self._oplog_sizes[self.oplog_start:])
            self.journal.rewrite(self.oplog)
            self.store = Store()
            self.ts_index = {}
            for j, e in enumerate(self.oplog):
                self.store.apply(e)
                self.ts_index[(e["ts"].time, e["ts"].inc)] = j
            self.durable = self.applied
            self.commit_point = min(self.commit_point, self.applied)
            log.info("rollback done: %d entries discarded", dropped)
        finally:
            self.state = SECONDARY if prev != STARTUP2 else STARTUP2
            self.topology_changed()

    # ---- replication (source side) ---------------------------------------------------------------

    async def handle_pull(self, body: dict) -> dict:
        if body.get("from") and self.blocked(body["from"]):
            raise ConnectionError("dropped by failpoint")
        if int(body.get("term", -1)) > self.term:
            self.set_term(int(body["term"]))
        deadline = time.monotonic() + int(body.get("maxWaitMS", 500)) / 1000
        after = body.get("after")
        while True:
            if after is None:
                start = 0
            else:
                idx = self.find_index(ot_parse(after))
                if idx is None:
                    return {"ok": 1.0, "rollback": True, "term": Int64(self.term)}
                if idx + 1 < self.oplog_start:
                    return {"ok": 1.0, "tooStale": True, "term": Int64(self.term),
                            "oldest": ot_doc(optime_of(self.oplog[self.oplog_start]))}
                start = idx + 1
            fid = body.get("fromId")
            if self.state == PRIMARY and fid in self.members:
                info = self.members[fid]
                reported = min(ot_parse(body.get("durable")), ot_parse(after) if after else NULL_OPTIME)
                if reported > info.position:
                    info.position = reported
                    self._recompute_commit()
            if start < len(self.oplog) or time.monotonic() >= deadline or self.shutting_down:
                break
            await self.wait_change(deadline - time.monotonic())
            if body.get("from") and self.blocked(body["from"]):
                raise ConnectionError("dropped by failpoint")
        return {"ok": 1.0, "entries": self.oplog[start:start + PULL_BATCH], "commitPoint": ot_doc(self.commit_point),
                "term": Int64(self.term), "last": ot_doc(self.applied)}

    def handle_find_common(self, body: dict) -> dict:
        for d in body.get("optimes", []):
            if self.find_index(ot_parse(d)) is not None:
                return {"ok": 1.0, "found": d}
        return {"ok": 1.0, "found": None}

    # ---- write concern ---------------------------------------------------------------------------

    async def await_write_concern(self, optime: OpTime, wc: dict | None, term: int) -> dict | None:
        """Wait for the write concern; return a writeConcernError document or None."""
        wc = wc or {}
        w = wc.get("w", 1)
        j = wc.get("j")
        timeout_ms = wc.get("wtimeout", 0) or 0
        timeout = None if not timeout_ms else timeout_ms / 1000
        if w in (0,) and not j:
            return None
        if self.opts.repl_set is None or w == 1 or w == 0:
            if j:
                await self.sync_journal()
            return None
        if self.config is None:
            return None
        if w == "majority":
            def done() -> bool:
                return self.commit_point >= optime or self.term != term or self.state != PRIMARY
        elif isinstance(w, int):
            def done() -> bool:
                n = 1 + sum(1 for i in self.members.values() if i.position >= optime)
                return n >= w or self.term != term or self.state != PRIMARY
        else:
            return {"code": 79, "codeName": "UnknownReplWriteConcern", "errmsg": f"unrecognized write concern {w}"}
        ok = await self.wait_for(done, timeout)
        if w == "majority" and self.commit_point >= optime:
            return None
        if isinstance(w, int) and ok and self.state == PRIMARY and self.term == term:
            return None
        if self.state != PRIMARY or self.term != term:
            return {"code": 189, "codeName": "PrimarySteppedDown",
                    "errmsg": "Primary stepped down while waiting for replication",
                    "errorLabels": ["RetryableWriteError"]}
        return {"code": 64, "codeName": "WriteConcernFailed", "errmsg": "waiting for replication timed out",
                "errInfo": {"wtimeout": True, "writeConcern": {"w": w, "wtimeout": timeout_ms,
                                                               "provenance": "clientSupplied"}}}

    async def read_majority_store(self) -> Store:
        """A store holding only majority-committed data (waits briefly, else replays up to the commit point)."""
        if await self.wait_for(lambda: self.commit_point >= self.applied, 1.0):
            return self.store
        snap = Store()
        for e in self.oplog:
            if optime_of(e) > self.commit_point:
                break
            snap.apply(e)
        return snap

    async def read_snapshot_store(self, at: Timestamp | None, max_time_ms: int | None) -> tuple[Store, Timestamp]:
        """readConcern snapshot: the data as of `at` (default: the majority commit point), and that timestamp.

        Like mongod, a timestamp beyond the majority commit point waits for the commit point to reach it (bounded
        by maxTimeMS). The simulator keeps its whole oplog, so it has no snapshot history window (no SnapshotTooOld).
        """
        if at is None:
            at = Timestamp(self.commit_point[1], self.commit_point[2])
        elif (at.time, at.inc) > (self.applied[1], self.applied[2]):
            # The node's last applied optime stands for its cluster time (the simulator gossips none).
            raise CommandError("InvalidOptions", f"readConcern atClusterTime value {at} must not be greater than "
                               "the current clusterTime")
        elif not await self.wait_for(lambda: (self.commit_point[1], self.commit_point[2]) >= (at.time, at.inc),
                                     (max_time_ms or 60000) / 1000):
            raise CommandError("MaxTimeMSExpired", f"operation exceeded time limit waiting for the majority "
                               f"snapshot to reach {at}")
        snap = Store()
        for e in self.oplog:
            if (e["ts"].time, e["ts"].inc) > (at.time, at.inc):
                break
            snap.apply(e)
        return snap, at


def _local_ips() -> set[str]:
    try:
        return {ai[4][0] for ai in socket.getaddrinfo(socket.gethostname(), None)}
    except OSError:
        return set()
