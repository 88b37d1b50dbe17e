# Copyright: stateserver.ha contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""ensure-availability planning: how many state machines should vote, and which. Pure functions, no I/O.

Juju's EnsureAvailability made exact: n is 3, 5 or 7; the count never shrinks; voters that have been unreachable
for longer than down_after are demoted and replaced (a recorded standby first, then a spare from the pool) while a
majority of voters is up; nothing is changed when that is not safe or not possible.

With no replica set yet (no seed answers, or every seed that answers is an uninitiated mongod) the plan is the first
deployment: the first reachable pool host bootstraps a one-member set and nothing is recorded until it has.

A record whose address no longer matches the pool (the inventory moved the machine) is repaired, but only when that
cannot move a working member onto an address that is not it: its member is missing or down, or the new address
answers as that very member (its hello names the member's current host). Otherwise the plan refuses and says why.

Retiring machines (`retire`) is the explicit way to say "this machine goes" (Juju's remove-machine). A retiree's
record stops wanting a vote and a spare (`replace_with`, else the next reachable pool host that is not a state
machine) is recorded in its place in the same write, so peergroup promotes the spare before it demotes the retiree
and the set never runs with fewer than n voters. Once the retiree's member no longer votes (or is gone), the next
plan that names it deletes its record, and peergroup then removes the member. The record keeps wants_vote false
in between, so a plain re-run never gives the vote back: more machines want a vote than n, none is promoted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ansible_collections.stateserver.ha.plugins.module_utils._model import (
    MACHINE_TAG,
    MAX_VOTERS,
    MachineRecord,
    PoolHost,
    ReplSetView,
    down_for,
    members_of,
    primary_of,
    statuses_of,
)
from ansible_collections.stateserver.ha.plugins.module_utils._records import (
    API_PORT,
    address_key,
    answers_as_member,
    shared_addresses,
)
from ansible_collections.stateserver.ha.plugins.module_utils._rules import validate_n


@dataclass
class AvailabilityPlan:
    target: int
    maintained: list = field(default_factory=list)
    added: list = field(default_factory=list)
    promoted: list = field(default_factory=list)
    demoted: list = field(default_factory=list)
    retiring: list = field(default_factory=list)
    removed: list = field(default_factory=list)
    retired: list = field(default_factory=list)
    bootstrap: str | None = None
    repaired: list = field(default_factory=list)
    records_after: list = field(default_factory=list)
    messages: list = field(default_factory=list)
    error: str | None = None
    changed: bool = False


def _report(plan: AvailabilityPlan) -> list[str]:
    lines = [f"repairing the address of machine {line}" for line in plan.repaired]
    for label, names in (("bootstrapping machine", [plan.bootstrap] if plan.bootstrap else []),
                         ("maintaining machines", plan.maintained), ("promoting machines", plan.promoted),
                         ("adding machines", plan.added), ("demoting machines", plan.demoted),
                         ("retiring machines", plan.retiring), ("removing the records of machines", plan.removed)):
        if names:
            lines.append(f"{label}: {', '.join(names)}")
    lines += [f"machine {name} is already retired (no record, not a member)" for name in plan.retired]
    return lines


def _failed(n: int, message: str) -> AvailabilityPlan:
    return AvailabilityPlan(target=n, error=message, messages=[message])


def _adopt(records: list[MachineRecord], pool: list[PoolHost], view: ReplSetView) -> list[MachineRecord]:
    """Records for members that have none yet (the bootstrap member, or a set built before records existed)."""
    known = {r.name for r in records}
    addresses = {r.mongo_address.lower() for r in records}
    pool_by_name = {p.name: p for p in pool}
    pool_by_address = {p.mongo_address.lower(): p for p in pool}
    adopted = list(records)
    for mem in members_of(view.config):
        host = pool_by_name.get(mem.machine) if mem.machine else pool_by_address.get(mem.host.lower())
        name = mem.machine or (host.name if host else None)
        if not name or name in known or mem.host.lower() in addresses:
            continue
        api = host.api_address if host else f"{mem.host.rsplit(':', 1)[0]}:{API_PORT}"
        adopted.append(MachineRecord(name=name, mongo_address=mem.host, api_address=api, wants_vote=mem.voting))
        known.add(name)
    return adopted


def _repair(known: list[MachineRecord], pool: list[PoolHost], view: ReplSetView, answers: dict,
            member_of, status_of) -> tuple[list[MachineRecord], list[str], str | None]:
    """(records with the pool's addresses, repair lines, refusal). See the module docstring for what is safe."""
    by_name = {p.name: p for p in pool}
    set_name = (view.config or {}).get("_id")
    out, lines = [], []
    for rec in known:
        host = by_name.get(rec.name)
        if host is None or (address_key(host.mongo_address), host.api_address) == (
                address_key(rec.mongo_address), rec.api_address):
            out.append(rec)
            continue
        if address_key(host.mongo_address) != address_key(rec.mongo_address):
            mem, st = member_of(rec), status_of(rec)
            if mem is not None and st is not None and not st.down \
                    and not answers_as_member(answers.get(host.mongo_address), mem.host, set_name):
                return known, [], (
                    f"the pool gives machine {rec.name} the mongo address {host.mongo_address}, but its member at "
                    f"{mem.host} is {st.state_str} and {host.mongo_address} does not answer as that member, so "
                    "moving it could take a working member off the set; correct the inventory address, or make the "
                    "machine answer at the new address first (or stop it at the old one); nothing was changed")
            why = ("not a member yet" if mem is None else "its member is down" if st is None or st.down
                   else "the new address answers as its member")
            lines.append(f"{rec.name} ({rec.mongo_address} -> {host.mongo_address}, {why})")
        else:
            lines.append(f"{rec.name} (API {rec.api_address} -> {host.api_address})")
        out.append(MachineRecord(rec.name, host.mongo_address, host.api_address, rec.wants_vote))
    return out, lines, None


def _odd_up(count: int) -> int:
    return count if count % 2 else count + 1


def _retirement(retire: list, replace_with: str | None, known: list[MachineRecord], pool: list[PoolHost],
                voters: list, statuses: dict, member_of) -> tuple[list, list, list, str | None]:
    """(retiring: voters that lose their vote to a replacement, removed: records to delete now, retired: names
    already gone, refusal). See the module docstring."""
    by_name = {r.name: r for r in known}
    pool_names = {p.name for p in pool}
    if replace_with is not None and not retire:
        return [], [], [], (f"replace_with {replace_with!r} names the spare for a retirement, but retire is empty; "
                            "name the machine to retire too; nothing was changed")
    unknown = [name for name in retire if name not in by_name and name not in pool_names]
    if unknown:
        return [], [], [], (
            f"unknown machine {', '.join(map(repr, unknown))}: not a recorded state machine and not a host of "
            f"state_machines; the state machines are {', '.join(sorted(by_name)) or 'none'}; check the name; "
            "nothing was changed")
    if replace_with is not None:
        spare = next((p for p in pool if p.name == replace_with), None)
        why = ("is not a host of state_machines" if spare is None
               else "is one of the machines being retired" if replace_with in retire
               else "is not reachable" if not spare.reachable
               else "already wants a vote" if replace_with in by_name and by_name[replace_with].wants_vote
               else None)
        if why:
            return [], [], [], (f"replace_with {replace_with!r} {why}; name a reachable host of state_machines that "
                                "is not a voting state machine; nothing was changed")
    retiring, removed, retired = [], [], []
    for name in retire:
        rec = by_name.get(name)
        mem = member_of(rec) if rec else None
        if rec is None:
            retired.append(name)
        elif mem is not None and mem.voting:
            retiring.append(name)
        else:
            removed.append(name)  # no vote to hand over: the record goes now, peergroup removes the member
    # The voters that stay must be a majority of the set as it is: until the replacements vote, the set depends
    # on them alone if the retirees stop (as retire-machine.yml stops them afterwards, or a failure does earlier).
    leaving = {member_of(by_name[name]).id for name in retiring}
    up_kept = [m for m in voters if m.id not in leaving and not (statuses.get(m.id) and statuses[m.id].down)]
    need = len(voters) // 2 + 1
    if retiring and len(up_kept) < need:
        down = [m.machine or m.host for m in voters if statuses.get(m.id) and statuses[m.id].down]
        if len(retiring) > 1:
            return [], [], [], (
                f"retiring {' and '.join(retiring)} together leaves {len(up_kept)} reachable voter(s) that stay, "
                f"fewer than a majority ({need}) of the {len(voters)} voters, so the set would depend on machines "
                f"that are leaving; retire them one at a time (first {retiring[0]}, then {retiring[1]} once its "
                "replacement votes); nothing was changed")
        return [], [], [], (
            f"retiring {retiring[0]} while {', '.join(down)} is down leaves {len(up_kept)} reachable voter(s) that "
            f"stay, fewer than a majority ({need}) of the {len(voters)} voters; bring {', '.join(down)} back or "
            f"replace it first (ensure-ha.yml replaces a voter down longer than down_after), then retire "
            f"{retiring[0]}; nothing was changed")
    return retiring, removed, retired, None


def plan_availability(n, records: list[MachineRecord], pool: list[PoolHost], view: ReplSetView,
                      down_after: float = 60.0, answers: dict | None = None, retire=(),
                      replace_with: str | None = None) -> AvailabilityPlan:
    """What ensure_availability will do. `plan.error` is set (and nothing planned) when it must refuse.

    answers: {pool mongo address: hello document or error text} from probing the pool, used to decide whether a
    moved address may be repaired (see _repair).
    retire: names of machines that go; replace_with: the pool host to take their place (else the next spare).
    """
    problem = validate_n(n)
    if problem:
        return _failed(n if isinstance(n, int) else 0, problem)
    reachable = [p for p in pool if p.reachable]

    if view.config is None:
        if retire or replace_with:
            return _failed(n, "there is no replica set (no seed answers as an initiated member), so there is no "
                              "machine to retire; check the seeds; nothing was changed")
        if len(reachable) < n:
            return _failed(n, f"there is no replica set yet and {n} state machines need {n} reachable hosts in "
                              f"state_machines; {len(reachable)} are reachable, {n - len(reachable)} more are needed")
        # The first deployment: only the bootstrap machine is provisioned now; the records are written by the run
        # after it has initiated the set, which then grows it like any other.
        plan = AvailabilityPlan(target=n, bootstrap=reachable[0].name, changed=True)
        plan.messages = _report(plan)
        return plan

    known = _adopt(records, pool, view)
    members = {m.machine: m for m in members_of(view.config) if m.machine}
    by_host = {m.host.lower(): m for m in members_of(view.config)}
    statuses = {s.id: s for s in statuses_of(view.status)}

    def member_of(rec: MachineRecord):
        return members.get(rec.name) or by_host.get(rec.mongo_address.lower())

    def status_of(rec: MachineRecord):
        mem = member_of(rec)
        return statuses.get(mem.id) if mem else None

    known, repaired, refusal = _repair(known, pool, view, answers or {}, member_of, status_of)
    if refusal:
        return _failed(n, refusal)
    clash = shared_addresses(known, "with the pool's addresses, the records of machines")
    if clash:
        return _failed(n, "; ".join(clash) + "; correct the inventory (or the record of the machine that left); "
                       "nothing was changed")

    voters = [m for m in members_of(view.config) if m.voting]
    down_voters = [m for m in voters if statuses.get(m.id) is not None and statuses[m.id].down]
    if len(voters) - len(down_voters) >= len(voters) // 2 + 1 and primary_of(view.status) is None:
        return _failed(n, "the replica set has no primary right now (an election may be under way); nothing was "
                          "changed; run again in a few seconds")
    if len(voters) - len(down_voters) < len(voters) // 2 + 1:
        names = ", ".join(m.machine or m.host for m in down_voters) or "none reported"
        return _failed(n, (
            f"a majority of the voting state machines is unreachable (down: {names}; {len(voters)} voters, "
            f"{len(voters) // 2 + 1} needed) and the replica set has no primary, so no safe change is possible and "
            "nothing was changed. Bring enough of the down machines back to restore a majority and run again; if they "
            "are lost for good, run playbooks/recover-majority-loss.yml -e confirm=<replica set name> (a forced "
            "reconfig to the survivors, which can lose writes)."))

    retire = list(dict.fromkeys(retire or ()))
    retiring, removed, retired, refusal = _retirement(retire, replace_with, known, pool, voters, statuses, member_of)
    if refusal:
        return _failed(n, refusal)
    leaving = set(retiring) | set(removed)
    wanting = [r for r in known if r.wants_vote and r.name not in leaving]
    goal = n
    if leaving:
        # A retirement replaces, it does not shrink below n: the machines that stay plus spares make max(n, the
        # odd count at or above those that stay) voters. Retiring 2 of 5 with n=3 needs no spare.
        goal = min(max(n, _odd_up(len(wanting))), MAX_VOTERS)
    elif len(wanting) > n:
        plan = AvailabilityPlan(target=len(wanting), maintained=[r.name for r in wanting], repaired=repaired,
                                retired=retired, records_after=known, changed=known != records)
        plan.messages = [(f"{len(wanting)} state machines already vote, more than n={n}: ensure_availability never "
                         "reduces the count, nothing to do")] + _report(plan)
        return plan

    if replace_with is not None and len(wanting) >= goal:
        return _failed(n, f"no spare is needed ({len(wanting)} machines that stay want a vote, {goal} are wanted), so "
                          f"replace_with {replace_with!r} would not be used; leave it out; nothing was changed")

    demoted, maintained = [], []
    for rec in wanting:
        st = status_of(rec)
        if st is not None and st.down and down_for(view, st) > down_after:
            demoted.append(rec.name)
        else:
            maintained.append(rec.name)  # up, starting, syncing, or not yet a member: not a candidate for demotion

    need = goal - len(maintained)
    promoted = []
    # The named replacement first (a standby it may be), then recorded standbys in order; never a retiree.
    candidates = sorted(known, key=lambda r: r.name != replace_with)
    for rec in candidates:
        if len(promoted) >= need:
            break
        st = status_of(rec)
        if not rec.wants_vote and rec.name not in demoted and rec.name not in leaving and st is not None and st.ready:
            promoted.append(rec.name)
    need -= len(promoted)

    taken = {r.name for r in known} | {r.mongo_address.lower() for r in known} | set(retire)
    taken |= set(by_host)
    spares = sorted((p for p in reachable if p.name not in taken and p.mongo_address.lower() not in taken),
                    key=lambda p: p.name != replace_with)
    if replace_with is not None and need > 0 and spares[:1] != [p for p in pool if p.name == replace_with] \
            and replace_with not in promoted:
        return _failed(n, f"replace_with {replace_with!r} is a state machine that cannot take a vote now (not a "
                          "healthy standby); name a spare host of state_machines; nothing was changed")
    if len(spares) < need and leaving:
        return _failed(n, (
            f"retiring {', '.join(sorted(leaving))} would leave {len(maintained) + len(promoted)} voting state "
            f"machine(s) where {goal} are wanted, and state_machines has {len(spares)} spare reachable host(s): "
            f"{need - len(spares)} more spare host(s) are needed; add them to state_machines (or name one with "
            "replace_with / -e with=HOST) and run again; nothing was changed"))
    if len(spares) < need:
        return _failed(n, (
            f"{n} voting state machines need {need} more host(s) from state_machines but only {len(spares)} spare "
            f"reachable host(s) are left; add {need - len(spares)} more host(s) to the state_machines group "
            "(or bring unreachable ones back) and run again; nothing was changed"))
    added = [p.name for p in spares[:need]]

    after = []
    for rec in known:
        if rec.name in removed:
            continue
        wants = rec.wants_vote
        if rec.name in demoted or rec.name in retiring:
            wants = False
        elif rec.name in promoted:
            wants = True
        after.append(MachineRecord(rec.name, rec.mongo_address, rec.api_address, wants))
    pool_by_name = {p.name: p for p in pool}
    after += [MachineRecord(name, pool_by_name[name].mongo_address, pool_by_name[name].api_address, True)
              for name in added]
    plan = AvailabilityPlan(target=goal, maintained=maintained, added=added, promoted=promoted, demoted=demoted,
                            retiring=retiring, removed=removed, retired=retired, repaired=repaired,
                            records_after=after, changed=after != list(records))
    plan.messages = _report(plan)
    return plan


__all__ = ["MACHINE_TAG", "AvailabilityPlan", "PoolHost", "plan_availability"]
