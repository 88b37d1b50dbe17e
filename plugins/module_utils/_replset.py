# Copyright: stateserver.ha contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""The only pymongo adapter of the collection.

It reads the replica set (config, status, hello, machine records), writes machine records with majority write
concern, sends one replSetReconfig at a time and steps the primary down. It never decides anything: the planning
code does, and the convergence loop (_converge.py) chooses what to send and when.
"""

from __future__ import annotations

import atexit
import datetime
import importlib
import os
import socket
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor

try:
    from pymongo import MongoClient, ReadPreference
    from pymongo.errors import (
        AutoReconnect,
        ConnectionFailure,
        OperationFailure,
        PyMongoError,
    )
    from pymongo.write_concern import WriteConcern

    HAS_PYMONGO = True
    PYMONGO_IMPORT_ERROR = None
except ImportError:
    HAS_PYMONGO = False
    PYMONGO_IMPORT_ERROR = traceback.format_exc()


from ansible_collections.stateserver.ha.plugins.module_utils._args import (
    check_connection,
    connection_defaults,
    host_port,
)
from ansible_collections.stateserver.ha.plugins.module_utils._model import (
    MachineRecord,
    ReplSetView,
)
from ansible_collections.stateserver.ha.plugins.module_utils._records import (
    RECORDS_COLLECTION,
    RECORDS_DATABASE,
    address_key,
    parse_record_docs,
    record_to_doc,
)
from ansible_collections.stateserver.ha.plugins.module_utils._users import CREATE, SET_PASSWORD, SET_ROLES, user_plan


def exit_without_joining_monitors() -> None:
    """Let this process exit as soon as its result is printed, not half a second later.

    pymongo registers an exit handler that joins the monitor threads of every client it made. A closed monitor
    only notices at its next 0.5 s tick, so each module process idled that long after its result (about a third of
    a module call). The modules close every client they open (`with`), and the threads are daemons, so nothing is
    lost by not waiting. A pymongo without that handler (another version) is left as it is.
    """
    if not HAS_PYMONGO:
        return
    for name in ("pymongo.synchronous.monitor", "pymongo.monitor"):
        try:
            handler = getattr(importlib.import_module(name), "_shutdown_resources", None)
        except ImportError:
            continue
        if handler is not None:
            atexit.unregister(handler)


# Seconds to wait for a TCP connection to a seed while probing: loopback and a LAN answer in milliseconds, and a
# refusal (no mongod) comes back at once; only an unreachable host costs this much, once, in parallel.
PROBE_CONNECT_TIMEOUT = 1.0

# Server error codes that mean "the primary changed under us": the outcome of the operation is unknown.
_STATE_CHANGE_CODES = frozenset({
    91,     # ShutdownInProgress
    189,    # PrimarySteppedDown
    10107,  # NotWritablePrimary
    11600,  # InterruptedAtShutdown
    11602,  # InterruptedDueToReplStateChange
    13435,  # NotPrimaryNoSecondaryOk
})
# Reconfig refusals that clear by themselves: re-read the set, back off, plan again (mongod's codes).
_RETRY_RECONFIG_CODES = {
    74: "NodeNotFound",                     # quorum check: a member the new config needs did not answer
    109: "ConfigurationInProgress",         # the previous config is being installed
    117: "ConflictingOperationInProgress",  # another reconfig (another run) is under way
    308: "CurrentConfigNotCommittedYet",    # the previous config is not on a majority yet
}
_MAX_TIME_EXPIRED = 50
# The node we sent to would not be electable under the new config: the primary changed since we read the set.
_NODE_NOT_ELECTABLE = 104
_AUTHENTICATION_FAILED = 18
# The new config does not follow from the current one: a concurrent reconfig moved the version, or a real refusal.
_INCOMPATIBLE = 103
_NOT_INITIATED_CODES = frozenset({
    93,   # InvalidReplicaSetConfig (old servers before initiate)
    94,   # NotYetInitialized
})


class ReplSetError(Exception):
    """A replica-set operation failed in a way the caller should report as is (names the operation).

    `outcome` is what a convergence run did before the failure (set by the loop that raises it), else None.
    """

    outcome = None


class RecordsWriteError(ReplSetError):
    """Writing the machine records failed part way; `written` names the records written or deleted before it."""

    def __init__(self, message: str, written: list[str]) -> None:
        super().__init__(message)
        self.written = written


class TransientError(ReplSetError):
    """The operation did not happen or its outcome is unknown; re-read the set and plan again.

    `code` is the server's error code when the server refused (None for a connection failure).
    """

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class PrimaryChanged(TransientError):
    """The primary the plan was made for is not the primary any more (NodeNotElectable): re-read and re-plan."""


class ConfigIncompatible(ReplSetError):
    """mongod refused a reconfig that passed the client-side checks (NewReplicaSetConfigurationIncompatible).

    Either another reconfig moved the config version since it was read (re-plan), or the server knows better than
    the checks (fail with its words). `version` is the version the refused config carried, `errmsg` the server's.
    """

    def __init__(self, message: str, version: int, errmsg: str) -> None:
        super().__init__(message)
        self.version = version
        self.errmsg = errmsg


class InvalidRecords(ReplSetError):
    """Machine records fail validation: acting on them would be guessing. Carries the valid records and the problems."""

    def __init__(self, problems: list[str], records: list[MachineRecord]) -> None:
        super().__init__(
            f"the machine records in {RECORDS_DATABASE}.{RECORDS_COLLECTION} are not valid, so nothing was changed: "
            + "; ".join(problems))
        self.problems = problems
        self.records = records


# How a seed's answer starts when not even a TCP connection was made to it (nothing listens, or it is off).
NOTHING_LISTENS = "nothing answers at"


def listening_but_silent(answers: dict) -> dict:
    """The seeds of a probe that took a TCP connection but gave no hello ({seed: error text}): a TLS handshake
    that does not verify (another CA, TLS on one side only), a mongod still starting, or something else on the
    port. Such a seed may well be a member of a running set, so its silence never means a first deployment."""
    return {seed: error for seed, error in answers.items()
            if isinstance(error, str) and not error.startswith(NOTHING_LISTENS)}


def listening_problem(listening: dict) -> str:
    """Why seeds that took a connection but gave no hello (listening_but_silent) stop a "first deployment"."""
    return ("no seed answered hello, so this could look like a first deployment, but "
            + "; ".join(f"{seed} took a connection and then failed: {error}"
                        for seed, error in sorted(listening.items()))
            + ". A replica set may run there: check the TLS settings (the deployment CA, stateserver_tls) and that "
              "mongod has started, then run again. Nothing was changed")


class NoSeedAnswered(ReplSetError):
    """No seed answered at all (nothing listens, or nothing reachable): no mongod of this set runs there yet.

    `answers` maps each seed to the error text it gave, for callers that decide what a silent set means.
    """

    def __init__(self, message: str, answers: dict) -> None:
        super().__init__(message)
        self.answers = answers


def seed_list(seeds: list[str], port: int, what: str = "seeds") -> list[str]:
    """Seeds as host:port strings; a seed without a port gets the default port (IPv6 literals bracketed).

    Raises ValueError naming `what`[i] when one is not host, host:port or an IPv6 address (see _args.host_port).
    """
    return [host_port(seed, port, f"{what}[{i}]") for i, seed in enumerate(seeds)]


def client_options(params: dict) -> dict:
    """pymongo keyword arguments for the shared connection options (see _args.py), named as pymongo names them."""
    opts: dict = {
        "serverSelectionTimeoutMS": int(float(params.get("server_selection_timeout") or 10) * 1000),
        "connectTimeoutMS": 5000,
        "tz_aware": False,
        "appname": "stateserver.ha",
    }
    if params.get("login_user"):
        opts["username"] = params["login_user"]
        opts["password"] = params.get("login_password")
        opts["authSource"] = params.get("login_database") or "admin"
    if params.get("tls"):
        opts["tls"] = True
        if params.get("tls_ca_file"):
            opts["tlsCAFile"] = params["tls_ca_file"]
        if params.get("tls_certificate_key_file"):
            opts["tlsCertificateKeyFile"] = params["tls_certificate_key_file"]
        if params.get("tls_certificate_key_file_password"):
            opts["tlsCertificateKeyFilePassword"] = params["tls_certificate_key_file_password"]
        if params.get("tls_allow_invalid_certificates"):
            opts["tlsAllowInvalidCertificates"] = True
    return opts


def unreadable_tls_file(params: dict) -> str | None:
    """A message naming the TLS file option this controller cannot read, else None. pymongo would raise a bare
    OSError while building its client, which names no option."""
    if not params.get("tls"):
        return None
    for option in ("tls_ca_file", "tls_certificate_key_file"):
        path = params.get(option)
        if path and not os.access(path, os.R_OK):
            return f"{option} {path!r} cannot be read here (missing, or no permission); give a readable PEM file"
    return None


def _utcnow() -> datetime.datetime:
    # Naive UTC, the same kind of datetime pymongo returns with tz_aware=False.
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)  # noqa: UP017 (targets may run 3.8+)


def _code(exc: Exception) -> int | None:
    return getattr(exc, "code", None)


def _is_state_change(exc: Exception) -> bool:
    return isinstance(exc, AutoReconnect) or (isinstance(exc, OperationFailure) and _code(exc) in _STATE_CHANGE_CODES)


def same_members(a: dict | None, b: dict | None) -> bool:
    """Whether two configs have the same member documents (the parts a reconfig sets)."""
    def key(config: dict | None) -> list:
        members = (config or {}).get("members") or []
        return sorted(
            (m["_id"], m["host"], int(m.get("votes", 1)), float(m.get("priority", 1.0)),
             bool(m.get("hidden", False)), tuple(sorted((m.get("tags") or {}).items())))
            for m in members
        )
    return key(a) == key(b)


class ReplSet:
    """A connection to the replica set through its seeds. Use as a context manager so the client is closed."""

    def __init__(self, params: dict) -> None:
        # Options left out (or None) take the documented defaults, as they would through the argument spec.
        params = {**connection_defaults(), **{k: v for k, v in params.items() if v is not None}}
        problem = check_connection(params) or unreadable_tls_file(params)
        if problem:
            raise ReplSetError(problem)
        self.params = params
        self.seeds = seed_list(params["seeds"], params["port"])
        self.set_name = params["replica_set"]
        self.options = client_options(params)
        self._client = None
        # One direct client per (host, with credentials) for the whole run: a fresh client costs a monitor thread
        # and a handshake before its first command, and the convergence loop asks the same members every round.
        self._kept: dict = {}
        self._kept_lock = threading.Lock()
        self.initiated: bool | None = None

    # -- connection -------------------------------------------------------------------------------------------

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        with self._kept_lock:
            kept, self._kept = list(self._kept.values()), {}
        for client in kept:
            client.close()

    def direct(self, seed: str, auth: bool = False):
        """A client connected to one member only (directConnection), with the run's options; `auth` keeps the
        credentials (commands beyond hello need them). Use it as a context manager."""
        opts = dict(self.options)
        opts["directConnection"] = True
        if not auth:
            # hello needs no authentication; leaving credentials out keeps a fresh, user-less member answering.
            for key in ("username", "password", "authSource"):
                opts.pop(key, None)
        return MongoClient(seed, **opts)

    def kept(self, host: str, auth: bool = False) -> tuple:
        """(client, fresh): the run's direct client to `host` (see direct), made on first use, closed by close().
        `fresh` tells a client made by this call from one that has been used before."""
        with self._kept_lock:
            client = self._kept.get((host, auth))
            if client is not None:
                return client, False
            client = self._kept[(host, auth)] = self.direct(host, auth)
            return client, True

    def forget(self, host: str, auth: bool, client) -> None:
        """Close a kept client that lost its connection: pymongo would hold that server as unknown until its next
        check (at least half a second away), where a new client connects at once."""
        with self._kept_lock:
            if self._kept.get((host, auth)) is client:
                del self._kept[(host, auth)]
        client.close()

    def _probe_one(self, seed: str):
        """hello from one seed, or the error text. A TCP connect first: a host where nothing listens (a spare
        without mongod) answers at once with a refusal, where pymongo would wait out the server selection."""
        host, port = seed.rsplit(":", 1)
        timeout = min(PROBE_CONNECT_TIMEOUT, self.options["serverSelectionTimeoutMS"] / 1000)
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
        except OSError as exc:
            return f"{NOTHING_LISTENS} {seed}: {exc.strerror or exc}"
        while True:
            try:
                client, fresh = self.kept(seed)
            except PyMongoError as exc:
                return str(exc)
            try:
                return client.admin.command("hello")
            except ConnectionFailure as exc:
                self.forget(seed, False, client)
                # A used client's connection may be one the member closed since (it restarted): one more try on a
                # new client, which the TCP connect above says will reach it. A new client's failure is the answer.
                if fresh:
                    return str(exc)
            except PyMongoError as exc:
                return str(exc)

    def probe(self) -> dict:
        """hello from every seed, directly and in parallel: {seed: hello document or the error text}.

        Finds uninitiated members. A call costs about the slowest seed, never the sum of them.
        """
        return self.hellos(self.seeds)

    def hellos(self, addresses: list[str]) -> dict:
        """hello from each address (host:port), directly and in parallel: {address: hello document or error text}."""
        if not addresses:
            return {}
        with ThreadPoolExecutor(max_workers=min(len(addresses), 16)) as pool:
            return dict(zip(addresses, pool.map(self._probe_one, addresses)))

    def too_stale(self, hosts: list[str]) -> frozenset:
        """The hosts among `hosts` that say they are too stale to catch up.

        Only the member itself knows: it is RECOVERING to everyone else, and its own replSetGetStatus carries
        tooStale: true (mongod's maintenance mode after its sync sources' oplogs moved past it). Asked directly
        and in parallel; a host that cannot be asked is not reported.
        """
        def ask(host: str) -> bool:
            opts = dict(self.options, directConnection=True, serverSelectionTimeoutMS=int(PROBE_CONNECT_TIMEOUT * 2000))
            try:
                with MongoClient(host, **opts) as client:
                    return bool(client.admin.command("replSetGetStatus").get("tooStale"))
            except PyMongoError:
                return False
        if not hosts:
            return frozenset()
        with ThreadPoolExecutor(max_workers=min(len(hosts), 16)) as pool:
            return frozenset(h for h, stale in zip(hosts, pool.map(ask, hosts)) if stale)

    @property
    def client(self):
        if self._client is None:
            try:
                self._client = MongoClient(self.seeds, replicaSet=self.set_name, **self.options)
            except (PyMongoError, ValueError, TypeError) as exc:  # e.g. a TLS file pymongo cannot use
                raise ReplSetError(f"cannot set up a client for replica set {self.set_name!r}: {exc}") from exc
        return self._client

    def discover(self, answers: dict | None = None) -> bool:
        """Whether the replica set exists. False when every seed that answers is a member that was never initiated.

        `answers` are the seeds' answers when the caller has just probed them (probe()); else they are asked.
        Raises NoSeedAnswered when no seed answers, ReplSetError when the seeds belong to another replica set.
        """
        if answers is None:
            answers = self.probe()
        hellos = {seed: a for seed, a in answers.items() if isinstance(a, dict)}
        if not hellos:
            errors = "; ".join(f"{seed}: {error}" for seed, error in answers.items())
            raise NoSeedAnswered(
                f"cannot reach any seed of replica set {self.set_name!r} ({', '.join(self.seeds)}): {errors}; "
                "check that mongod runs there and that the seeds and port are right", answers)
        names = {h.get("setName") for h in hellos.values() if h.get("setName")}
        foreign = names - {self.set_name}
        if foreign:
            raise ReplSetError(f"the seeds belong to replica set {', '.join(sorted(foreign))}, not {self.set_name!r}; "
                               "set replica_set to the right name")
        self.initiated = bool(names)
        return self.initiated

    # -- reads ------------------------------------------------------------------------------------------------

    def _admin(self, command: str, client=None, **kwargs) -> dict:
        try:
            return (client or self.client).admin.command(command, read_preference=ReadPreference.PRIMARY_PREFERRED,
                                                         **kwargs)
        except OperationFailure as exc:
            if _code(exc) in _NOT_INITIATED_CODES:
                raise
            raise ReplSetError(f"{command} failed: {exc}") from exc
        except ConnectionFailure as exc:
            raise TransientError(f"{command} failed: cannot reach a member of {self.set_name!r}: {exc}") from exc

    def read_view(self, via: str | None = None) -> ReplSetView:
        """Config and status of the set, or a view with config None when the set was never initiated.

        `via` (host:port) reads them from that member directly: the primary's own view, where the driver's
        topology may still route a read to a secondary that lists the old primary.
        """
        if self.initiated is None:
            self.discover()
        if not self.initiated:
            return ReplSetView(config=None, status=None, now=_utcnow())
        direct = self.kept(via, auth=True)[0] if via else None
        try:
            # mongod hides its own newlyAdded flag unless asked; without it a member that does not count as a
            # voter yet would read as one, and a run could report converged too early.
            config = self._admin("replSetGetConfig", direct, **{"$_internalIncludeNewlyAdded": True})["config"]
            status = self._admin("replSetGetStatus", direct)
        except OperationFailure as exc:
            if _code(exc) in _NOT_INITIATED_CODES:
                return ReplSetView(config=None, status=None, now=_utcnow())
            raise ReplSetError(str(exc)) from exc
        except TransientError:
            if direct is not None:
                self.forget(via, True, direct)
            raise
        now = status.get("date") if isinstance(status.get("date"), datetime.datetime) else _utcnow()
        return ReplSetView(config=config, status=status, now=now)

    def _records(self, write: bool = False, primary: bool = False):
        db = self.client.get_database(RECORDS_DATABASE)
        if write:
            return db.get_collection(RECORDS_COLLECTION, write_concern=WriteConcern(w="majority", wtimeout=30000))
        # primary: from the primary only, as a plan that writes must read (a new client may hear from a lagging
        # secondary first). Else from the primary when pymongo knows one, a member otherwise (status, messages).
        return db.get_collection(RECORDS_COLLECTION, read_preference=ReadPreference.PRIMARY if primary
                                 else ReadPreference.PRIMARY_PREFERRED)

    def read_record_docs(self, primary: bool = False) -> list[dict]:
        """The documents of stateserver.machines as stored, sorted by _id ([] before the set exists); with
        `primary`, as the primary has them (waiting for pymongo to find it)."""
        if self.initiated is None:
            self.discover()
        if not self.initiated:
            return []
        try:
            return list(self._records(primary=primary).find({}, {"created": 0}).sort("_id", 1))
        except ConnectionFailure as exc:
            raise TransientError(f"cannot read the machine records: {exc}") from exc
        except PyMongoError as exc:
            raise ReplSetError(f"cannot read the machine records {RECORDS_DATABASE}.{RECORDS_COLLECTION}: {exc}") from exc

    def read_records(self, primary: bool = False) -> list[MachineRecord]:
        """The machine records, sorted by name ([] before the set exists); `primary` as read_record_docs. Raises
        InvalidRecords when any document fails validation (_records.parse_record_docs): the caller refuses rather
        than guesses."""
        records, problems = parse_record_docs(self.read_record_docs(primary))
        if problems:
            raise InvalidRecords(problems, records)
        return records

    def read_user(self, name: str, database: str) -> list[dict] | None:
        """The roles of user `name` of `database` as the primary stores them, or None when there is no such user."""
        try:
            users = self.client[database].command("usersInfo", {"user": name, "db": database},
                                                  read_preference=ReadPreference.PRIMARY).get("users") or []
        except PyMongoError as exc:
            raise ReplSetError(f"usersInfo for {name}@{database} failed: {exc}") from exc
        return [{"role": r["role"], "db": r["db"]} for r in users[0].get("roles", [])] if users else None

    def password_works(self, name: str, database: str, password: str) -> bool:
        """Whether `password` logs in as `name` (authSource `database`): the only way to compare a password, since
        the server keeps salted hashes. Any other failure (no primary, TLS) is raised, not taken for a wrong one."""
        options = {**self.options, "username": name, "password": password, "authSource": database}
        try:
            with MongoClient(self.seeds, replicaSet=self.set_name, **options) as client:
                client.admin.command("ping")
        except OperationFailure as exc:
            if _code(exc) == _AUTHENTICATION_FAILED:
                return False
            raise ReplSetError(f"logging in as {name}@{database} failed: {exc}") from exc
        except PyMongoError as exc:
            raise ReplSetError(f"cannot log in as {name}@{database}: {exc}") from exc
        return True

    def save_user(self, name: str, database: str, create: bool, password: str | None, roles: list[dict] | None):
        """createUser, or updateUser with the password and/or roles given, acknowledged by a majority."""
        command = {"createUser" if create else "updateUser": name}
        if password is not None:
            command["pwd"] = password
        if roles is not None:
            command["roles"] = roles
        command["writeConcern"] = {"w": "majority"}
        try:
            self.client[database].command(command)
        except PyMongoError as exc:
            # The message of a failed createUser/updateUser never holds the password.
            raise ReplSetError(f"{next(iter(command))} {name}@{database} failed: {exc}") from exc

    def keep_user(self, name: str, database: str, password: str, roles: list[dict], apply: bool) -> list[str]:
        """The changes (_users.user_plan) that make user `name` of `database` exist with exactly `roles` and
        `password`; sent only when `apply` (check mode reads only). Raises ReplSetError, never with the password."""
        existing = self.read_user(name, database)
        works = existing is not None and self.password_works(name, database, password)
        plan = user_plan(existing, works, roles)
        if plan and apply:
            self.save_user(name, database, create=CREATE in plan,
                           password=password if CREATE in plan or SET_PASSWORD in plan else None,
                           roles=roles if CREATE in plan or SET_ROLES in plan else None)
        return plan

    # -- writes -----------------------------------------------------------------------------------------------

    def write_records(self, before: list[MachineRecord], after: list[MachineRecord]) -> list[str]:
        """Make the records equal `after` (majority write concern). Returns the names written or deleted."""
        old = {r.name: r for r in before}
        new = {r.name: r for r in after}
        coll = self._records(write=True)
        touched = []
        try:
            for name in sorted(new):
                if old.get(name) == new[name]:
                    continue
                doc = record_to_doc(new[name])
                doc.pop("_id")
                coll.update_one({"_id": name}, {"$set": doc, "$setOnInsert": {"created": _utcnow()}}, upsert=True)
                touched.append(name)
            for name in sorted(set(old) - set(new)):
                coll.delete_one({"_id": name})
                touched.append(name)
        except PyMongoError as exc:
            raise RecordsWriteError(
                f"writing the machine records with majority write concern failed after {touched or 'no record'}: "
                f"{exc}; re-run to continue (the records are re-read, nothing is lost)", touched) from exc
        return touched

    def reconfig(self, config: dict, max_time: float = 60.0) -> bool:
        """Send one replSetReconfig. True when the new config is verifiably installed on the primary.

        A connection drop or a primary change while the command runs leaves its outcome unknown: the config is
        re-read and compared, never sent again blindly. A refusal that clears by itself raises TransientError
        (PrimaryChanged for 104), a refusal of the config itself ConfigIncompatible; anything else ReplSetError.
        `max_time` bounds the server's own wait for the previous config to commit (maxTimeMS).
        """
        version = config.get("version")
        try:
            self.client.admin.command("replSetReconfig", config, maxTimeMS=max(1, int(max_time * 1000)))
            return True
        except OperationFailure as exc:
            code = _code(exc)
            errmsg = (exc.details or {}).get("errmsg") or str(exc)
            # A primary change, or maxTimeMS spent waiting for a majority to install it: it may have landed.
            if _is_state_change(exc) or code == _MAX_TIME_EXPIRED:
                return self._verify(config)
            if code in _RETRY_RECONFIG_CODES:
                raise TransientError(f"replSetReconfig to version {version} was refused for now "
                                     f"({_RETRY_RECONFIG_CODES[code]}): {errmsg}", code) from exc
            if code == _NODE_NOT_ELECTABLE:
                raise PrimaryChanged(f"replSetReconfig to version {version} was refused because the primary changed "
                                     f"(NodeNotElectable): {errmsg}", code) from exc
            if code == _INCOMPATIBLE:
                raise ConfigIncompatible(f"replSetReconfig to version {version} was refused by the server "
                                         f"(NewReplicaSetConfigurationIncompatible): {errmsg}",
                                         int(version or 0), errmsg) from exc
            raise ReplSetError(f"replSetReconfig to version {version} was rejected by the server: {exc}") from exc
        except ConnectionFailure:
            return self._verify(config)

    def config_version(self) -> int:
        """The version of the config the primary (or, without one, any member) has now."""
        return int(self._admin("replSetGetConfig")["config"].get("version", 0))

    def _verify(self, config: dict) -> bool:
        try:
            current = self._admin("replSetGetConfig")["config"]
        except ReplSetError:
            return False
        return int(current.get("version", 0)) >= int(config.get("version", 0)) and same_members(current, config)

    def step_down(self, host: str, seconds: int = 60):
        """Ask the member at `host`, and only it, to step down, over a direct connection. Returns the electionId of
        the term it was primary in (None if it gave none), to tell the next primary from it.

        It is asked first whether it is that member and the primary: through the replica-set client the command
        goes to whoever the driver thinks is primary, which after an election may be an innocent new primary.
        Raises PrimaryChanged (nothing sent) when it is not. Its connections drop when it obeys, so a drop means it did.
        """
        election = None
        try:
            with self.direct(host, auth=True) as client:
                hello = client.admin.command("hello")
                if not (hello.get("isWritablePrimary") and address_key(str(hello.get("me") or "")) == address_key(host)):
                    raise PrimaryChanged(f"{host} is not the primary now (it names {hello.get('primary') or 'none'}); "
                                         "the step-down was not sent", None)
                election = hello.get("electionId")
                try:
                    client.admin.command("replSetStepDown", seconds, secondaryCatchUpPeriodSecs=min(10, seconds))
                except ConnectionFailure:
                    return election
        except ConnectionFailure as exc:
            raise TransientError(f"cannot reach {host} to step it down: {exc}") from exc
        except OperationFailure as exc:
            if _is_state_change(exc):
                return election
            # 262 ExceededTimeLimit: no electable secondary caught up in time; the loop retries later.
            raise TransientError(f"replSetStepDown on {host} failed: {exc}", _code(exc)) from exc
        return election

    def new_primary(self, old: str, hosts: list[str], election=None) -> str | None:
        """The member that says it is primary after a step-down of `old`, asked directly; None while there is none.

        Asks every host in parallel: exactly one must answer as the writable primary at its own address, elected
        after the step-down (another electionId than `election`, or when that is unknown, another host than `old`).
        A secondary's view of who is primary can lag an election by a heartbeat; the members' own answers cannot.
        The old primary re-elected (its step-down period over, or it never stepped down) counts: it is primary again.
        """
        answers = self.hellos(hosts)
        found = [h for h, a in answers.items() if isinstance(a, dict) and a.get("isWritablePrimary")
                 and address_key(str(a.get("me") or "")) == address_key(h)]
        if len(found) != 1:
            return None
        if election is not None:
            return found[0] if answers[found[0]].get("electionId") != election else None
        return None if address_key(found[0]) == address_key(old) else found[0]
