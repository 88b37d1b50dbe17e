"""The asyncio server: connections, the command dispatcher, handshake/admin and replica-set commands."""
from __future__ import annotations

import asyncio
import datetime
import itertools
import logging
import os
import random
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bson.int64 import Int64

from . import MODELLED_VERSION, __version__, rsconfig, tls, wire
from .auth import AUTH_COMMANDS, HANDSHAKE_COMMANDS, Security
from .crud import Crud
from .errors import RETRYABLE_CODES, CommandError
from .node import (
    ARBITER,
    DOWN,
    EPOCH,
    NET_ERRORS,
    PRIMARY,
    REMOVED,
    SECONDARY,
    STARTUP,
    STARTUP2,
    STATE_STR,
    Node,
    Options,
    now_utc,
    ot_date,
    ot_doc,
)

log = logging.getLogger("mongosim")
_conn_ids = itertools.count(1)
INTERNAL = {"replSetHeartbeat", "replSetRequestVotes", "_mongosimPull", "_mongosimFindCommon", "replSetStepUp"}
WRITE_COMMANDS = {"insert", "update", "delete", "findAndModify", "findandmodify"}
# "not primary" and "node is recovering" errors (SDAM), which carry the server's topologyVersion
STATE_CHANGE_CODES = {91, 189, 10107, 11600, 11602, 13435, 13436}


class Connection:
    """Per-connection state (Security keeps its own data in ``auth``)."""

    def __init__(self, peer: tuple, local: tuple) -> None:
        self.id = next(_conn_ids)
        self.peer_host, self.peer_port = peer[0], peer[1]
        self.local_host = local[0] if local else ""
        self.client_metadata: dict | None = None
        self.auth: dict = {}
        self.internal = False
        self.peer_certificate: bytes | None = None  # DER, verified against CAFile (TLS clients that sent one)


class Server:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        # Security gets this (not yet fully built) Server; it must not use it before start().
        self.security = Security(opts.key_file, opts.auth, self, opts.tls)
        self.node = Node(opts, self.security)
        self.node.server = self
        self.crud = Crud(self)
        self.servers: list[asyncio.base_events.Server] = []
        # With TLS enabled the listening sockets are accepted by hand, so each connection can be told apart first.
        self.listeners: list[socket.socket] = []
        self.accept_tasks: list[asyncio.Task] = []
        self.server_tls: ssl.SSLContext | None = None
        self.stopped = asyncio.Event()
        self.connections: set[asyncio.StreamWriter] = set()
        c = self.crud
        self.commands: dict[str, Callable[[Connection, str, dict], Awaitable[dict]]] = {
            "insert": c.insert, "update": c.update, "delete": c.delete, "findAndModify": c.find_and_modify,
            "findandmodify": c.find_and_modify, "find": c.find, "getMore": c.get_more,
            "killCursors": c.kill_cursors, "count": c.count, "distinct": c.distinct, "aggregate": c.aggregate,
            "create": c.create, "createIndexes": c.create_indexes, "listIndexes": c.list_indexes,
            "dropIndexes": c.drop_indexes, "deleteIndexes": c.drop_indexes, "drop": c.drop,
            "dropDatabase": c.drop_database, "listCollections": c.list_collections,
            "listDatabases": c.list_databases,
            "hello": self.hello, "isMaster": self.hello, "ismaster": self.hello, "ping": self.ping,
            "buildInfo": self.build_info, "buildinfo": self.build_info, "serverStatus": self.server_status,
            "endSessions": self.ok, "refreshSessions": self.ok, "startSession": self.start_session,
            "getParameter": self.get_parameter, "setParameter": self.set_parameter,
            "getCmdLineOpts": self.get_cmd_line_opts, "whatsmyuri": self.whatsmyuri, "hostInfo": self.host_info,
            "getLog": self.get_log, "fsync": self.fsync, "getDefaultRWConcern": self.get_default_rw,
            "replSetInitiate": self.repl_set_initiate, "replSetGetConfig": self.repl_set_get_config,
            "replSetGetStatus": self.repl_set_get_status, "replSetReconfig": self.repl_set_reconfig,
            "replSetStepDown": self.repl_set_step_down, "replSetFreeze": self.repl_set_freeze,
            "replSetStepUp": self.repl_set_step_up, "shutdown": self.shutdown_cmd,
            "replSetHeartbeat": self.heartbeat, "replSetRequestVotes": self.request_votes,
            "_mongosimPull": self.pull, "_mongosimFindCommon": self.find_common,
            "configureFailPoint": self.configure_fail_point,
        }

    # ---- server lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        self.node.load()
        settings = self.opts.tls
        if settings.enabled:
            # Built once: a certificate or CA file that cannot be used stops the start, as with mongod.
            self.server_tls = tls.server_context(settings)
            if settings.outbound:
                self.node.client_tls = tls.client_context(settings)
            for ip in self.opts.bind_ips:
                sock = socket.create_server((ip, self.opts.port), family=socket.AF_INET6 if ":" in ip else socket.AF_INET)
                sock.setblocking(False)
                self.listeners.append(sock)
                self.accept_tasks.append(asyncio.ensure_future(self._accept(sock)))
        else:
            for ip in self.opts.bind_ips:
                srv = await asyncio.start_server(self._serve, ip, self.opts.port, reuse_address=True)
                self.servers.append(srv)
        self.node.start()
        log.info("mongosim %s (simulates MongoDB %s) listening on %s:%s", __version__, MODELLED_VERSION,
                 ",".join(self.opts.bind_ips), self.opts.port)
        log.info("Waiting for connections")  # the line mongod prints once it accepts clients

    async def stop(self) -> None:
        self.node.shutting_down = True
        for s in self.servers:
            s.close()
        for t in self.accept_tasks:
            t.cancel()
        for sock in self.listeners:
            sock.close()
        for w in list(self.connections):
            w.close()
        self.node.shutdown()
        self.stopped.set()

    async def _accept(self, listener: socket.socket) -> None:
        """The TLS-enabled listener: every connection is classified by its first bytes (see tls.classify)."""
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(listener)
            asyncio.ensure_future(self._open(conn))

    async def _open(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            kind = await tls.classify(conn)
            if kind == "http":
                await loop.sock_sendall(conn, tls.HTTP_REPLY)
                conn.close()
                return
            if kind == "plain" and self.opts.tls.mode == "requireTLS":
                # mongod: "The server is configured to only allow SSL connections"; no wire reply, just closed.
                log.info("Error receiving request from client. Ending connection from remote: SSLHandshakeFailed: "
                         "The server is configured to only allow SSL connections")
                conn.close()
                return
            reader = asyncio.StreamReader()
            protocol = asyncio.StreamReaderProtocol(reader)
            if kind == "tls":
                transport, _ = await loop.connect_accepted_socket(lambda: protocol, conn, ssl=self.server_tls,
                                                                  ssl_handshake_timeout=tls.FIRST_BYTES_TIMEOUT)
            else:
                transport, _ = await loop.connect_accepted_socket(lambda: protocol, conn)
        except (OSError, asyncio.CancelledError, TimeoutError) as e:
            if not isinstance(e, asyncio.CancelledError):
                log.info("Error receiving request from client. Ending connection from remote: SSLHandshakeFailed: "
                         "%s", e)
            conn.close()
            return
        await self._serve(reader, asyncio.StreamWriter(transport, protocol, reader, loop))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(writer.get_extra_info("peername") or ("", 0), writer.get_extra_info("sockname"))
        ssl_object = writer.get_extra_info("ssl_object")
        if ssl_object is not None:
            conn.peer_certificate = ssl_object.getpeercert(binary_form=True)
        self.connections.add(writer)
        try:
            while True:
                req = await wire.read_request(reader)
                reply = await self.dispatch(conn, req)
                if reply is None:
                    if req.body.get("_drop"):
                        break
                    continue
                if req.legacy:
                    writer.write(wire.encode_reply(reply, req.request_id))
                elif not req.flags & wire.MORE_TO_COME:
                    writer.write(wire.encode_msg(reply, req.request_id))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, wire.ProtocolError, OSError,
                asyncio.CancelledError):
            pass
        finally:
            self.connections.discard(writer)
            writer.close()

    async def dispatch(self, conn: Connection, req: wire.Request) -> dict | None:
        body = req.body
        if not body:
            return CommandError("FailedToParse", "empty command").to_doc()
        name = next(iter(body))
        db = req.db
        try:
            if name in AUTH_COMMANDS:
                return await self.security.handle(conn, name, db, body)
            handler = self.commands.get(name)
            if handler is None:
                raise CommandError("CommandNotFound", f"no such command: '{name}'")
            if name not in HANDSHAKE_COMMANDS:
                self.security.check(conn, name, db, body)
            return await handler(conn, db, body)
        except ConnectionError:
            body["_drop"] = True
            return None
        except CommandError as e:
            doc = e.to_doc()
            if e.code in STATE_CHANGE_CODES:
                # As mongod 4.4+: drivers compare it with their view and ignore a stale "not primary".
                n = self.node
                doc["topologyVersion"] = {"processId": n.process_id, "counter": Int64(n.topology_counter)}
            if body.get("txnNumber") is not None and name in WRITE_COMMANDS and e.code in RETRYABLE_CODES:
                doc.setdefault("errorLabels", []).append("RetryableWriteError")
            return doc
        except Exception as e:
            log.exception("command %s failed", name)
            return {"ok": 0.0, "errmsg": f"simulator internal error: {e!r}", "code": 1, "codeName": "InternalError"}

    # ---- role checks used by commands ------------------------------------------------------------

    def require_writable(self, db: str, body: dict) -> None:
        if self.opts.repl_set is None:
            return
        if self.node.state != PRIMARY or self.node.stepping_down is not None:
            raise CommandError("NotWritablePrimary", "not primary")

    def require_readable(self, body: dict) -> None:
        if self.opts.repl_set is None:
            return
        st = self.node.state
        if st == PRIMARY:
            return
        pref = (body.get("$readPreference") or {}).get("mode", "primary")
        if st == SECONDARY and pref != "primary":
            return
        if st == SECONDARY:
            raise CommandError("NotPrimaryNoSecondaryOk", "not primary and secondaryOk=false")
        raise CommandError("NotPrimaryOrSecondary", "node is not in primary or recovering state")

    def write_concern(self, body: dict) -> dict:
        wc = body.get("writeConcern")
        if wc is None and self.node.config is not None:
            wc = {"w": "majority"}  # MongoDB 5.0+ implicit default write concern
        return wc or {}

    async def find_local(self, db: str, coll: str, flt: dict | None) -> list[dict]:
        c = self.node.store.coll(db, coll)
        return [dict(d) for d in c.find(flt)] if c is not None else []

    async def apply_local_write(self, db: str, coll: str, op: dict) -> dict:
        if self.opts.repl_set is not None and self.node.state != PRIMARY:
            raise CommandError("NotWritablePrimary", "not primary")
        return await self.crud.apply_local_write(db, coll, op)

    # ---- handshake / admin -------------------------------------------------------------------------

    async def ok(self, conn: Connection, db: str, body: dict) -> dict:
        return {"ok": 1.0}

    async def ping(self, conn: Connection, db: str, body: dict) -> dict:
        return {"ok": 1.0}

    async def start_session(self, conn: Connection, db: str, body: dict) -> dict:
        import uuid

        from bson.binary import Binary
        return {"id": {"id": Binary.from_uuid(uuid.uuid4())}, "timeoutMinutes": 30, "ok": 1.0}

    def hello_doc(self, conn: Connection, body: dict, legacy_name: bool) -> dict:
        n = self.node
        doc: dict[str, Any] = {}
        primary_flag = self.opts.repl_set is None or n.state == PRIMARY
        doc["ismaster" if legacy_name else "isWritablePrimary"] = primary_flag
        doc["topologyVersion"] = {"processId": n.process_id, "counter": Int64(n.topology_counter)}
        if self.opts.repl_set is not None:
            cfg = n.config
            me = n.me()
            if cfg is None or me is None:
                doc["secondary"] = False
                doc["info"] = "Does not have a valid replica set config"
                doc["isreplicaset"] = True
            else:
                hosts, passives, arbiters = [], [], []
                for m in cfg["members"]:
                    if m["hidden"] or m["secondaryDelaySecs"] > 0:
                        continue  # mongod leaves hidden and delayed members out of hello
                    if m["arbiterOnly"]:
                        arbiters.append(m["host"])
                    elif m["priority"] == 0 or m.get("newlyAdded"):
                        passives.append(m["host"])
                    else:
                        hosts.append(m["host"])
                doc["hosts"] = hosts
                if passives:
                    doc["passives"] = passives
                if arbiters:
                    doc["arbiters"] = arbiters
                doc["setName"] = cfg["_id"]
                doc["setVersion"] = cfg["version"]
                doc["secondary"] = n.state == SECONDARY
                if n.primary_id is not None:
                    doc["primary"] = n.host_of(n.primary_id)
                if n.state == ARBITER:
                    doc["arbiterOnly"] = True
                if me["priority"] == 0 and not me["arbiterOnly"]:
                    doc["passive"] = True
                if me["hidden"]:
                    doc["hidden"] = True
                if me["tags"]:
                    doc["tags"] = me["tags"]
                doc["me"] = me["host"]
                if n.state == PRIMARY and n.election_id is not None:
                    doc["electionId"] = n.election_id
                doc["lastWrite"] = {"opTime": ot_doc(n.applied), "lastWriteDate": ot_date(n.applied),
                                    "majorityOpTime": ot_doc(n.commit_point),
                                    "majorityWriteDate": ot_date(n.commit_point)}
        doc.update({"maxBsonObjectSize": 16 * 1024 * 1024, "maxMessageSizeBytes": 48_000_000,
                    "maxWriteBatchSize": 100_000, "localTime": now_utc(), "logicalSessionTimeoutMinutes": 30,
                    "connectionId": conn.id, "minWireVersion": 0, "maxWireVersion": 21, "readOnly": False})
        if body.get("helloOk"):
            doc["helloOk"] = True
        doc.update(self.security.hello_fields(conn, body))
        doc["ok"] = 1.0
        return doc

    async def hello(self, conn: Connection, db: str, body: dict) -> dict:
        name = next(iter(body))
        if "client" in body and conn.client_metadata is None:
            conn.client_metadata = body["client"]
        tv = body.get("topologyVersion")
        wait_ms = body.get("maxAwaitTimeMS")
        if tv is not None and wait_ms is not None:
            n = self.node
            if tv.get("processId") == n.process_id and int(tv.get("counter", -1)) == n.topology_counter:
                counter = n.topology_counter
                await n.wait_for(lambda: n.topology_counter != counter or n.shutting_down, int(wait_ms) / 1000)
        return self.hello_doc(conn, body, name != "hello")

    async def build_info(self, conn: Connection, db: str, body: dict) -> dict:
        return {"version": MODELLED_VERSION, "gitVersion": "mongosim", "versionArray": [7, 0, 0, 0],
                "modules": [], "allocator": "system", "javascriptEngine": "none", "sysInfo": "deprecated",
                "bits": 64, "debug": False, "maxBsonObjectSize": 16 * 1024 * 1024, "storageEngines": ["mongosim"],
                "simulator": f"mongosim {__version__} (a simulator, not MongoDB)", "openssl": {}, "ok": 1.0}

    async def server_status(self, conn: Connection, db: str, body: dict) -> dict:
        n = self.node
        uptime = time.monotonic() - n.start_time
        doc: dict[str, Any] = {"host": n.my_host(), "version": MODELLED_VERSION, "process": "mongod",
                               "pid": Int64(os.getpid()), "uptime": float(int(uptime)), "uptimeMillis": Int64(
                                   int(uptime * 1000)), "localTime": now_utc(),
                               "connections": {"current": len(self.connections)},
                               "storageEngine": {"name": "mongosim", "persistent": True}}
        if self.opts.repl_set is not None:
            repl = self.hello_doc(conn, {}, False)
            for k in ("ok", "localTime", "maxBsonObjectSize", "maxMessageSizeBytes", "maxWriteBatchSize",
                      "connectionId", "minWireVersion", "maxWireVersion", "readOnly",
                      "logicalSessionTimeoutMinutes"):
                repl.pop(k, None)
            repl["rbid"] = 1
            doc["repl"] = repl
        doc["ok"] = 1.0
        return doc

    async def get_parameter(self, conn: Connection, db: str, body: dict) -> dict:
        params = {"enableTestCommands": self.opts.test_commands, "featureCompatibilityVersion": {"version": "7.0"},
                  "authenticationMechanisms": ["SCRAM-SHA-1", "SCRAM-SHA-256"], **self.opts.parameters,
                  "clusterAuthMode": self.security.tls.cluster_auth_mode}
        if body.get("getParameter") == "*" or body.get("allParameters"):
            return {**params, "ok": 1.0}
        out = {k: v for k, v in params.items() if k in body}
        if not out:
            raise CommandError("InvalidOptions", "no option found to get")
        return {**out, "ok": 1.0}

    async def set_parameter(self, conn: Connection, db: str, body: dict) -> dict:
        if "clusterAuthMode" in body:
            self.security.set_cluster_auth_mode(body["clusterAuthMode"])
        for k, v in body.items():
            if k not in ("setParameter", "$db", "lsid", "$clusterTime", "$readPreference", "clusterAuthMode"):
                self.opts.parameters[k] = v
        return {"ok": 1.0}

    async def get_cmd_line_opts(self, conn: Connection, db: str, body: dict) -> dict:
        return {"argv": self.opts.argv, "parsed": self.opts.parsed, "ok": 1.0}

    async def whatsmyuri(self, conn: Connection, db: str, body: dict) -> dict:
        return {"you": f"{conn.peer_host}:{conn.peer_port}", "ok": 1.0}

    async def host_info(self, conn: Connection, db: str, body: dict) -> dict:
        import socket
        return {"system": {"hostname": socket.gethostname(), "numCores": os.cpu_count()}, "os": {"type": "Linux"},
                "ok": 1.0}

    async def get_log(self, conn: Connection, db: str, body: dict) -> dict:
        return {"names": ["global", "startupWarnings"], "log": [], "totalLinesWritten": 0, "ok": 1.0}

    async def get_default_rw(self, conn: Connection, db: str, body: dict) -> dict:
        return {"defaultReadConcern": {"level": "local"}, "defaultWriteConcern": {"w": "majority", "wtimeout": 0},
                "defaultWriteConcernSource": "implicit", "defaultReadConcernSource": "implicit", "ok": 1.0}

    async def fsync(self, conn: Connection, db: str, body: dict) -> dict:
        await self.node.sync_journal()
        return {"numFiles": 1, "ok": 1.0}

    # ---- replica-set commands -----------------------------------------------------------------------

    def _require_repl(self) -> None:
        if self.opts.repl_set is None:
            raise CommandError("NoReplicationEnabled", "not running with --replSet")

    async def repl_set_initiate(self, conn: Connection, db: str, body: dict) -> dict:
        self._require_repl()
        n = self.node
        if n.config is not None:
            raise CommandError("AlreadyInitialized", "already initialized")
        raw = body.get("replSetInitiate")
        if not isinstance(raw, dict):
            raw = {"_id": self.opts.repl_set, "version": 1,
                   "members": [{"_id": 0, "host": f"{self.opts.bind_ips[0]}:{self.opts.port}"}]}
        raw = dict(raw)
        raw.pop("term", None)
        cfg = rsconfig.normalize(raw)
        if cfg["_id"] != self.opts.repl_set:
            raise CommandError("InvalidReplicaSetConfig", f"Attempting to initiate a replica set with name "
                               f"{cfg['_id']}, but command line reports {self.opts.repl_set}; rejecting")
        if cfg["version"] != 1:
            raise CommandError("InvalidReplicaSetConfig", f"Config version must be 1 on initiate, found version "
                               f"{cfg['version']}")
        if any(m.get("newlyAdded") for m in cfg["members"]):
            raise CommandError("InvalidReplicaSetConfig", "newlyAdded field is not allowed on initiate")
        rsconfig.validate(cfg)
        mine = [m for m in cfg["members"] if n.is_self(m["host"])]
        if len(mine) != 1:
            raise CommandError("InvalidReplicaSetConfig", f"No host described in new configuration with "
                               f"{{version: 1, term: 0}} for replica set {cfg['_id']} maps to this node")
        if not rsconfig.electable(mine[0]):
            raise CommandError("InvalidReplicaSetConfig", f"This node, {mine[0]['host']}, with _id "
                               f"{mine[0]['_id']} is not electable under the new configuration with {{version: 1, "
                               f"term: 0}} for replica set {cfg['_id']}")
        await self._quorum_check(cfg, mine[0]["_id"])
        if n.config is not None:
            raise CommandError("AlreadyInitialized", "already initialized")
        if n.oplog:
            raise CommandError("InvalidReplicaSetConfig", "local data already exists; cannot initiate")
        n._install_config(cfg, source="initiate")
        n.log_ops([{"op": "n", "ns": "", "o": {"msg": "initiating set"}}])
        n.durable = n.applied
        n.journal.sync()
        return {"ok": 1.0}

    async def _quorum_check(self, cfg: dict, my_id: int) -> None:
        n = self.node
        req = {"replSetHeartbeat": cfg["_id"], "configVersion": -2, "configTerm": -1, "term": Int64(0),
               "from": "", "fromId": -1, "checkEmpty": True}

        async def probe(m: dict) -> str | None:
            try:
                resp = await n.peer(m["host"], "quorum").call(req, 10)
            except NET_ERRORS as e:
                return f"{m['host']} failed with {type(e).__name__}"
            if not resp.get("ok"):
                return f"{m['host']} failed with {resp.get('errmsg')}"
            if int(resp.get("configVersion", -2)) != -2:
                return f"{m['host']} failed with 'Our replica set configuration is invalid or already initialized'"
            return None

        others = [m for m in cfg["members"] if m["_id"] != my_id]
        errs = [e for e in await asyncio.gather(*(probe(m) for m in others)) if e]
        if errs:
            raise CommandError("NodeNotFound", "replSetInitiate quorum check failed because not all proposed set "
                               "members responded affirmatively: " + ", ".join(errs))

    def _require_config(self) -> dict:
        self._require_repl()
        n = self.node
        if n.config is None:
            raise CommandError("NotYetInitialized", "no replset config has been received")
        if n.state == REMOVED:
            raise CommandError("InvalidReplicaSetConfig", "Our replica set config is invalid or we are not a "
                               "member of it", extra={"myState": REMOVED})
        return n.config

    async def repl_set_get_config(self, conn: Connection, db: str, body: dict) -> dict:
        self._require_repl()
        n = self.node
        if n.config is None:
            raise CommandError("NotYetInitialized", "no replset config has been received")
        # mongod leaves the server-managed newlyAdded flag out unless asked with $_internalIncludeNewlyAdded.
        doc: dict[str, Any] = {"config": rsconfig.to_wire(n.config, bool(body.get("$_internalIncludeNewlyAdded"))),
                               "ok": 1.0}
        if body.get("commitmentStatus"):
            if n.state != PRIMARY:
                raise CommandError("NotWritablePrimary", "commitmentStatus is only valid on the primary")
            doc["commitmentStatus"] = n.config_committed()
        return doc

    async def repl_set_get_status(self, conn: Connection, db: str, body: dict) -> dict:
        cfg = self._require_config()
        n = self.node
        maj = rsconfig.majorities(cfg)
        now = time.monotonic()
        members = []
        for m in cfg["members"]:
            if m["_id"] == n.my_id:
                e: dict[str, Any] = {"_id": m["_id"], "name": m["host"], "health": 1.0, "state": n.state,
                                     "stateStr": STATE_STR[n.state], "uptime": int(now - n.start_time),
                                     "optime": ot_doc(n.applied), "optimeDate": ot_date(n.applied),
                                     "optimeDurable": ot_doc(n.durable), "optimeDurableDate": ot_date(n.durable),
                                     "lastAppliedWallTime": ot_date(n.applied),
                                     "lastDurableWallTime": ot_date(n.durable),
                                     "syncSourceHost": n.sync_source, "syncSourceId": n.sync_source_id,
                                     "infoMessage": "", "configVersion": cfg["version"],
                                     "configTerm": cfg["term"], "self": True, "lastHeartbeatMessage": ""}
                if n.state == PRIMARY:
                    e["electionTime"] = n.election_time
                    e["electionDate"] = datetime.datetime.fromtimestamp(n.election_time.time, datetime.UTC)
            else:
                info = n.members.get(m["_id"])
                up = info is not None and info.health == 1
                st = info.state if info and info.health != -1 else 6
                if info is not None and info.health == 0:
                    st = DOWN
                e = {"_id": m["_id"], "name": m["host"], "health": float(info.health if info else -1),
                     "state": st, "stateStr": STATE_STR.get(st, "UNKNOWN"),
                     "uptime": int(now - info.up_since) if up else 0,
                     "optime": ot_doc(info.applied if up else (-1, 0, 0)),
                     "optimeDurable": ot_doc(info.durable if up else (-1, 0, 0)),
                     "optimeDate": ot_date(info.applied) if up else EPOCH,
                     "optimeDurableDate": ot_date(info.durable) if up else EPOCH,
                     "lastAppliedWallTime": ot_date(info.applied) if up else EPOCH,
                     "lastDurableWallTime": ot_date(info.durable) if up else EPOCH,
                     "lastHeartbeat": info.last_hb if info and info.last_hb else EPOCH,
                     "lastHeartbeatRecv": info.last_hb_recv if info and info.last_hb_recv else EPOCH,
                     "pingMs": Int64(info.ping_ms if info else 0),
                     "lastHeartbeatMessage": info.message if info else "",
                     "syncSourceHost": info.sync_source if up else "",
                     "syncSourceId": self._id_of(info.sync_source) if up else -1,
                     "infoMessage": "", "configVersion": info.config_version if up else -1,
                     "configTerm": info.config_term if up else -1}
                if up and info.state == PRIMARY and info.election_time is not None:
                    e["electionTime"] = info.election_time
                    e["electionDate"] = datetime.datetime.fromtimestamp(info.election_time.time,
                                                                         datetime.UTC)
            members.append(e)
        doc: dict[str, Any] = {
            "set": cfg["_id"], "date": now_utc(), "myState": n.state, "term": Int64(n.term),
            "syncSourceHost": n.sync_source, "syncSourceId": n.sync_source_id,
            "heartbeatIntervalMillis": Int64(cfg["settings"]["heartbeatIntervalMillis"]),
            "majorityVoteCount": maj.majority_vote, "writeMajorityCount": maj.write_majority,
            "votingMembersCount": maj.voting, "writableVotingMembersCount": maj.writable_voting,
            "optimes": {"lastCommittedOpTime": ot_doc(n.commit_point), "lastCommittedWallTime": ot_date(
                n.commit_point), "readConcernMajorityOpTime": ot_doc(n.commit_point),
                "readConcernMajorityWallTime": ot_date(n.commit_point), "appliedOpTime": ot_doc(n.applied),
                "durableOpTime": ot_doc(n.durable), "lastAppliedWallTime": ot_date(n.applied),
                "lastDurableWallTime": ot_date(n.durable)},
            "members": members, "ok": 1.0}
        if n.too_stale:
            # Only the member itself knows; the others just see it RECOVERING (mongod's prepareStatusResponse).
            doc["tooStale"] = True
        if n.state == PRIMARY:
            doc["electionCandidateMetrics"] = {"lastElectionReason": n.last_election_reason,
                                               "lastElectionDate": n.election_date or e_date(n.election_time),
                                               "electionTerm": Int64(n.term)}
        if n.state == STARTUP2:
            doc["initialSyncStatus"] = {"syncSource": n.sync_source}
        return doc

    def _id_of(self, host: str) -> int:
        for m in (self.node.config or {}).get("members", []):
            if m["host"] == host:
                return m["_id"]
        return -1

    async def repl_set_reconfig(self, conn: Connection, db: str, body: dict) -> dict:
        """mongod's order: parse; wait until the current config is committed (308 at maxTimeMS); validate (103),
        find self (74) and check it stays electable (104); quorum check (74, or 103 for another set); install; wait
        for a majority of the new voters to have it (50 at maxTimeMS). Losing primaryship in a wait answers 10107."""
        self._require_repl()
        n = self.node
        force = bool(body.get("force"))
        if n.config is None:
            raise CommandError("NotYetInitialized", "Node not yet initialized; use the replSetInitiate command")
        if n.reconfig_running:
            raise _config_in_progress()
        if not force and n.state != PRIMARY:
            raise CommandError("NotWritablePrimary", "replSetReconfig should only be run on a writable PRIMARY. "
                               f"Current state {STATE_STR[n.state]};")
        max_ms = body.get("maxTimeMS")
        deadline = None if not max_ms else time.monotonic() + int(max_ms) / 1000

        def left() -> float | None:
            return None if deadline is None else deadline - time.monotonic()

        raw = dict(body.get("replSetReconfig") or {})
        if any(m.get("newlyAdded") for m in raw.get("members", []) if isinstance(m, dict)):
            raise CommandError("InvalidReplicaSetConfig", "newlyAdded is not allowed in a user-supplied config")
        raw.pop("term", None)
        new = rsconfig.normalize(raw, replica_set_id=n.config["settings"]["replicaSetId"])
        if "replicaSetId" not in (raw.get("settings") or {}):
            new["settings"]["replicaSetId"] = n.config["settings"]["replicaSetId"]
        term = n.term
        if not force:
            current = n.config
            await n.wait_for(lambda: n.config_committed() or n.state != PRIMARY or n.term != term, left())
            _require_still_primary(n, term)
            if not n.config_committed():
                raise CommandError("CurrentConfigNotCommittedYet", "Cannot run replSetReconfig because the current "
                                   f"config: {{version: {current['version']}, term: {current['term']}}} is not "
                                   "majority committed.")
            if n.reconfig_running:
                raise _config_in_progress()
        n.reconfig_running = True
        try:
            old = n.config
            if force:
                new["term"] = -1
                # mongod's jump: the given version plus 10000 and a random amount below 100000, so a forced config
                # wins over whatever the unreachable members may still install.
                new["version"] = new["version"] + 10000 + random.randrange(100000)
            else:
                new["term"] = n.term
            self._validate_reconfig(old, new, force)
            mine = [m for m in new["members"] if n.is_self(m["host"])]
            if len(mine) != 1:
                raise CommandError("NodeNotFound", f"No host described in new configuration with {{version: "
                                   f"{new['version']}, term: {new['term']}}} for replica set {new['_id']} maps to "
                                   "this node")
            if not force:
                if not rsconfig.electable(mine[0]):
                    raise CommandError("NodeNotElectable", f"This node, {mine[0]['host']}, with _id "
                                       f"{mine[0]['_id']} is not electable under the new configuration with "
                                       f"{{version: {new['version']}, term: {new['term']}}} for replica set "
                                       f"{new['_id']}")
                await self.reconfig_quorum_check(new, mine[0]["_id"])
                _require_still_primary(n, term)
            n.install_new_config(new)
        finally:
            n.reconfig_running = False
        if not force:
            ok = await n.wait_for(lambda: n.new_config_installed_on_majority(new) or n.state != PRIMARY
                                  or n.term != term, left())
            _require_still_primary(n, term)
            if not ok or not n.new_config_installed_on_majority(new):
                raise CommandError("MaxTimeMSExpired", "operation exceeded time limit waiting for a majority "
                                   "to install the new config (the new config is installed and will propagate)")
        return {"ok": 1.0}

    @staticmethod
    def _validate_reconfig(old: dict, new: dict, force: bool) -> None:
        """Every rule of the new config and of the change; mongod answers each failure with 103."""
        if not force and new["version"] <= old["version"]:
            raise CommandError("NewReplicaSetConfigurationIncompatible",
                               f"New replica set configuration version must be greater than old, but "
                               f"{new['version']} is not greater than {old['version']} for replica set "
                               f"{old['_id']}")
        was_new = {m["_id"] for m in old["members"] if m.get("newlyAdded")}
        old_ids = {m["_id"] for m in old["members"]}
        for m in new["members"]:
            # 5.0+: a voter that has not synced yet does not count, and is marked before the single-voter check
            # (SERVER-46344), so several brand-new voters may join in one reconfig. A force reconfig marks no one
            # and so drops the flags it had (jstests/replsets/force_reconfig_sets_newly_added_field_correctly.js).
            if not force and m["votes"] and not m["arbiterOnly"] and (m["_id"] in was_new or m["_id"] not in old_ids):
                m["newlyAdded"] = True
        try:
            rsconfig.validate(new)
            rsconfig.validate_reconfig(old, new, force)
        except CommandError as e:
            if e.code_name == "NewReplicaSetConfigurationIncompatible":
                raise
            raise CommandError("NewReplicaSetConfigurationIncompatible", e.message) from None

    async def reconfig_quorum_check(self, cfg: dict, my_id: int) -> None:
        """Heartbeat every other member of the new config; a majority of its voters (self included) and one
        electable member must answer, none may hold a config as new, belong to another replica set id."""
        n = self.node
        maj = rsconfig.majorities(cfg)
        me = next(m for m in cfg["members"] if m["_id"] == my_id)
        voters = [me["host"]] if rsconfig.is_voter(me) else []
        electable = 1 if rsconfig.electable(me) else 0
        bad: list[str] = []
        req = {"replSetHeartbeat": cfg["_id"], "configVersion": cfg["version"], "configTerm": cfg["term"],
               "term": Int64(n.term), "from": "", "fromId": -1}
        timeout = float(cfg["settings"]["heartbeatTimeoutSecs"])

        async def probe(m: dict) -> tuple[dict, dict | None, str]:
            try:
                return m, await n.peer(m["host"], "quorum").call(req, timeout), ""
            except NET_ERRORS as e:
                return m, None, f"{m['host']} failed with {type(e).__name__}"

        pending = {asyncio.ensure_future(probe(m)) for m in cfg["members"] if m["_id"] != my_id}
        try:
            # mongod (7.0) waits for every member's answer, each bounded by heartbeatTimeoutSecs, unless one vetoes:
            # a member that does not answer (frozen, cut off) holds the reconfig that long.
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for d in done:
                    m, resp, err = d.result()
                    if resp is not None and not resp.get("ok"):
                        err = f"{m['host']} failed with {resp.get('errmsg')}"
                    if err:
                        bad.append(err)
                        continue
                    assert resp is not None
                    if resp.get("set") and int(resp.get("configVersion", -2)) >= cfg["version"]:
                        raise CommandError("NewReplicaSetConfigurationIncompatible",
                                           f"Our config version of {cfg['version']} is no larger than the version "
                                           f"on {m['host']}, which is {resp['configVersion']}")
                    theirs = resp.get("replicaSetId")
                    if theirs is not None and theirs != cfg["settings"]["replicaSetId"]:
                        raise CommandError("NewReplicaSetConfigurationIncompatible",
                                           f"Our replica set ID of {cfg['settings']['replicaSetId']} did not match "
                                           f"that of {m['host']}, which is {theirs}")
                    if rsconfig.electable(m):
                        electable += 1
                    if rsconfig.is_voter(m):
                        voters.append(m["host"])
        finally:
            for p in pending:
                p.cancel()
        if not electable:
            raise CommandError("NodeNotFound", "Quorum check failed because no electable nodes responded; at least "
                               "one required for config")
        if len(voters) < maj.majority_vote:
            msg = (f"Quorum check failed because not enough voting nodes responded; required {maj.majority_vote} "
                   f"but only the following {len(voters)} voting nodes responded: {', '.join(voters)}")
            if bad:
                msg += "; the following nodes did not respond affirmatively: " + ", ".join(bad)
            raise CommandError("NodeNotFound", msg)

    async def repl_set_step_down(self, conn: Connection, db: str, body: dict) -> dict:
        self._require_config()
        n = self.node
        force = bool(body.get("force"))
        # mongod's defaults: 60 s when 0 or absent; catch-up 10 s, or 0 with force
        secs = _number(body.get("replSetStepDown"), "replSetStepDown") or 60
        if secs < 0:
            raise CommandError("BadValue", "stepdown period must be a positive integer")
        catch_up = body.get("secondaryCatchUpPeriodSecs")
        catch_up = (0 if force else 10) if catch_up is None else _number(catch_up, "secondaryCatchUpPeriodSecs")
        if catch_up < 0:
            raise CommandError("BadValue", "secondaryCatchUpPeriodSecs period must be a positive or absent")
        if secs < catch_up:
            raise CommandError("BadValue", "stepdown period must be longer than secondaryCatchUpPeriodSecs")
        if n.state != PRIMARY:
            raise CommandError("NotWritablePrimary", "not primary so can't step down")
        if n.stepping_down is not None:
            raise CommandError("ConflictingOperationInProgress", "a stepdown is already in progress")
        n.stepping_down = asyncio.Event()
        try:
            target = n.applied

            def caught_up() -> int | None:
                best = None
                for mid, info in n.members.items():
                    m = n.member_cfg(mid)
                    if m and rsconfig.electable(m) and info.health == 1 and info.position_applied >= target \
                            and info.state == SECONDARY \
                            and (best is None or m["priority"] > n.member_cfg(best)["priority"]):
                        best = mid
                return best

            def ready() -> bool:
                return n.state != PRIMARY or (caught_up() is not None and n.commit_point >= target)

            await n.wait_for(ready, float(catch_up or 0))
            if n.state != PRIMARY:
                raise CommandError("NotWritablePrimary", "not primary so can't step down")
            chosen = caught_up() if n.commit_point >= target else None
            if chosen is None and not force:
                raise CommandError("ExceededTimeLimit", f"No electable secondaries caught up as of "
                                   f"{now_utc().isoformat()}. Please use the replSetStepDown command with the "
                                   "argument {force: true} to force node to step down.")
            n.step_down("replSetStepDown command")
            n.frozen_until = time.monotonic() + secs
            if chosen is not None:
                host = n.host_of(chosen)
                asyncio.ensure_future(_step_up(n, host))
            return {"ok": 1.0}
        finally:
            ev, n.stepping_down = n.stepping_down, None
            ev.set()

    async def repl_set_step_up(self, conn: Connection, db: str, body: dict) -> dict:
        self._require_config()
        n = self.node
        if n.state == PRIMARY:
            return {"ok": 1.0, "info": "already primary"}
        if not n.can_stand():
            raise CommandError("NotSecondary", "cannot step up: not an electable secondary")
        if await n.run_election("stepUpRequestSkipDryRun", skip_dry_run=True):
            return {"ok": 1.0}
        raise CommandError("InternalError", "Election failed.", extra={"code": 125, "codeName": "CommandFailed"})

    async def repl_set_freeze(self, conn: Connection, db: str, body: dict) -> dict:
        self._require_config()
        n = self.node
        secs = int(body.get("replSetFreeze", 0))
        if n.state == PRIMARY:
            raise CommandError("NotSecondary", "cannot freeze node when primary or running for election. state: "
                               "Primary")
        if secs == 0:
            n.frozen_until = 0.0
            return {"info": "unfreezing", "ok": 1.0}
        n.frozen_until = time.monotonic() + secs
        return {"ok": 1.0}

    async def shutdown_cmd(self, conn: Connection, db: str, body: dict) -> dict:
        if db != "admin":
            raise CommandError("Unauthorized", "shutdown may only be run against the admin database.")
        n = self.node
        if n.state == PRIMARY and not body.get("force") and n.config and len(n.config["members"]) > 1:
            timeout = float(body.get("timeoutSecs", 15))
            target = n.applied
            ok = await n.wait_for(lambda: any(i.position_applied >= target and i.health == 1 and
                                              rsconfig.electable(n.member_cfg(mid) or {"priority": 0,
                                                                                      "arbiterOnly": True,
                                                                                      "votes": 0})
                                              for mid, i in n.members.items()), timeout)
            if not ok:
                raise CommandError("ExceededTimeLimit", "No electable secondaries caught up; use force:true to "
                                   "shut down anyway")
            n.step_down("shutdown")
        asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(self.stop()))
        raise ConnectionError("shutting down")

    # ---- member-to-member and test commands ----------------------------------------------------------

    async def _drop_if_blocked(self, body: dict) -> None:
        """A request from a partitioned member is lost: no answer (until the partition heals, then the connection
        drops), or a refused connection in the failpoint's instant mode."""
        n = self.node
        sender = body.get("from")
        if not sender or not n.blocked(sender):
            return
        if not n.partition_instant:
            await n.wait_for(lambda: not n.blocked(sender) or n.shutting_down, None)
        raise ConnectionError("dropped by failpoint")

    async def heartbeat(self, conn: Connection, db: str, body: dict) -> dict:
        await self._drop_if_blocked(body)
        return self.node.handle_heartbeat(body)

    async def request_votes(self, conn: Connection, db: str, body: dict) -> dict:
        await self._drop_if_blocked(body)
        return self.node.handle_request_votes(body)

    async def pull(self, conn: Connection, db: str, body: dict) -> dict:
        resp = await self.node.handle_pull(body)
        fid = body.get("fromId")
        info = self.node.members.get(fid)
        if info is not None and body.get("applied") is not None and not resp.get("rollback"):
            from .node import ot_parse
            info.position_applied = max(info.position_applied, min(ot_parse(body["applied"]),
                                                                   ot_parse(body.get("after"))))
        return resp

    async def find_common(self, conn: Connection, db: str, body: dict) -> dict:
        return self.node.handle_find_common(body)

    async def configure_fail_point(self, conn: Connection, db: str, body: dict) -> dict:
        """Test-only (enableTestCommands=1): ``mongosimPartition`` drops traffic to/from ``data.hosts``."""
        if not self.opts.test_commands:
            raise CommandError("CommandNotFound", "no such command: 'configureFailPoint'")
        if db != "admin":
            raise CommandError("Unauthorized", "configureFailPoint may only be run against the admin database.")
        name = body["configureFailPoint"]
        mode = body.get("mode", "alwaysOn")
        if mode not in ("alwaysOn", "off"):
            raise CommandError("BadValue", "mode must be alwaysOn or off")
        if name == "stopReplProducer":
            # mongod's own failpoint: this member stops fetching oplog entries (heartbeats go on).
            self.node.stop_repl_producer = mode == "alwaysOn"
            self.node.notify()
            return {"count": 0, "ok": 1.0}
        if name != "mongosimPartition":
            raise CommandError("BadValue", f"Cannot find failpoint: {name} (the simulator has mongosimPartition "
                               "and stopReplProducer)")
        data = body.get("data") or {}
        hosts = [h.lower() for h in data.get("hosts", [])]
        if mode == "off":
            self.node.blocked_hosts = set()
        else:
            self.node.blocked_hosts = set(hosts)
            self.node.partition_instant = bool(data.get("instant"))
        if self.node.partition_instant:
            for p in self.node.peers.values():
                if p.host in self.node.blocked_hosts:
                    p.close()
        return {"count": 0, "ok": 1.0}


def _number(value: Any, field: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CommandError("TypeMismatch", f"\"{field}\" had the wrong type. Expected a number")
    return int(value)


def _config_in_progress() -> CommandError:
    return CommandError("ConfigurationInProgress", "Cannot run replSetReconfig because the node is currently "
                        "updating its configuration")


def _require_still_primary(n: Node, term: int) -> None:
    if n.state != PRIMARY or n.term != term:
        raise CommandError("NotWritablePrimary", "replSetReconfig: the node stepped down while the reconfig was "
                           "in progress; it is no longer primary")


def e_date(ts: Any) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ts.time if ts else 0, datetime.UTC)


async def _step_up(node: Node, host: str) -> None:
    try:
        await node.peer(host, "stepup").call({"replSetStepUp": 1, "skipDryRun": True}, 10)
    except NET_ERRORS as e:
        log.info("election handoff to %s failed: %r", host, e)


__all__ = ["ARBITER", "PRIMARY", "SECONDARY", "STARTUP", "Connection", "Options", "Server"]
