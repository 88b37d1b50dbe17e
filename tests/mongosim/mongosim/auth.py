"""Authentication and authorization of the simulator: SCRAM logins, users, built-in roles, the localhost exception
and internal authentication between members (keyFile, or x509 member certificates per ``security.clusterAuthMode``).

The server calls it like this (the seam):

* ``Security(key_file: str | None, authorization: bool, server: server.Server, tls_settings: tls.TlsSettings)`` is
  built once at startup (``--keyFile``/``security.keyFile`` and ``--auth``/``security.authorization``; a keyFile
  implies authorization, as with mongod; ``tls_settings`` carries the cluster authentication mode and the member
  certificate). A bad keyFile ends the process with a message, as mongod does.
* ``AUTH_COMMANDS``: command names the dispatcher hands to ``await security.handle(conn, name, db, body)``;
  it returns the reply document or raises ``errors.CommandError``.
* ``security.check(conn, name, db, body)`` is called before every other command except the handshake
  (``HANDSHAKE_COMMANDS``); it raises ``CommandError("Unauthorized", ...)`` to refuse.
* ``await security.outbound_handshake(peer)`` runs once on each new member-to-member connection and logs in as
  ``__system``: with the keyFile (SCRAM-SHA-256), or in sendX509/x509 with MONGODB-X509 on the TLS connection (the
  certificate it presented is the credential); a refusal raises ``ConnectionError`` so the peer counts as down.
* ``conn.peer_certificate`` (DER bytes or None) is the verified certificate a TLS client presented; a MONGODB-X509
  login with it is a member login when its subject's O/OU/DC set equals this member's own (mongod's rule).
* ``security.hello_fields(conn, body)`` returns extra ``hello`` fields (``saslSupportedMechs``,
  ``speculativeAuthenticate``).

Per-connection state lives in ``conn.auth``: ``users`` (set of (user, db) logged in), ``conv`` (a SCRAM conversation
in progress). Users are documents in ``admin.system.users`` written through ``server.node.apply_local_write`` (a
replicated, majority-acknowledged write), so they follow the oplog to every member and survive failover. Roles are
resolved from the stored user document at every check, so updateUser/dropUser take effect on open connections.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import re
import stat
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bson.binary import Binary

from . import scram, tls
from .errors import CommandError

log = logging.getLogger("mongosim")

AUTH_COMMANDS = {"saslStart", "saslContinue", "authenticate", "logout", "createUser", "updateUser", "dropUser",
                 "usersInfo", "dropAllUsersFromDatabase", "grantRolesToUser", "revokeRolesFromUser",
                 "connectionStatus"}
HANDSHAKE_COMMANDS = {"hello", "ismaster", "isMaster", "ping", "buildInfo", "buildinfo", "endSessions",
                      "getnonce", "whatsmyuri"}

USERS_DB, USERS_COLL = "admin", "system.users"
INTERNAL_USER, INTERNAL_DB = "__system", "local"
X509, EXTERNAL_DB = "MONGODB-X509", "$external"

# Privilege classes. A privilege is (resource, class): resource is a database name, "*" (any database) or
# "cluster". This is coarser than mongod's action types but grants and refuses the same commands for the roles
# modelled here.
READ, WRITE, DB_ADMIN, USER_ADMIN, MONITOR, MANAGE, INTERNAL = (
    "read", "write", "dbAdmin", "userAdmin", "monitor", "manage", "internal")
ANY_DB, CLUSTER = "*", "cluster"

_COMMAND_CLASS: dict[str, str] = {}
for _names, _cls in (
        (("find", "getMore", "killCursors", "count", "distinct", "aggregate", "listIndexes", "listCollections",
          "dbStats", "collStats"), READ),
        (("insert", "update", "delete", "findAndModify", "findandmodify", "create", "createIndexes", "drop",
          "dropIndexes", "deleteIndexes"), WRITE),
        (("dropDatabase",), DB_ADMIN),
        (("serverStatus", "replSetGetStatus", "replSetGetConfig", "getParameter", "getCmdLineOpts", "hostInfo",
          "getLog", "getDefaultRWConcern"), MONITOR),
        (("replSetInitiate", "replSetReconfig", "replSetStepDown", "replSetFreeze", "replSetStepUp", "shutdown",
          "setParameter", "fsync", "configureFailPoint"), MANAGE),
        (("replSetHeartbeat", "replSetRequestVotes", "_mongosimPull", "_mongosimFindCommon"), INTERNAL)):
    for _n in _names:
        _COMMAND_CLASS[_n] = _cls
# Any logged-in user may run these (mongod: listDatabases filters to authorized databases; sessions are per user).
ANY_AUTHENTICATED = {"listDatabases", "startSession", "refreshSessions", "endSessions"}
CLUSTER_CLASSES = {MONITOR, MANAGE, INTERNAL}

_DB_ROLES: dict[str, set[str]] = {
    "read": {READ}, "readWrite": {READ, WRITE}, "dbAdmin": {DB_ADMIN}, "userAdmin": {USER_ADMIN},
    "dbOwner": {READ, WRITE, DB_ADMIN, USER_ADMIN},
}
# Roles that exist only on the admin database.
_ADMIN_ROLES: dict[str, set[tuple[str, str]]] = {
    "readAnyDatabase": {(ANY_DB, READ)},
    "readWriteAnyDatabase": {(ANY_DB, READ), (ANY_DB, WRITE)},
    "userAdminAnyDatabase": {(ANY_DB, USER_ADMIN)},
    "dbAdminAnyDatabase": {(ANY_DB, DB_ADMIN)},
    "clusterMonitor": {(CLUSTER, MONITOR), ("local", READ)},
    "clusterManager": {(CLUSTER, MONITOR), (CLUSTER, MANAGE), ("local", READ)},
    "clusterAdmin": {(CLUSTER, MONITOR), (CLUSTER, MANAGE), ("local", READ), (ANY_DB, DB_ADMIN)},
    "root": {(ANY_DB, READ), (ANY_DB, WRITE), (ANY_DB, DB_ADMIN), (ANY_DB, USER_ADMIN), (CLUSTER, MONITOR),
             (CLUSTER, MANAGE)},
    "__system": {(ANY_DB, READ), (ANY_DB, WRITE), (ANY_DB, DB_ADMIN), (ANY_DB, USER_ADMIN), (CLUSTER, MONITOR),
                 (CLUSTER, MANAGE), (CLUSTER, INTERNAL)},
}

KEYFILE_MIN, KEYFILE_MAX = 6, 1024
_BASE64_CHARS = re.compile(r"^[A-Za-z0-9+/=]*$")


def _error(code_name: str, code: int, message: str) -> CommandError:
    """A CommandError for codes errors.CODES does not list (RoleNotFound, UserNotFound, ...)."""
    e = CommandError("BadValue", message)
    e.code, e.code_name = code, code_name
    return e


def auth_failed() -> CommandError:
    # mongod never tells the client whether the user or the password was wrong.
    return CommandError("AuthenticationFailed", "Authentication failed.")


def unauthorized(name: str, db: str, logged_in: bool) -> CommandError:
    if not logged_in:
        return CommandError("Unauthorized", f"Command {name} requires authentication")
    return CommandError("Unauthorized", f"not authorized on {db} to execute command {{ {name}: ... }}")


class KeyFileError(Exception):
    """The keyFile cannot be used; mongod refuses to start."""


def load_key_file(path: str) -> str:
    """The shared key: mongod's rules (owner-only permissions, 6..1024 base64 characters, whitespace ignored)."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise KeyFileError(f"error getting file {path}: {e.strerror}") from e
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"permissions on {path} are too open")
    try:
        text = Path(path).read_text(encoding="ascii", errors="replace")
    except OSError as e:
        raise KeyFileError(f"error opening file: {path}: {e.strerror}") from e
    key = "".join(text.split())
    if not (KEYFILE_MIN <= len(key) <= KEYFILE_MAX):
        raise KeyFileError(f"security key in {path} has length {len(key)}, must be between {KEYFILE_MIN} and "
                           f"{KEYFILE_MAX} chars")
    if not _BASE64_CHARS.match(key):
        bad = next(c for c in key if not _BASE64_CHARS.match(c))
        raise KeyFileError(f"invalid char in key file {path}: {bad!r}")
    return key


def role_privileges(role: str, db: str) -> set[tuple[str, str]]:
    """The privileges of built-in ``role`` on ``db``; unknown role → empty set."""
    if role in _DB_ROLES:
        return {(db, c) for c in _DB_ROLES[role]}
    if db == "admin" and role in _ADMIN_ROLES:
        return set(_ADMIN_ROLES[role])
    return set()


def role_exists(role: str, db: str) -> bool:
    return role != "__system" and bool(role_privileges(role, db))


def allowed(privileges: set[tuple[str, str]], resource: str, cls: str) -> bool:
    """Does ``privileges`` grant class ``cls`` on ``resource`` (a database name or "cluster")?"""
    if (resource, cls) in privileges:
        return True
    return resource != CLUSTER and (ANY_DB, cls) in privileges


def required_privilege(name: str, db: str) -> tuple[str, str]:
    """(resource, class) a non-auth command needs; unknown commands need cluster management (root)."""
    cls = _COMMAND_CLASS.get(name, MANAGE)
    return (CLUSTER, cls) if cls in CLUSTER_CLASSES else (db, cls)


def privileges_cover(privileges: set[tuple[str, str]], name: str, db: str, body: dict) -> bool:
    """Whether ``privileges`` allow command ``name`` on ``db`` (with its body, for the namespace)."""
    resource, cls = required_privilege(name, db)
    coll = body.get(name)
    if db == USERS_DB and coll == USERS_COLL and cls in (READ, WRITE):
        # Credentials are readable only by user administrators and writable only by root (mongod's restore).
        if cls == READ:
            return allowed(privileges, USERS_DB, USER_ADMIN)
        return {(ANY_DB, USER_ADMIN), (ANY_DB, WRITE)} <= privileges
    return allowed(privileges, resource, cls)


def is_loopback(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def parse_roles(roles: Any, db: str) -> list[dict]:
    """Normalise createUser/updateUser roles (``"read"`` or ``{role, db}``) and check they exist."""
    if not isinstance(roles, list):
        raise CommandError("BadValue", "\"roles\" must be an array")
    out: list[dict] = []
    for r in roles:
        if isinstance(r, str):
            role, rdb = r, db
        elif isinstance(r, dict) and isinstance(r.get("role"), str) and isinstance(r.get("db"), str):
            role, rdb = r["role"], r["db"]
        else:
            raise CommandError("BadValue", f"Invalid role entry: {r!r}; expected a name or {{role, db}}")
        if not role_exists(role, rdb):
            raise _error("RoleNotFound", 31, f"Could not find role: {role}@{rdb}")
        if {"role": role, "db": rdb} not in out:
            out.append({"role": role, "db": rdb})
    return out


def _mechanisms(body: dict) -> list[str]:
    mechs = body.get("mechanisms", list(scram.MECHANISMS))
    if not isinstance(mechs, list) or not mechs or any(m not in scram.MECHANISMS for m in mechs):
        raise CommandError("BadValue", f"mechanisms must be a non-empty subset of {list(scram.MECHANISMS)}")
    return [m for m in scram.MECHANISMS if m in mechs]


def _payload(body: dict) -> bytes:
    p = body.get("payload", b"")
    if isinstance(p, str):
        return p.encode()
    return bytes(p)


@dataclass
class _Conversation:
    user: str
    db: str
    server: scram.ServerConversation
    skip_empty: bool
    verified: bool = False


def _refuse_start(message: str) -> SystemExit:
    # mongod logs the reason and exits before listening.
    log.error("%s", message)
    print(message, file=sys.stderr)
    return SystemExit(1)


class Security:
    def __init__(self, key_file: str | None, authorization: bool, server: Any = None,
                 tls_settings: tls.TlsSettings | None = None) -> None:
        self.key_file = key_file
        self.server = server
        self.tls = tls_settings or tls.TlsSettings()
        self.key: str | None = None
        if key_file:
            try:
                self.key = load_key_file(key_file)
            except KeyFileError as e:
                raise _refuse_start(f"Unable to acquire security key[s]: {e}") from e
        # The O/OU/DC of this member's own certificate: a peer certificate with the same set is a member.
        self.member_identity: frozenset[tuple[str, str]] = frozenset()
        if self.tls.certificate_key_file:
            try:
                self.member_identity = tls.certificate_file_identity(self.tls.certificate_key_file)
            except (OSError, ValueError, IndexError) as e:
                if self.tls.accepts_x509:
                    raise _refuse_start(f"cannot read the certificate in {self.tls.certificate_key_file}: {e}") from e
                # Unused until a run-time move to sendKeyFile; the TLS layer reports a bad file at startup.
        self.authorization = authorization or self.key is not None or self.tls.sends_x509
        # The __system credentials, derived once per process from the shared key (fresh salt each start).
        self.internal_credentials = (
            {m: scram.make_credentials(m, INTERNAL_USER, self.key) for m in scram.MECHANISMS}
            if self.key is not None else {})
        self._client_cache: dict = {}
        self._users_seen = False

    def set_cluster_auth_mode(self, mode: Any) -> None:
        """setParameter clusterAuthMode: mongod moves only one step forward at run time, and only to a mode that
        accepts certificates when it connects to its peers over TLS. New member connections follow it."""
        current = self.tls.cluster_auth_mode
        if mode not in tls.CLUSTER_AUTH_MODES:
            raise CommandError("BadValue", f"Invalid value for clusterAuthMode: {mode!r}; valid values are "
                               f"{', '.join(tls.CLUSTER_AUTH_MODES)}")
        if mode == current:
            return
        order = tls.CLUSTER_AUTH_MODES
        if order.index(mode) != order.index(current) + 1:
            raise CommandError("BadValue", f"Illegal state transition for clusterAuthMode, change from {current} to "
                               f"{mode}")
        if not self.tls.outbound:
            raise CommandError("BadValue", "Illegal state transition for clusterAuthMode, need to enable SSL for "
                               "outgoing connections")
        self.tls = dataclasses.replace(self.tls, cluster_auth_mode=mode)
        log.info("clusterAuthMode changed from %s to %s", current, mode)

    # ---- users (this member's copy of admin.system.users) -----------------------------------------

    def _users_coll(self) -> Any:
        return self.server.node.store.coll(USERS_DB, USERS_COLL)

    def find_user(self, user: str, db: str) -> dict | None:
        c = self._users_coll()
        if c is None:
            return None
        for d in c.find({"_id": f"{db}.{user}"}):
            return dict(d)
        return None

    def any_users(self) -> bool:
        """True once a user document has been seen; like mongod this stays true until restart, so dropping the
        last user does not reopen the localhost exception."""
        if not self._users_seen:
            c = self._users_coll()
            self._users_seen = c is not None and next(iter(c.find(None)), None) is not None
        return self._users_seen

    def credentials_for(self, user: str, db: str) -> dict | None:
        if user == INTERNAL_USER and db == INTERNAL_DB:
            # In x509 mode the keyFile no longer lets a member in, even when one is configured.
            return (self.internal_credentials or None) if self.tls.accepts_key_file else None
        doc = self.find_user(user, db)
        return doc.get("credentials") if doc else None

    # ---- authorization --------------------------------------------------------------------------

    def _logged_in(self, conn: Any) -> set[tuple[str, str]]:
        return conn.auth.setdefault("users", set())

    def privileges(self, conn: Any) -> set[tuple[str, str]]:
        privs: set[tuple[str, str]] = set()
        for user, db in self._logged_in(conn):
            if user == INTERNAL_USER and db == INTERNAL_DB:
                privs |= _ADMIN_ROLES["__system"]
                continue
            doc = self.find_user(user, db)
            for r in (doc or {}).get("roles", []):
                privs |= role_privileges(r["role"], r["db"])
        return privs

    def localhost_exception(self, conn: Any) -> bool:
        """Before the first user exists, a loopback connection may create it (and initiate the set)."""
        return is_loopback(conn.peer_host) and not self.any_users()

    def check(self, conn: Any, name: str, db: str, body: dict) -> None:
        if not self.authorization:
            return
        users = self._logged_in(conn)
        if name == "replSetInitiate" and not users and self.localhost_exception(conn):
            return  # documented: the localhost exception may also initiate a replica set
        if not users:
            raise unauthorized(name, db, False)
        if name in ANY_AUTHENTICATED:
            return
        if not privileges_cover(self.privileges(conn), name, db, body):
            raise unauthorized(name, db, True)

    def _require_user_admin(self, conn: Any, name: str, db: str, *, first_user: bool = False) -> None:
        if not self.authorization:
            return
        users = self._logged_in(conn)
        if first_user and db == "admin" and self.localhost_exception(conn):
            return
        if not users:
            raise unauthorized(name, db, False)
        if not allowed(self.privileges(conn), db, USER_ADMIN):
            raise unauthorized(name, db, True)

    # ---- commands -------------------------------------------------------------------------------

    async def handle(self, conn: Any, name: str, db: str, body: dict) -> dict:
        fn = {"saslStart": self._sasl_start, "saslContinue": self._sasl_continue,
              "authenticate": self._authenticate, "logout": self._logout, "createUser": self._create_user,
              "updateUser": self._update_user, "dropUser": self._drop_user, "usersInfo": self._users_info,
              "dropAllUsersFromDatabase": self._drop_all_users, "grantRolesToUser": self._grant_roles,
              "revokeRolesFromUser": self._revoke_roles, "connectionStatus": self._connection_status}[name]
        return await fn(conn, db, body)

    def _start_conversation(self, conn: Any, db: str, body: dict) -> bytes:
        mech = body.get("mechanism")
        if mech not in scram.MECHANISMS:
            raise CommandError("BadValue", f"Received authentication for mechanism {mech} which is not enabled")
        payload = _payload(body)
        try:
            _gs2, _bare, user, _nonce = scram.parse_client_first(payload)
        except scram.ScramError as e:
            raise auth_failed() from e
        creds = (self.credentials_for(user, db) or {}).get(mech)
        if creds is None:
            log.info("authentication of %s@%s with %s failed: no such user or mechanism", user, db, mech)
            raise auth_failed()
        try:
            conv, first = scram.ServerConversation.start(mech, creds, payload)
        except scram.ScramError as e:
            raise auth_failed() from e
        skip = bool((body.get("options") or {}).get("skipEmptyExchange"))
        conn.auth["conv"] = _Conversation(user, db, conv, skip)
        return first

    async def _sasl_start(self, conn: Any, db: str, body: dict) -> dict:
        conn.auth.pop("conv", None)
        first = self._start_conversation(conn, db, body)
        return {"conversationId": 1, "done": False, "payload": Binary(first), "ok": 1.0}

    async def _sasl_continue(self, conn: Any, db: str, body: dict) -> dict:
        conv: _Conversation | None = conn.auth.get("conv")
        if conv is None or body.get("conversationId", 1) != 1:
            raise _error("ProtocolError", 17, "No SASL session state found")
        if conv.verified:
            # The empty final round of clients that did not ask to skip it.
            conn.auth.pop("conv", None)
            return {"conversationId": 1, "done": True, "payload": Binary(b""), "ok": 1.0}
        try:
            final = conv.server.finish(_payload(body))
        except scram.ScramError as e:
            conn.auth.pop("conv", None)
            log.info("authentication of %s@%s failed: %s", conv.user, conv.db, e)
            raise auth_failed() from e
        self._logged_in(conn).add((conv.user, conv.db))
        if conv.user == INTERNAL_USER:
            conn.internal = True
        conv.verified = True
        if conv.skip_empty:
            conn.auth.pop("conv", None)
        log.info("authenticated %s@%s with %s", conv.user, conv.db, conv.server.mechanism)
        return {"conversationId": 1, "done": conv.skip_empty, "payload": Binary(final), "ok": 1.0}

    async def _authenticate(self, conn: Any, db: str, body: dict) -> dict:
        mech = body.get("mechanism", "MONGODB-CR")
        if mech != X509:
            raise CommandError("AuthenticationFailed", f"Unsupported mechanism {mech} on authenticate command "
                               "(the simulator supports SCRAM-SHA-1 and SCRAM-SHA-256 via saslStart, and "
                               "MONGODB-X509 for members)")
        if db != EXTERNAL_DB:
            raise CommandError("BadValue", "X.509 authentication must always use the $external database.")
        cert = getattr(conn, "peer_certificate", None)
        if not cert:
            raise CommandError("AuthenticationFailed", "No verified subject name available from client")
        try:
            identity = tls.cluster_identity(cert)
        except (ValueError, IndexError):
            identity = frozenset()
        if not (self.tls.accepts_x509 and self.member_identity and identity == self.member_identity):
            # Not a member: it could only be an $external user, and the simulator keeps none.
            log.info("x509 authentication from %s refused: subject %s is not a member of this cluster",
                     conn.peer_host, sorted(identity))
            raise auth_failed()
        self._logged_in(conn).add((INTERNAL_USER, INTERNAL_DB))
        conn.internal = True
        log.info("authenticated %s@%s with %s", INTERNAL_USER, INTERNAL_DB, X509)
        return {"dbname": EXTERNAL_DB, "ok": 1.0}

    async def _logout(self, conn: Any, db: str, body: dict) -> dict:
        users = self._logged_in(conn)
        for key in [k for k in users if k[1] == db]:
            users.discard(key)
        return {"ok": 1.0}

    async def _connection_status(self, conn: Any, db: str, body: dict) -> dict:
        users = sorted(self._logged_in(conn))
        roles: list[dict] = []
        for user, udb in users:
            if user == INTERNAL_USER and udb == INTERNAL_DB:
                roles.append({"role": "__system", "db": "admin"})
                continue
            for r in (self.find_user(user, udb) or {}).get("roles", []):
                if r not in roles:
                    roles.append(dict(r))
        return {"authInfo": {"authenticatedUsers": [{"user": u, "db": d} for u, d in users],
                             "authenticatedUserRoles": roles}, "ok": 1.0}

    @staticmethod
    def _user_name(body: dict, name: str) -> str:
        user = body.get(name)
        if not isinstance(user, str) or not user:
            raise CommandError("BadValue", f"{name} must be a non-empty string naming the user")
        if user == INTERNAL_USER:
            raise CommandError("BadValue", f"Cannot use reserved user name {INTERNAL_USER}")
        return user

    async def _write(self, op: dict) -> dict:
        return await self.server.node.apply_local_write(USERS_DB, USERS_COLL, op)

    async def _create_user(self, conn: Any, db: str, body: dict) -> dict:
        self._require_user_admin(conn, "createUser", db, first_user=True)
        user = self._user_name(body, "createUser")
        pwd = body.get("pwd")
        if db == "$external" or not isinstance(pwd, str) or not pwd:
            raise CommandError("BadValue", "Must provide a 'pwd' field for all user documents, except those with "
                               "db = '$external'")
        if body.get("digestPassword") is False:
            raise CommandError("BadValue", "Use of digestPassword: false is not supported by the simulator")
        roles = parse_roles(body.get("roles", []), db)
        mechs = _mechanisms(body)
        if self.find_user(user, db) is not None:
            raise _error("Location51003", 51003, f"User \"{user}@{db}\" already exists")
        doc = {"_id": f"{db}.{user}", "userId": Binary.from_uuid(uuid.uuid4()), "user": user, "db": db,
               "credentials": {m: scram.make_credentials(m, user, pwd) for m in mechs}, "roles": roles}
        if "customData" in body:
            doc["customData"] = body["customData"]
        try:
            await self._write({"insert": doc})
        except CommandError as e:
            if e.code == 11000:
                raise _error("Location51003", 51003, f"User \"{user}@{db}\" already exists") from e
            raise
        return {"ok": 1.0}

    def _existing(self, user: str, db: str) -> dict:
        doc = self.find_user(user, db)
        if doc is None:
            raise _error("UserNotFound", 11, f"Could not find user \"{user}\" for db \"{db}\"")
        return doc

    async def _update_user(self, conn: Any, db: str, body: dict) -> dict:
        self._require_user_admin(conn, "updateUser", db)
        user = self._user_name(body, "updateUser")
        doc = self._existing(user, db)
        sets: dict[str, Any] = {}
        if "pwd" in body:
            if not isinstance(body["pwd"], str) or not body["pwd"]:
                raise CommandError("BadValue", "pwd must be a non-empty string")
            mechs = _mechanisms(body) if "mechanisms" in body else list(doc.get("credentials", {})) or list(
                scram.MECHANISMS)
            sets["credentials"] = {m: scram.make_credentials(m, user, body["pwd"]) for m in mechs}
        elif "mechanisms" in body:
            mechs = _mechanisms(body)
            if not set(mechs) <= set(doc.get("credentials", {})):
                raise CommandError("BadValue", "mechanisms field must be a subset of previously set mechanisms")
            sets["credentials"] = {m: c for m, c in doc["credentials"].items() if m in mechs}
        if "roles" in body:
            sets["roles"] = parse_roles(body["roles"], db)
        if "customData" in body:
            sets["customData"] = body["customData"]
        if not sets:
            raise CommandError("BadValue", "Must specify at least one field to update in updateUser")
        await self._write({"update": {"_id": doc["_id"]}, "u": {"$set": sets}})
        return {"ok": 1.0}

    async def _drop_user(self, conn: Any, db: str, body: dict) -> dict:
        self._require_user_admin(conn, "dropUser", db)
        user = self._user_name(body, "dropUser")
        doc = self._existing(user, db)
        await self._write({"delete": {"_id": doc["_id"]}})
        return {"ok": 1.0}

    async def _drop_all_users(self, conn: Any, db: str, body: dict) -> dict:
        self._require_user_admin(conn, "dropAllUsersFromDatabase", db)
        r = await self._write({"delete": {"db": db}})
        return {"n": r.get("n", 0), "ok": 1.0}

    async def _change_roles(self, conn: Any, db: str, body: dict, name: str, grant: bool) -> dict:
        self._require_user_admin(conn, name, db)
        user = self._user_name(body, name)
        doc = self._existing(user, db)
        if "roles" not in body:
            raise CommandError("BadValue", f"{name} requires a \"roles\" array")
        change = parse_roles(body["roles"], db)
        roles = list(doc.get("roles", []))
        roles = roles + [r for r in change if r not in roles] if grant else [r for r in roles if r not in change]
        await self._write({"update": {"_id": doc["_id"]}, "u": {"$set": {"roles": roles}}})
        return {"ok": 1.0}

    async def _grant_roles(self, conn: Any, db: str, body: dict) -> dict:
        return await self._change_roles(conn, db, body, "grantRolesToUser", True)

    async def _revoke_roles(self, conn: Any, db: str, body: dict) -> dict:
        return await self._change_roles(conn, db, body, "revokeRolesFromUser", False)

    async def _users_info(self, conn: Any, db: str, body: dict) -> dict:
        spec = body.get("usersInfo")
        wanted: list[tuple[str, str]] | None
        if spec == 1 or (isinstance(spec, dict) and spec.get("forAllDBs")):
            wanted = None
        else:
            items = spec if isinstance(spec, list) else [spec]
            wanted = []
            for it in items:
                if isinstance(it, str):
                    wanted.append((it, db))
                elif isinstance(it, dict) and isinstance(it.get("user"), str):
                    wanted.append((it["user"], it.get("db", db)))
                else:
                    raise CommandError("BadValue", f"usersInfo: invalid user specification {it!r}")
        own = self._logged_in(conn)
        # Viewing only oneself needs no privilege (mongod allows it); everything else needs userAdmin.
        if self.authorization and not (wanted is not None and set(wanted) <= own):
            for udb in ({d for _u, d in wanted} if wanted is not None else {db}):
                self._require_user_admin(conn, "usersInfo", udb)
        all_dbs = isinstance(spec, dict) and spec.get("forAllDBs")
        docs = []
        c = self._users_coll()
        for d in (list(c.find(None)) if c is not None else []):
            key = (d["user"], d["db"])
            if (wanted is None and (all_dbs or d["db"] == db)) or (wanted is not None and key in wanted):
                out = {"_id": d["_id"], "userId": d["userId"], "user": d["user"], "db": d["db"],
                       "roles": list(d.get("roles", [])), "mechanisms": sorted(d.get("credentials", {}))}
                if "customData" in d:
                    out["customData"] = d["customData"]
                if body.get("showCredentials"):
                    out["credentials"] = d.get("credentials", {})
                docs.append(out)
        docs.sort(key=lambda x: x["_id"])
        return {"users": docs, "ok": 1.0}

    # ---- handshake ------------------------------------------------------------------------------

    def hello_fields(self, conn: Any, body: dict) -> dict:
        out: dict[str, Any] = {}
        spec = body.get("saslSupportedMechs")
        if isinstance(spec, str) and "." in spec:
            udb, _, user = spec.partition(".")
            creds = self.credentials_for(user, udb)
            if creds:
                out["saslSupportedMechs"] = [m for m in scram.MECHANISMS if m in creds]
        spec_auth = body.get("speculativeAuthenticate")
        if isinstance(spec_auth, dict) and "saslStart" in spec_auth:
            # Speculative login (driver handshake spec): answer the saslStart inside hello; on any failure leave
            # the field out and the driver falls back to a normal saslStart.
            try:
                first = self._start_conversation(conn, spec_auth.get("db", "admin"), spec_auth)
            except CommandError:
                conn.auth.pop("conv", None)
            else:
                out["speculativeAuthenticate"] = {"conversationId": 1, "done": False, "payload": Binary(first)}
                log.debug("speculative authentication started for %s", spec_auth.get("db", "admin"))
        return out

    async def outbound_handshake(self, peer: Any) -> None:
        """Log in to another member as __system with the keyFile or the member certificate; failing that, the peer
        is unusable."""
        if self.tls.sends_x509:
            r = await peer.raw_call({"authenticate": 1, "mechanism": X509, "$db": EXTERNAL_DB})
            if not r.get("ok"):
                log.warning("internal authentication to %s failed: %s", peer.host, r.get("errmsg"))
                raise ConnectionError(f"internal authentication to {peer.host} failed: {r.get('errmsg')}")
            return
        if self.key is None:
            return
        mech = "SCRAM-SHA-256"
        client = scram.ClientConversation(mech, INTERNAL_USER, self.key, cache=self._client_cache)
        try:
            r = await peer.raw_call({"saslStart": 1, "mechanism": mech, "payload": Binary(client.first()),
                                     "autoAuthorize": 1, "options": {"skipEmptyExchange": True},
                                     "$db": INTERNAL_DB})
            if not r.get("ok"):
                raise scram.ScramError(r.get("errmsg", "saslStart refused"))
            final = client.final(bytes(r["payload"]))
            r = await peer.raw_call({"saslContinue": 1, "conversationId": r.get("conversationId", 1),
                                     "payload": Binary(final), "$db": INTERNAL_DB})
            if not r.get("ok"):
                raise scram.ScramError(r.get("errmsg", "saslContinue refused"))
            client.verify(bytes(r["payload"]))
        except (scram.ScramError, KeyError, ValueError) as e:
            log.warning("internal authentication to %s failed: %s", peer.host, e)
            raise ConnectionError(f"internal authentication to {peer.host} failed: {e}") from e

