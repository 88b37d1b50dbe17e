# Copyright: stateserver.ha contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""The convergence loop of peergroup: plan from observed state, send one step, wait until the set is ready, repeat.

This is the only place in the collection that sleeps. The clock is a Deadline over time.monotonic(). Waits start
at a few round trips (MIN_DELAY) and double up to a quarter of the set's own heartbeat interval
(settings.heartbeatIntervalMillis), stay there for two heartbeats, then double again, capped at two heartbeats, and
start again after progress (Backoff.for_heartbeat). After a reconfig mongod 7.0 heartbeats every member at once,
each member fetches the new config and heartbeats back at once, and the primary answers that with a heartbeat that
records the member's new version: the set shows the new config on every member within a few round trips, not a
heartbeat interval, so an even voter count in the middle of a growth is held no longer than the next member's
readiness needs. Readiness is a pure predicate over a replSetGetStatus document. Check mode plans the whole sequence
(assuming every member becomes ready) and sends nothing.

What the primary learns only from its regular heartbeats can be up to one interval old (2 s by default): a member
added a moment ago is still STARTUP2 there after it has synced, and on a server without that immediate answer (it
is in 7.0; older releases may lack it) a secondary that fetched the last config is still on the one before. Members
the primary reaches but lists like that are asked directly (hello), and the next step is planned on what they say
about themselves (own_view); mongod takes a reconfig whatever the primary's view of a member, and still waits by
itself for the previous config to be committed before it installs the next. A run ends only when the primary itself
shows every member ready (their config version may be their own word).

How each refusal mongod sends is handled (codes from its error_codes.yml):
  74 NodeNotFound, 109 ConfigurationInProgress, 117 ConflictingOperationInProgress, 308
  CurrentConfigNotCommittedYet: back off, re-read, re-plan, within the deadline.
  104 NodeNotElectable (the primary changed since the read): re-read at once; the plan steps the new primary down
  first when it must lose its vote.
  103 NewReplicaSetConfigurationIncompatible: re-read the config version. Moved: another run reconfigured first,
  re-plan. Not moved: mongod refuses this config for a reason the client-side checks missed: fail at once with the
  server's words (retrying would only repeat the refusal until the timeout).
  10107 NotWritablePrimary, 189 PrimarySteppedDown, 11602 InterruptedDueToReplStateChange, 50 MaxTimeMSExpired
  (installed, not yet on a majority), a dropped connection: the outcome is unknown; the config is re-read, the
  step counted only if it landed, and never sent again blindly.

A step-down reaches only the member the step names (the adapter asks it directly whether it is that member and the
primary, else the set is re-read), and after one the loop plans again only once another member says, asked
directly, that it is primary, from that primary's own view: a secondary that still lists the old primary would
otherwise have it stepped down again, and the step-down would reach the new, innocent primary (issue 13).

Two runs at once are harmless by design: every step is computed from the config it was read from and carries that
config's version + 1, and mongod installs a non-force reconfig only when its version is greater than the current
one, so a step planned from a config that another run has already changed is refused (103, 109 or 117) and
re-planned from the new config. Every installed config is therefore one safe step from the one before it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ansible_collections.stateserver.ha.plugins.module_utils._model import (
    MACHINE_TAG,
    RECOVERING,
    SECONDARY,
    STARTUP,
    STARTUP2,
    STATE_NAMES,
    MachineRecord,
    ReplSetView,
    same_config,
)
from ansible_collections.stateserver.ha.plugins.module_utils._peergroup import (
    PeerGroupError,
    convergence_report,
    plan_steps,
)
from ansible_collections.stateserver.ha.plugins.module_utils._records import (
    address_key,
    answers_as_member,
    hello_members,
)
from ansible_collections.stateserver.ha.plugins.module_utils._replset import (
    ConfigIncompatible,
    PrimaryChanged,
    ReplSetError,
    TransientError,
    same_members,
)
from ansible_collections.stateserver.ha.plugins.module_utils._rules import (
    validate_reconfig,
)
from ansible_collections.stateserver.ha.plugins.module_utils._status import member_states

PRIMARY = 1
# States in which the primary may still list a member that has finished joining or recovering: its next heartbeat to
# the member would show SECONDARY.
JOINING_STATES = frozenset({STARTUP, STARTUP2, RECOVERING})
# mongod's default settings.heartbeatIntervalMillis, for a config that does not say.
DEFAULT_HEARTBEAT = 2.0
# Waits start at MIN_DELAY seconds (a few round trips on a LAN), double up to a quarter heartbeat, and grow to at
# most this many heartbeats (and never beyond MAX_DELAY seconds).
CAP_HEARTBEATS = 2
MIN_DELAY = 0.05
MAX_DELAY = 16.0
# Waits stay at a quarter heartbeat for this many heartbeats before they grow: what the primary learns from its
# regular heartbeats (a synced member's state) shows within one or two of them, and a read costs one replSetGetStatus.
STEADY_HEARTBEATS = 2
# A reconfig's own server-side wait (maxTimeMS) for the previous config to commit.
MAX_RECONFIG_WAIT = 60.0


class PlanError(ReplSetError):
    """A planned step would be rejected by MongoDB, or was; nothing more was sent."""


class RecordsMismatch(ReplSetError):
    """The records peergroup was given are not the stored ones; nothing was sent."""


@dataclass
class Outcome:
    """What a run did (or, in check mode, would do) and where the set ended up."""

    steps: list = field(default_factory=list)
    before: dict | None = None
    after: dict | None = None
    status: dict | None = None
    converged: bool = False
    reasons: list = field(default_factory=list)
    elapsed: float = 0.0

    def as_result(self) -> dict:
        """The module's return values (JSON-serialisable)."""
        return {
            "steps": list(self.steps),
            "members": member_summary(self.after, self.status),
            "primary": primary_host(self.status),
            "voters": voter_names(self.after),
            "config_version": int((self.after or {}).get("version", 0)),
            "converged": self.converged,
            "not_converged": list(self.reasons),
            "elapsed": round(self.elapsed, 1),
        }


class ConvergeTimeout(ReplSetError):
    """The set did not converge before the deadline; carries the partial outcome."""

    def __init__(self, message: str, outcome: Outcome) -> None:
        super().__init__(message)
        self.outcome = outcome


class Deadline:
    """A bounded clock: time.monotonic() with a hard end. pause() is the loop's only sleep and never overshoots."""

    def __init__(self, timeout: float, clock=time.monotonic, sleep=time.sleep) -> None:
        self.timeout = timeout
        self._clock = clock
        self._sleep = sleep
        self.start = clock()
        self.end = self.start + timeout

    def elapsed(self) -> float:
        return self._clock() - self.start

    def remaining(self) -> float:
        return max(0.0, self.end - self._clock())

    def expired(self) -> bool:
        return self._clock() >= self.end

    def pause(self, seconds: float) -> None:
        self._sleep(min(seconds, self.remaining()))


class Backoff:
    """Delays from `first` doubling up to `initial`, then `initial` (`steady` times), then doubling, capped; reset
    after progress."""

    def __init__(self, initial: float = DEFAULT_HEARTBEAT, cap: float = MAX_DELAY, steady: int = 1,
                 first: float | None = None) -> None:
        self.initial = initial
        self.first = min(first or initial, initial)
        self.cap = max(cap, initial)
        self.steady = max(1, steady)
        self.reset()

    @classmethod
    def for_heartbeat(cls, interval: float) -> Backoff:
        """MIN_DELAY doubling up to a quarter heartbeat, which holds for STEADY_HEARTBEATS heartbeats, then growing to
        CAP_HEARTBEATS of them (at most MAX_DELAY s).

        After a reconfig, mongod 7.0 heartbeats every member at once, each member fetches the config and heartbeats
        back at once, and the primary answers that with a heartbeat that shows it their new version: the set shows
        the new config everywhere within a few round trips, which the first, short waits catch. What the primary
        learns only from its regular heartbeats (a member that finished its initial sync, the outcome of an
        election) shows within one or two heartbeats: polling a quarter heartbeat that long costs a few reads where
        a doubling delay would overshoot the moment by up to a heartbeat. A set that takes longer is waiting for
        something slower (an initial sync, a member coming back), and is read less often.
        """
        return cls(initial=max(MIN_DELAY, interval / 4), cap=min(MAX_DELAY, interval * CAP_HEARTBEATS),
                   steady=4 * STEADY_HEARTBEATS, first=MIN_DELAY)

    def next(self) -> float:
        delay = self.current
        if self.current < self.initial:
            self.current = min(self.current * 2, self.initial)
        else:
            self.left -= 1
            if self.left <= 0:
                self.current = min(self.current * 2, self.cap)
        return delay

    def reset(self) -> None:
        self.current = self.first
        self.left = self.steady


def heartbeat_interval(config: dict | None, status: dict | None = None) -> float:
    """Seconds between the set's heartbeats: the config's settings, else what replSetGetStatus reports."""
    millis = ((config or {}).get("settings") or {}).get("heartbeatIntervalMillis") \
        or (status or {}).get("heartbeatIntervalMillis")
    try:
        seconds = float(millis) / 1000 if millis else DEFAULT_HEARTBEAT
    except (TypeError, ValueError):
        return DEFAULT_HEARTBEAT
    return seconds if 0 < seconds <= MAX_DELAY else DEFAULT_HEARTBEAT


# -- pure readiness predicates over a replSetGetStatus document ---------------------------------------------------

def primaries(status: dict | None) -> list[dict]:
    return [m for m in (status or {}).get("members", []) if m.get("state") == PRIMARY]


def primary_host(status: dict | None) -> str | None:
    found = primaries(status)
    return found[0]["name"] if len(found) == 1 else None


def healthy_hosts(status: dict | None) -> set:
    return {m["name"] for m in (status or {}).get("members", []) if m.get("health") == 1}


def not_ready(status: dict | None, expect_up: set) -> list[str]:
    """Why the set is not ready for the next reconfig ([] when it is).

    Ready means: exactly one primary, health 1 on every member in `expect_up` that is still in the set, and every
    healthy member reporting the primary's configVersion and configTerm (the last reconfig has propagated; a
    term of -1 from a force reconfig compares versions only, as mongod does).
    """
    if not status:
        return ["no replica set status could be read"]
    reasons = []
    found = primaries(status)
    if len(found) != 1:
        names = ", ".join(m["name"] for m in found)
        reasons.append(f"expected exactly one PRIMARY, found {len(found)}" + (f" ({names})" if found else ""))
    for member in status.get("members", []):
        if member["name"] in expect_up and member.get("health") != 1:
            reasons.append(f"member {member['name']} is not healthy ({member.get('stateStr', 'unknown state')})")
    if len(found) == 1:
        want = (found[0].get("configVersion"), found[0].get("configTerm"))
        for member in status.get("members", []):
            if member.get("health") != 1 or member is found[0]:
                continue
            have = (member.get("configVersion"), member.get("configTerm"))
            if not same_config(*have, *want):
                reasons.append(f"member {member['name']} has config version/term {have}, the primary {want}")
    return reasons


def lagging_hosts(status: dict | None) -> list[str]:
    """Members the primary reaches (health 1) but lists as joining, or on another config than its own: what it shows
    of them may be up to a heartbeat old."""
    found = primaries(status)
    if len(found) != 1:
        return []
    want = (found[0].get("configVersion"), found[0].get("configTerm"))
    return [m["name"] for m in status.get("members", [])
            if m is not found[0] and m.get("health") == 1
            and (m.get("state") in JOINING_STATES or not same_config(m.get("configVersion"), m.get("configTerm"), *want))]


def own_view(status: dict | None, answers: dict, set_name: str) -> tuple[dict | None, dict | None]:
    """(planned, shown): `status` with each member that says, asked directly, that it is a SECONDARY of this set on
    the primary's config version taken at its word. answers: {host: hello document or error text}.

    `planned` shows such a member as a SECONDARY on that version: the next step is planned on it. `shown` takes only
    the config version from the member and keeps the state the primary shows: a run ends when the primary itself shows
    every member ready, as drivers and status tools see it. hello carries the config version but not its term, so
    such a member's configTerm is given as -1, which compares versions only (same_config). Whatever else a member
    says (still syncing, on another version, another set, no answer) leaves the primary's view of it as it is.
    """
    found = primaries(status)
    if len(found) != 1 or not answers:
        return status, status
    version = found[0].get("configVersion")
    planned, shown = [], []
    for m in status.get("members", []):
        hello = answers.get(m["name"])
        if (m is not found[0] and answers_as_member(hello, m["name"], set_name) and hello.get("secondary") is True
                and hello.get("setVersion") == version):
            m = {**m, "configVersion": version, "configTerm": -1}
            shown.append(m)
            planned.append({**m, "state": SECONDARY, "stateStr": STATE_NAMES[SECONDARY]})
        else:
            shown.append(m)
            planned.append(m)
    return {**status, "members": planned}, {**status, "members": shown}


# -- moving a healthy member, adding another set's member (issue 12) ---------------------------------------------

def healthy_moves(before: dict | None, after: dict | None, status: dict | None) -> list[tuple[str, str, str]]:
    """(machine, old host, new host) for every member that `after` gives another host while it is healthy now."""
    up = {address_key(h) for h in healthy_hosts(status)}
    old = {m["_id"]: m for m in (before or {}).get("members", [])}
    moves = []
    for m in (after or {}).get("members", []):
        was = old.get(m["_id"])
        if was is None or address_key(was["host"]) == address_key(m["host"]) or address_key(was["host"]) not in up:
            continue
        moves.append(((m.get("tags") or {}).get(MACHINE_TAG) or was["host"], was["host"], m["host"]))
    return moves


def move_refusals(moves: list[tuple[str, str, str]], answers: dict, set_name: str) -> list[str]:
    """Why each move may not be made ([] when none is refused). answers: {new host: hello document or error text}.

    A member that works at its old address is moved only when the new address answers as that very member (its
    hello names the configured host): a record hand-edited to a dead host, or to another mongod, would otherwise
    take a working voter off the set. ensure_availability repairs such a record from the inventory.
    """
    problems = []
    for machine, old, new in moves:
        hello = answers.get(new)
        if answers_as_member(hello, old, set_name):
            continue
        if not isinstance(hello, dict):
            why = f"nothing answers there as a mongod ({hello or 'not asked'})"
        elif hello.get("setName"):
            why = (f"it answers as {hello.get('me') or 'a member'} of replica set {hello['setName']!r}, not as this "
                   "member")
        else:
            why = "it answers as a mongod that is not a member of any replica set"
        problems.append(f"refusing to move machine {machine} from {old}, where its member is healthy, to {new}: {why}; "
                        "correct the record's mongo_address (ensure_availability repairs it from the inventory), or "
                        "make the machine answer at the new address first")
    return problems


def added_members(before: dict | None, after: dict | None) -> list[tuple[str, str]]:
    """(machine, host) for every member `after` adds to `before`."""
    old = {m["_id"] for m in (before or {}).get("members", [])}
    return [((m.get("tags") or {}).get(MACHINE_TAG) or m["host"], m["host"])
            for m in (after or {}).get("members", []) if m["_id"] not in old]


def add_refusals(adds: list[tuple[str, str]], answers: dict, set_name: str, config: dict | None) -> list[str]:
    """Why each add may not be made ([] when none is refused). answers: {host: hello document or error text}.

    A host that answers as a member of another replica set (another name, or our name but none of our members) is
    never added: its record points at someone else's set. mongod's own refusal is the second line of defence, not
    the first. A host that does not answer yet, or an uninitiated mongod, is a spare and may be added.
    """
    ours = {address_key(m["host"]) for m in (config or {}).get("members", [])}
    problems = []
    for machine, host in adds:
        hello = answers.get(host)
        if not isinstance(hello, dict) or not hello.get("setName"):
            continue
        if hello["setName"] != set_name:
            why = f"it is a member of replica set {hello['setName']!r}"
        elif not hello_members(hello) & ours:
            why = (f"it is a member of another replica set also named {set_name!r} (members "
                   f"{', '.join(sorted(hello_members(hello))) or 'unknown'})")
        else:
            continue
        problems.append(f"refusing to add machine {machine} at {host}: {why}; correct or delete its record in "
                        "stateserver.machines, or wipe that mongod's data directory if it is to join this set")
    return problems


# -- summaries for the module result ------------------------------------------------------------------------------

def member_docs(config: dict | None) -> list[dict]:
    """The member documents of a config, reduced to what peergroup manages (for diff)."""
    docs = []
    for m in sorted((config or {}).get("members", []), key=lambda m: m["_id"]):
        votes = int(m.get("votes", 1))
        docs.append({
            "_id": int(m["_id"]),
            "host": m["host"],
            "votes": votes,
            "priority": float(m.get("priority", 1.0 if votes else 0.0)),
            "tags": dict(m.get("tags") or {}),
        })
    return docs


def member_summary(config: dict | None, status: dict | None) -> list[dict]:
    return [m.summary() for m in member_states(config, status)]


def voter_names(config: dict | None) -> list[str]:
    return sorted(m.machine or m.host for m in member_states(config, None) if m.votes > 0)


def _step_dict(step, version: int) -> dict:
    return {"action": step.action, "machine": step.machine, "member_id": step.member_id, "config_version": version}


def _member_host(config: dict | None, member_id: int) -> str | None:
    for m in (config or {}).get("members", []):
        if m["_id"] == member_id:
            return m["host"]
    return None


def _not_initiated(rs) -> ReplSetError:
    return ReplSetError(f"the replica set {rs.set_name!r} is not initiated yet; bootstrap it first (ensure_availability "
                        "returns the bootstrap machine)")


def record_dicts(records: list[MachineRecord]) -> list[dict]:
    """Records in the shape ensure_availability returns them (RV records) and peergroup's `records` takes them."""
    return [{"name": r.name, "mongo_address": r.mongo_address, "api_address": r.api_address,
             "wants_vote": r.wants_vote} for r in sorted(records, key=lambda r: r.name)]


def records_mismatch(given: list[MachineRecord], stored: list[MachineRecord]) -> str | None:
    """None when `given` equals the stored records, else a message naming the machines that differ."""
    mine, theirs = {r.name: r for r in given}, {r.name: r for r in stored}
    differ = sorted(n for n in set(mine) | set(theirs) if mine.get(n) != theirs.get(n))
    if not differ:
        return None
    return (f"the records given to peergroup differ from the stored ones for {', '.join(differ)}; they must be what "
            "ensure_availability wrote (pass its `records` result, run in the same mode), or leave `records` out; "
            "nothing was changed")


# -- the loop -----------------------------------------------------------------------------------------------------

def read_settled(rs, timeout: float, clock=time.monotonic, sleep=time.sleep):
    """The set as it is once it has a primary (or is not initiated), waiting at most `timeout` seconds.

    An election under way shows no primary for a few seconds; planning against that moment would refuse for nothing.
    After the timeout the last view is returned as it is (a set that lost its majority stays without a primary, and
    the planner explains that); when the set could not be read at all the last error is raised.
    """
    deadline = Deadline(timeout, clock, sleep)
    backoff = None
    while True:
        try:
            view = rs.read_view()
            if view.config is None or primary_host(view.status) is not None:
                return view
            error = None
            backoff = backoff or Backoff.for_heartbeat(heartbeat_interval(view.config, view.status))
        except TransientError as exc:
            view, error = None, exc
        if deadline.expired():
            if error is not None:
                raise error
            return view
        deadline.pause((backoff or Backoff()).next())


def plan_only(rs, records: list[MachineRecord] | None = None) -> Outcome:
    """Check mode: the whole planned sequence, assuming every member becomes ready; nothing is sent.

    `records` are the records the plan is for (those ensure_availability would write); None plans from the stored.
    """
    view = rs.read_view()
    if view.config is None:
        raise _not_initiated(rs)
    if records is None:
        records = rs.read_records()
    try:
        steps = plan_steps(view, records, assume_ready=True)
    except PeerGroupError as exc:
        raise PlanError(str(exc)) from exc
    converged, reasons = convergence_report(view, records)
    outcome = Outcome(before=view.config, after=view.config, status=view.status, converged=converged and not steps,
                      reasons=reasons)
    version = int(view.config.get("version", 0))
    for step in steps:
        if step.config is not None:
            version = int(step.config.get("version", version + 1))
            outcome.after = step.config
        outcome.steps.append(_step_dict(step, version))
    _refuse_unsafe(rs, view, outcome.after, "nothing was changed")
    return outcome


def _refuse_unsafe(rs, view, config: dict | None, done: str) -> None:
    """PlanError when `config` moves a member that is healthy in `view` to an address that is not that member, or
    adds a member of another replica set."""
    moves = healthy_moves(view.config, config, view.status)
    adds = added_members(view.config, config)
    if not moves and not adds:
        return
    answers = rs.hellos([new for _machine, _old, new in moves] + [host for _machine, host in adds])
    problems = move_refusals(moves, answers, rs.set_name) + add_refusals(adds, answers, rs.set_name, view.config)
    if problems:
        raise PlanError(f"{'; '.join(problems)}; {done}")


def converge(rs, timeout: float, clock=time.monotonic, sleep=time.sleep,
             records: list[MachineRecord] | None = None) -> Outcome:
    """Apply planned steps one at a time until the set converges; raise ConvergeTimeout at the deadline.

    `records`, when given, must equal the stored records (RecordsMismatch otherwise, before anything is sent): the
    check-mode plan made from them is then the plan this run carries out.
    """
    deadline = Deadline(timeout, clock, sleep)
    view = rs.read_view()
    if view.config is None:
        raise _not_initiated(rs)
    if records is not None:
        problem = records_mismatch(records, rs.read_records())
        if problem:
            raise RecordsMismatch(problem)
    return _Loop(rs, view, deadline).run()


class _Loop:
    """One peergroup run: the outcome so far, the members that must stay up, the deadline and the backoff."""

    def __init__(self, rs, view, deadline: Deadline) -> None:
        self.rs = rs
        self.deadline = deadline
        self.outcome = Outcome(before=view.config, after=view.config, status=view.status)
        # Members already down when we start are not waited for (the plan may be replacing them); every member that
        # is up now, or that we add, must stay up between steps.
        self.expect_up = healthy_hosts(view.status)
        self.backoff = Backoff.for_heartbeat(heartbeat_interval(view.config, view.status))
        # A step whose reconfig was interrupted: counted once a re-read shows it landed, never sent again.
        self.pending = None
        # The host (and electionId) of a primary we stepped down: nothing is planned until a member says it is the
        # primary of a later election.
        self.stepped_down: str | None = None
        self.election = None

    def run(self) -> Outcome:
        try:
            while True:
                if self._once():
                    return self.outcome
        except ReplSetError as exc:
            # Report what was applied before the failure with it.
            exc.outcome = self.outcome
            raise

    def wait(self, reasons: list[str]) -> None:
        self.outcome.reasons = reasons
        self.outcome.elapsed = self.deadline.elapsed()
        if self.deadline.expired():
            raise ConvergeTimeout(
                f"the replica set did not converge within {self.deadline.timeout}s; not converged: "
                f"{'; '.join(reasons) or 'unknown'}; {len(self.outcome.steps)} step(s) were applied", self.outcome)
        self.deadline.pause(self.backoff.next())

    def applied(self, step, config: dict | None) -> None:
        version = int((config or self.outcome.after or {}).get("version", 0))
        self.outcome.steps.append(_step_dict(step, version))
        host = _member_host(config, step.member_id)
        if host and step.action in ("add", "update_address"):
            self.expect_up.add(host)
        self.backoff.reset()

    def _once(self) -> bool:
        """One read-plan-send round; True once converged."""
        try:
            via = self._new_primary()
            if via is False:
                return False
            view = self.rs.read_view(via=via)
            records = self.rs.read_records()
        except TransientError as exc:
            self.wait([str(exc)])
            return False
        self.stepped_down = None
        hosts = lagging_hosts(view.status)
        answers = self.rs.hellos(hosts) if hosts else {}
        # Steps are planned on what lagging members say of themselves; the run ends on the states the primary shows.
        planned, shown = own_view(view.status, answers, self.rs.set_name)
        view = ReplSetView(config=view.config, status=planned, now=view.now)
        self.outcome.after, self.outcome.status = view.config, shown
        if self.pending is not None:
            step, sent = self.pending
            self.pending = None
            if same_members(view.config, sent) and int(view.config.get("version", 0)) >= int(sent["version"]):
                self.applied(step, sent)
        reasons = not_ready(view.status, self.expect_up)
        if reasons:
            self.wait(reasons)
            return False
        try:
            steps = plan_steps(view, records, assume_ready=False)
        except PeerGroupError as exc:
            raise PlanError(str(exc)) from exc
        if not steps:
            converged, reasons = convergence_report(ReplSetView(config=view.config, status=shown, now=view.now), records)
            if converged:
                self.outcome.converged, self.outcome.reasons = True, []
                self.outcome.elapsed = self.deadline.elapsed()
                return True
            self.wait(reasons or ["waiting for members to become ready"])
            return False
        self._send(steps[0], view)
        return False

    def _new_primary(self):
        """After a step-down: the new primary's host to read the next view from, or False after waiting for it.

        Re-reading at once could show a secondary's stale view that still lists the old primary; planning from it
        would step down again, and a step-down reaches only a primary: the new, innocent one (issue 13). So the
        loop waits until a member other than the old primary says it is primary, and plans from that member's view.
        """
        if self.stepped_down is None:
            return None
        hosts = [m["host"] for m in (self.outcome.after or {}).get("members", [])]
        new = self.rs.new_primary(self.stepped_down, hosts, self.election)
        if new is None:
            self.wait([f"waiting for a new primary to be elected after {self.stepped_down} stepped down"])
            return False
        return new

    def _send(self, step, view) -> None:
        base = int(view.config.get("version", 0))
        try:
            if step.action == "step_down":
                host = _member_host(view.config, step.member_id)
                self.election = self.rs.step_down(host)
                self.applied(step, view.config)
                self.stepped_down = host
                return
            done = (f"nothing more was sent after {len(self.outcome.steps)} step(s)" if self.outcome.steps
                    else "nothing was changed")
            _refuse_unsafe(self.rs, view, step.config, done)
            errors = validate_reconfig(view.config, step.config)
            if errors:
                raise PlanError(f"refusing to send the {step.action} step for machine {step.machine}: "
                                f"MongoDB would reject it: {'; '.join(errors)}")
            landed = self.rs.reconfig(step.config, max_time=min(MAX_RECONFIG_WAIT, max(1.0, self.deadline.remaining())))
        except PrimaryChanged as exc:
            # Re-read from the shortest wait on: the election that moved the primary shows within a heartbeat or two.
            self.backoff.reset()
            self.wait([str(exc)])
            return
        except ConfigIncompatible as exc:
            self._incompatible(exc, step, base)
            return
        except TransientError as exc:
            self.wait([str(exc)])
            return
        if landed:
            self.applied(step, step.config)
        else:
            self.pending = (step, step.config)
            self.wait([(f"reconfig to version {step.config.get('version')} for machine {step.machine} was interrupted "
                       "and is not installed (yet); re-reading before planning again")])

    def _incompatible(self, exc: ConfigIncompatible, step, base: int) -> None:
        try:
            now = self.rs.config_version()
        except TransientError:
            now = None
        if now is None or now != base:
            # Someone else reconfigured since our read (or we cannot tell yet): plan again from what is there.
            self.backoff.reset()
            self.wait([(f"the config moved from version {base} to {now if now is not None else 'unknown'} while the "
                       f"{step.action} step for machine {step.machine} was sent; planning again")])
            return
        raise PlanError(f"MongoDB refused the {step.action} step for machine {step.machine} (config version {base} to "
                        f"{exc.version}): {exc.errmsg}; nothing more was sent")
