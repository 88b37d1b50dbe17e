# Copyright: stateserver.ha contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""Plain data the planning code works on: machine records, replica-set members, member status. No I/O."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

MACHINE_TAG = "stateserver-machine"

STARTUP, PRIMARY, SECONDARY, RECOVERING, STARTUP2, UNKNOWN, ARBITER, DOWN, ROLLBACK, REMOVED = (
    0, 1, 2, 3, 5, 6, 7, 8, 9, 10)
STATE_NAMES = {STARTUP: "STARTUP", PRIMARY: "PRIMARY", SECONDARY: "SECONDARY", RECOVERING: "RECOVERING",
               STARTUP2: "STARTUP2", UNKNOWN: "UNKNOWN", ARBITER: "ARBITER", DOWN: "DOWN", ROLLBACK: "ROLLBACK",
               REMOVED: "REMOVED"}
MAX_VOTERS = 7
MAX_MEMBERS = 50

# Fields of a member document that the server manages itself and refuses (or rewrites) in a reconfig.
_SERVER_OWNED = ("newlyAdded",)


@dataclass(frozen=True)
class MachineRecord:
    """One state machine as recorded in stateserver.machines."""

    name: str
    mongo_address: str
    api_address: str
    wants_vote: bool = True


@dataclass(frozen=True)
class PoolHost:
    """A host of the inventory group state_machines that may serve as a state machine."""

    name: str
    mongo_address: str
    api_address: str
    reachable: bool = True


@dataclass(frozen=True)
class Member:
    """One member document of a replica-set config."""

    id: int
    host: str
    votes: int = 1
    priority: float = 1.0
    tags: dict = field(default_factory=dict, hash=False)
    extra: dict = field(default_factory=dict, hash=False)

    @property
    def voting(self) -> bool:
        return self.votes > 0

    @property
    def machine(self) -> str | None:
        return (self.tags or {}).get(MACHINE_TAG)

    @classmethod
    def from_doc(cls, doc: dict) -> Member:
        votes = int(doc.get("votes", 1))
        default_priority = 0.0 if (votes == 0 or doc.get("arbiterOnly")) else 1.0
        known = ("_id", "host", "votes", "priority", "tags") + _SERVER_OWNED
        return cls(id=int(doc["_id"]), host=str(doc["host"]), votes=votes,
                   priority=float(doc.get("priority", default_priority)), tags=dict(doc.get("tags") or {}),
                   extra={k: v for k, v in doc.items() if k not in known})

    def to_doc(self) -> dict:
        doc = dict(self.extra)
        doc.update({"_id": self.id, "host": self.host, "votes": self.votes, "priority": self.priority})
        if self.tags:
            doc["tags"] = dict(self.tags)
        return doc


@dataclass(frozen=True)
class MemberStatus:
    """One entry of replSetGetStatus.members, as seen by the node that answered."""

    id: int
    name: str
    health: int
    state: int
    state_str: str
    config_version: int
    config_term: int
    last_heartbeat_recv: datetime.datetime | None
    uptime: int
    self: bool

    @property
    def ready(self) -> bool:
        """Juju's isReady: healthy and PRIMARY or SECONDARY."""
        return self.health == 1 and self.state in (PRIMARY, SECONDARY)

    @property
    def down(self) -> bool:
        """Unreachable from the answering node. Starting or syncing members are up, not down."""
        return self.health != 1 or self.state in (DOWN, UNKNOWN, REMOVED)

    @classmethod
    def from_doc(cls, doc: dict) -> MemberStatus:
        recv = doc.get("lastHeartbeatRecv")
        if not isinstance(recv, datetime.datetime) or recv.year < 1971:
            recv = None
        state = int(doc.get("state", UNKNOWN))
        return cls(id=int(doc.get("_id", -1)), name=str(doc.get("name", "")), health=int(doc.get("health", 0)),
                   state=state, state_str=str(doc.get("stateStr", STATE_NAMES.get(state, "UNKNOWN"))),
                   config_version=int(doc.get("configVersion", -1)), config_term=int(doc.get("configTerm", -1)),
                   last_heartbeat_recv=recv, uptime=int(doc.get("uptime", 0)), self=bool(doc.get("self", False)))


def same_config(version_a, term_a, version_b, term_b) -> bool:
    """mongod's ConfigVersionAndTerm equality: a term of -1 (set by a force reconfig) compares versions only.

    A member that installed the forced config keeps term -1 after the new primary writes the same version with its
    term; mongod counts that member as having the config, so it must not hold convergence back."""
    if term_a == -1 or term_b == -1:
        return version_a == version_b
    return (version_a, term_a) == (version_b, term_b)


@dataclass(frozen=True)
class ReplSetView:
    """What was read from the set at one moment: config (None before initiate), status and the server's clock."""

    config: dict | None
    status: dict | None
    now: datetime.datetime


def members_of(config: dict | None) -> list[Member]:
    return sorted((Member.from_doc(m) for m in (config or {}).get("members", [])), key=lambda m: m.id)


def statuses_of(status: dict | None) -> list[MemberStatus]:
    return [MemberStatus.from_doc(m) for m in (status or {}).get("members", [])]


def primary_of(status: dict | None) -> MemberStatus | None:
    found = [s for s in statuses_of(status) if s.state == PRIMARY]
    return found[0] if len(found) == 1 else None


def status_now(view: ReplSetView) -> datetime.datetime:
    """The answering server's clock (status.date) when known: down-times are measured on the server's clock."""
    date = (view.status or {}).get("date")
    return date if isinstance(date, datetime.datetime) else view.now


def _aware(value: datetime.datetime) -> datetime.datetime:
    # timezone.utc, not datetime.UTC: module_utils also run on managed hosts with Python older than 3.11.
    return value if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)  # noqa: UP017


def down_for(view: ReplSetView, status: MemberStatus) -> float:
    """Seconds a member has been unreachable (0 when it is up).

    The last heartbeat received from it tells when it was last heard. A member never heard since the answering node
    started has been down at least as long as that node's uptime.
    """
    if not status.down:
        return 0.0
    now = _aware(status_now(view))
    if status.last_heartbeat_recv is not None:
        return max(0.0, (now - _aware(status.last_heartbeat_recv)).total_seconds())
    me = next((s for s in statuses_of(view.status) if s.self), None)
    return float(me.uptime) if me else 0.0
