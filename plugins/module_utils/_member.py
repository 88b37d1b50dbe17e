# Copyright: stateserver.ha contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""What mongod_member decides about one replica-set member, as pure functions over what it observed.

The module reads the member (its hello reply, whether the admin can log in, how many voters the set has), asks
these functions what to do, does it, and waits with `wait_until`. Nothing here talks to a server, so every
decision is unit-tested without one (tests/unit/test_member.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from ansible_collections.stateserver.ha.plugins.module_utils._records import AddressError, parse_address

# Server error codes the module acts on, named once.
AUTHENTICATION_FAILED = 18
ALREADY_INITIALIZED = 23
PRIMARY_STEPPED_DOWN = 189
EXCEEDED_TIME_LIMIT = 262

STATES = ("bootstrapped", "stepped_down", "started", "ready")

# Action kinds, in the order they are carried out.
INITIATE = "initiate"
CREATE_ADMIN = "create_admin"
STEP_DOWN = "step_down"


@dataclass(frozen=True)
class MemberView:
    """One member as its own hello reply shows it; `answering` is false when it did not reply at all."""

    answering: bool
    set_name: str | None = None
    primary: bool = False
    secondary: bool = False
    host: str | None = None
    members: int = 0

    @property
    def initiated(self) -> bool:
        return bool(self.set_name)

    def as_dict(self) -> dict:
        return {"answering": self.answering, "initiated": self.initiated, "set_name": self.set_name,
                "primary": self.primary, "secondary": self.secondary, "host": self.host}


def member_view(hello: dict | None) -> MemberView:
    """The view of a hello reply (None: the member did not answer)."""
    if hello is None:
        return MemberView(answering=False)
    return MemberView(answering=True, set_name=hello.get("setName") or None,
                      primary=bool(hello.get("isWritablePrimary")), secondary=bool(hello.get("secondary")),
                      host=hello.get("me"),
                      members=sum(len(hello.get(k) or []) for k in ("hosts", "passives", "arbiters")))


@dataclass(frozen=True)
class Action:
    """One thing the module does to the member, with the sentence it reports."""

    kind: str
    text: str


class MemberError(Exception):
    """A request the module must refuse, or a member in a state it cannot act on; the message says what to do."""


def validate_bootstrap_args(member_host: str | None, machine: str | None) -> None:
    """member_host must be host:port as the set will name the member; the machine tag must be non-empty."""
    try:
        parse_address(member_host)
    except AddressError as exc:
        raise MemberError(f"member_host must be HOST:PORT as the replica set names this member (for example "
                          f"192.0.2.11:37017 or [2001:db8::11]:37017), got {member_host!r}: {exc}") from None
    if not (machine or "").strip():
        raise MemberError("machine must name the state machine (the stateserver-machine tag), got an empty value")


def initiate_config(set_name: str, member_host: str, machine: str, tag: str) -> dict:
    """The one-member config a bootstrap initiates: member 0 is this host, tagged with its machine name."""
    return {"_id": set_name, "members": [{"_id": 0, "host": member_host, "tags": {tag: machine}}]}


def plan_bootstrap(view: MemberView, admin_can_log_in: bool, set_name: str, member_host: str, machine: str,
                   user: str) -> list[Action]:
    """What makes the member the start of a replica set with an admin: initiate it when it is in no set yet, and
    create the admin when it cannot log in. A member of another set is refused rather than touched."""
    if view.initiated and view.set_name != set_name:
        raise MemberError(f"this mongod belongs to replica set {view.set_name!r}, not {set_name!r}; it is not "
                          "bootstrapped again (set replica_set to its name, or give it an empty data directory)")
    if view.initiated and not admin_can_log_in and view.members > 1:
        # The localhost exception only ever helps a fresh one-member set: here users exist and the password is wrong.
        raise MemberError(f"cannot log in as {user!r} to replica set {set_name}, which already has {view.members} "
                          "members; the admin password given is not the deployed one (check mongod_admin_password "
                          "or the secrets directory)")
    actions = []
    if not view.initiated:
        actions.append(Action(INITIATE, f"initiate replica set {set_name} with this member {member_host} "
                                        f"(machine {machine})"))
    if not admin_can_log_in:
        actions.append(Action(CREATE_ADMIN, f"create the admin user {user} through the localhost exception"))
    return actions


def plan_step_down(view: MemberView, voters: int) -> tuple[list[Action], str]:
    """Step the member down when it is the primary and another voter can take over. Returns (actions, why)."""
    if not view.primary:
        return [], "this member is not the primary"
    if voters < 2:
        # A lone voter cannot hand over: it is restarted as the primary and elects itself again.
        return [], "this member is the only voter; nothing can take over, so it is not stepped down"
    who = f"the primary {view.host}" if view.host else "the primary"
    return [Action(STEP_DOWN, f"step {who} down so that another voter takes over")], "this member is the primary"


def is_ready(view: MemberView, state: str) -> bool:
    """started: the member answers. ready: it is PRIMARY or SECONDARY. stepped_down: it is not the primary."""
    if state == "started":
        return view.answering
    if state == "ready":
        return view.primary or view.secondary
    if state == "stepped_down":
        return view.answering and not view.primary
    if state == "bootstrapped":
        return view.primary
    raise ValueError(f"unknown state {state!r}")


def waiting_for(state: str) -> str:
    return {"started": "the member to answer", "ready": "the member to be PRIMARY or SECONDARY",
            "stepped_down": "the step-down to finish", "bootstrapped": "this member to become the primary"}[state]


def readiness_message(state: str, reached: bool) -> str:
    """The one-line result of a started/ready call; only check mode, which does not wait, reports "not yet"."""
    yes, no = {"started": ("answers", "does not answer"),
               "ready": ("is PRIMARY or SECONDARY", "is not PRIMARY or SECONDARY")}[state]
    return f"the member {yes}" if reached else f"the member {no} yet (check mode does not wait)"


class WaitTimeout(Exception):
    """The awaited state was not reached in time; `last` is the last observation (or error) for the message."""

    def __init__(self, what: str, timeout: float, last: object) -> None:
        super().__init__(f"timed out after {timeout:g}s waiting for {what}; last seen: {last}")
        self.last = last


def wait_until(probe: Callable[[], object], done: Callable[[object], bool], timeout: float, what: str, *,
               transient: tuple = (), clock: Callable[[], float] = time.monotonic,
               sleep: Callable[[float], None] = time.sleep, first: float = 0.1, cap: float = 1.0) -> object:
    """Call probe() until done(its value) or `timeout` seconds pass; return that value.

    The pause starts at `first` (a local member usually changes state within a heartbeat or two) and doubles up to
    `cap`. Errors of the `transient` types count as "not yet"; the last one is reported on timeout.
    """
    deadline = clock() + timeout
    pause = first
    last: object = None
    while True:
        try:
            last = probe()
            if done(last):
                return last
        except transient as exc:
            last = exc
        remaining = deadline - clock()
        if remaining <= 0:
            raise WaitTimeout(what, timeout, last)
        sleep(min(pause, remaining))
        pause = min(pause * 2, cap)
