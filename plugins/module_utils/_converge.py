# Copyright: stateserver.ha contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""The convergence loop of peergroup: plan from observed state, send one step, wait until the set is ready, repeat.

This is the only place in the collection that sleeps. The clock is time.monotonic() with a hard deadline; waits back
off from 2 s, doubling, capped. Readiness is a pure predicate over a replSetGetStatus document. Check mode plans
the whole sequence (assuming every member becomes ready) and sends nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ansible_collections.stateserver.ha.plugins.module_utils._peergroup import (
    PeerGroupError,
    convergence_report,
    plan_steps,
)
from ansible_collections.stateserver.ha.plugins.module_utils._replset import (
    MACHINE_TAG,
    ReplSetError,
    TransientError,
)
from ansible_collections.stateserver.ha.plugins.module_utils._rules import (
    validate_reconfig,
)

PRIMARY, SECONDARY = 1, 2
INITIAL_DELAY = 2.0
MAX_DELAY = 16.0


class PlanError(ReplSetError):
    """A planned step would be rejected by MongoDB; nothing was sent."""


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


class ConvergeTimeout(Exception):
    """The set did not converge before the deadline; carries the partial outcome."""

    def __init__(self, message: str, outcome: Outcome) -> None:
        super().__init__(message)
        self.outcome = outcome


class Backoff:
    """Delays of 2 s, 4 s, 8 s ... capped; reset after progress."""

    def __init__(self, initial: float = INITIAL_DELAY, cap: float = MAX_DELAY) -> None:
        self.initial = initial
        self.cap = cap
        self.current = initial

    def next(self) -> float:
        delay = self.current
        self.current = min(self.current * 2, self.cap)
        return delay

    def reset(self) -> None:
        self.current = self.initial


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
    healthy member reporting the primary's configVersion and configTerm (the last reconfig has propagated).
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
            if have != want:
                reasons.append(f"member {member['name']} has config version/term {have}, the primary {want}")
    return reasons


# -- summaries for the module result ------------------------------------------------------------------------------

def member_docs(config: dict | None) -> list[dict]:
    """The member documents of a config, reduced to what peergroup manages (for diff and results)."""
    docs = []
    for m in sorted((config or {}).get("members", []), key=lambda m: m["_id"]):
        docs.append({
            "_id": int(m["_id"]),
            "host": m["host"],
            "votes": int(m.get("votes", 1)),
            "priority": float(m.get("priority", 1.0)),
            "tags": dict(m.get("tags") or {}),
        })
    return docs


def member_summary(config: dict | None, status: dict | None) -> list[dict]:
    states = {m["name"]: m for m in (status or {}).get("members", [])}
    out = []
    for doc in member_docs(config):
        st = states.get(doc["host"], {})
        out.append({
            "member_id": doc["_id"],
            "host": doc["host"],
            "machine": doc["tags"].get(MACHINE_TAG),
            "votes": doc["votes"],
            "priority": doc["priority"],
            "state": st.get("stateStr", "UNKNOWN"),
            "health": int(st.get("health", 0)),
        })
    return out


def voter_names(config: dict | None) -> list[str]:
    return sorted(d["tags"].get(MACHINE_TAG) or d["host"] for d in member_docs(config) if d["votes"] > 0)


def _step_dict(step, version: int) -> dict:
    return {"action": step.action, "machine": step.machine, "member_id": step.member_id, "config_version": version}


def _member_host(config: dict | None, member_id: int) -> str | None:
    for m in (config or {}).get("members", []):
        if m["_id"] == member_id:
            return m["host"]
    return None


# -- the loop -----------------------------------------------------------------------------------------------------

def read_settled(rs, timeout: float, clock=time.monotonic, sleep=time.sleep):
    """The set as it is once it has a primary (or is not initiated), waiting at most `timeout` seconds.

    An election under way shows no primary for a few seconds; planning against that moment would refuse for nothing.
    After the timeout the last view is returned as it is (a set that lost its majority stays without a primary, and
    the planner explains that); when the set could not be read at all the last error is raised.
    """
    deadline = clock() + timeout
    backoff = Backoff()
    while True:
        try:
            view = rs.read_view()
            if view.config is None or primary_host(view.status) is not None:
                return view
            error = None
        except TransientError as exc:
            view, error = None, exc
        now = clock()
        if now >= deadline:
            if error is not None:
                raise error
            return view
        sleep(min(backoff.next(), deadline - now))


def plan_only(rs) -> Outcome:
    """Check mode: the whole planned sequence, assuming every member becomes ready; nothing is sent."""
    view = rs.read_view()
    if view.config is None:
        raise ReplSetError(f"the replica set {rs.set_name!r} is not initiated yet; bootstrap it first (ensure_availability "
                           "returns the bootstrap machine)")
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
    return outcome


def converge(rs, timeout: float, clock=time.monotonic, sleep=time.sleep) -> Outcome:
    """Apply planned steps one at a time until the set converges; raise ConvergeTimeout at the deadline."""
    start = clock()
    deadline = start + timeout
    backoff = Backoff()
    view = rs.read_view()
    if view.config is None:
        raise ReplSetError(f"the replica set {rs.set_name!r} is not initiated yet; bootstrap it first (ensure_availability "
                           "returns the bootstrap machine)")
    outcome = Outcome(before=view.config, after=view.config, status=view.status)
    # Members already down when we start are not waited for (the plan may be replacing them); every member that
    # is up now, or that we add, must stay up between steps.
    expect_up = healthy_hosts(view.status)

    def wait(reasons: list[str]) -> None:
        now = clock()
        outcome.reasons = reasons
        outcome.elapsed = now - start
        if now >= deadline:
            raise ConvergeTimeout(
                f"the replica set did not converge within {timeout}s; not converged: "
                f"{'; '.join(reasons) or 'unknown'}; {len(outcome.steps)} step(s) were applied", outcome)
        sleep(min(backoff.next(), deadline - now))

    try:
        return _loop(rs, outcome, expect_up, wait, backoff, clock, start)
    except ReplSetError as exc:
        # Report what was applied before the failure with it.
        exc.outcome = outcome
        raise


def _loop(rs, outcome: Outcome, expect_up: set, wait, backoff: Backoff, clock, start: float) -> Outcome:
    while True:
        try:
            view = rs.read_view()
            records = rs.read_records()
        except TransientError as exc:
            wait([str(exc)])
            continue
        outcome.after, outcome.status = view.config, view.status
        reasons = not_ready(view.status, expect_up)
        if reasons:
            wait(reasons)
            continue
        try:
            steps = plan_steps(view, records, assume_ready=False)
        except PeerGroupError as exc:
            raise PlanError(str(exc)) from exc
        if not steps:
            converged, reasons = convergence_report(view, records)
            if converged:
                outcome.converged, outcome.reasons, outcome.elapsed = True, [], clock() - start
                return outcome
            wait(reasons or ["waiting for members to become ready"])
            continue
        step = steps[0]
        try:
            if step.action == "step_down":
                rs.step_down()
                outcome.steps.append(_step_dict(step, int(view.config.get("version", 0))))
                backoff.reset()
                continue
            errors = validate_reconfig(view.config, step.config)
            if errors:
                raise PlanError(f"refusing to send the {step.action} step for machine {step.machine}: "
                                f"MongoDB would reject it: {'; '.join(errors)}")
            applied = rs.reconfig(step.config)
        except TransientError as exc:
            wait([str(exc)])
            continue
        if applied:
            outcome.steps.append(_step_dict(step, int(step.config.get("version", 0))))
            host = _member_host(step.config, step.member_id)
            if host and step.action in ("add", "update_address"):
                expect_up.add(host)
            backoff.reset()
        else:
            # The outcome was unknown and the re-read config is not the one sent: plan again from what is there.
            wait([(f"reconfig to version {step.config.get('version')} for machine {step.machine} "
                   "was interrupted and is not installed")])
