# Copyright: stateserver.ha contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""Recovery from a lost majority: who survived, who is most advanced, and the forced config. Pure, no I/O.

A forced reconfig is the one change that can lose acknowledged writes (those only the lost machines hold), and a
partition looks like a loss from one side, so the plan refuses unless every guard holds: the operator typed the
replica set's name, no member is primary, the members that answer hold no majority of the votes, and every member
to be dropped is unreachable from the controller and from every survivor.

The forced config keeps the survivors only, and makes the most advanced survivor (newest applied optime: term
first, then timestamp) the one voter: it alone can be elected, so no survivor that is behind can win an election
and roll back the newer writes it holds. The other survivors stay as non-voting members that sync from it;
ensure_availability and peergroup then vote them in and bring the set back to n from spares, one safe step at a
time. The lost machines' records are deleted: they are no longer members, and a machine that comes back must be
wiped before it joins again (its data may hold writes the set no longer has).
"""

from __future__ import annotations

import copy
import datetime
from dataclasses import dataclass, field

from ansible_collections.stateserver.ha.plugins.module_utils._model import (
    PRIMARY,
    MachineRecord,
    Member,
    ReplSetView,
    members_of,
)
from ansible_collections.stateserver.ha.plugins.module_utils._records import address_key


@dataclass
class RecoveryPlan:
    survivors: list = field(default_factory=list)
    lost: list = field(default_factory=list)
    most_advanced: str | None = None
    behind: dict = field(default_factory=dict)
    lost_hosts: list = field(default_factory=list)
    config: dict | None = None
    report: list = field(default_factory=list)
    error: str | None = None


def _failed(message: str, report: list | None = None) -> RecoveryPlan:
    return RecoveryPlan(error=message, report=list(report or []) + [message])


def _name(mem: Member) -> str:
    return mem.machine or mem.host


def optime_key(entry: dict) -> tuple:
    """(term, seconds, increment) of a status entry's applied optime: mongod orders optimes by term, then time."""
    optime = entry.get("optime") or {}
    ts = optime.get("ts")
    return (int(optime.get("t", -1)), int(getattr(ts, "time", 0)), int(getattr(ts, "inc", 0)))


def _self_entry(view: ReplSetView) -> dict:
    return next((m for m in (view.status or {}).get("members", []) if m.get("self")), {})


def records_without_lost(records: list[MachineRecord], plan: RecoveryPlan) -> list[MachineRecord]:
    """The records left once the lost machines' are deleted (matched by name or by mongo address)."""
    gone = set(plan.lost) | {address_key(h) for h in plan.lost_hosts}
    return [r for r in records if r.name not in gone and address_key(r.mongo_address) not in gone]


def plan_recovery(set_name: str, confirm, hellos: dict, views: dict) -> RecoveryPlan:
    """The forced reconfig that recovers the set, or a refusal (plan.error) saying why and what to do.

    hellos: {member host: hello document, or the error text} as the controller reached each member of the config.
    views: {member host: ReplSetView read from that member directly, or the error text} for those that answered.
    """
    if confirm != set_name:
        return _failed(f"a forced reconfig can lose writes, so it needs confirm set to the replica set name "
                       f"({set_name!r}); got {confirm!r}; nothing was changed")
    answered = {host: v for host, v in views.items() if isinstance(v, ReplSetView) and v.config}
    if not answered:
        return _failed("no member answers with its replica set config, so there is nothing to recover from; start "
                       "at least one surviving member (its data directory intact) and run again; nothing was changed")
    primaries = [host for host, v in answered.items() if (v.status or {}).get("myState") == PRIMARY]
    if primaries:
        return _failed(f"{primaries[0]} is primary: the set has its majority, this is not a majority loss; use "
                       "ensure-ha.yml (or retire-machine.yml) instead; nothing was changed")
    # The newest config any survivor holds is the set as it last was.
    config = max((v.config for v in answered.values()),
                 key=lambda c: (int(c.get("term", -1)), int(c.get("version", 0))))
    members = members_of(config)
    survivors = [m for m in members if isinstance(hellos.get(m.host), dict) and m.host in answered]
    unread = [m for m in members if isinstance(hellos.get(m.host), dict) and m.host not in answered]
    if unread:
        why = views.get(unread[0].host, "it was not asked")
        return _failed(f"member {_name(unread[0])} ({unread[0].host}) answers but its config and status could not "
                       f"be read ({why}); fix that (credentials, TLS) so every survivor is known; nothing was changed")
    lost = [m for m in members if m not in survivors]
    voters = [m for m in members if m.voting]
    up_voters = [m for m in voters if m in survivors]
    need = len(voters) // 2 + 1
    if len(up_voters) >= need:
        return _failed(f"{len(up_voters)} of the {len(voters)} voters answer ({', '.join(map(_name, up_voters))}), "
                       f"a majority: the set can elect a primary by itself, so this is not a majority loss; wait "
                       "for the election or check the survivors' network; nothing was changed")
    for mem in survivors:
        seen = {address_key(e.get("name", "")): e for e in (answered[mem.host].status or {}).get("members", [])}
        for gone in lost:
            entry = seen.get(address_key(gone.host))
            if entry is not None and entry.get("health") == 1:
                return _failed(f"{_name(mem)} still reaches {_name(gone)} ({gone.host}), which the controller "
                               "cannot reach: a partition is not a loss; restore the network between the "
                               "controller and the members instead; nothing was changed")

    keys = {m.host: optime_key(_self_entry(answered[m.host])) for m in survivors}
    best = max(survivors, key=lambda m: (keys[m.host], m.voting, -m.id))
    best_key = keys[best.host]
    report, behind = [], {}
    for mem in survivors:
        key = keys[mem.host]
        date = _self_entry(answered[mem.host]).get("optimeDate")
        when = date.isoformat() if isinstance(date, datetime.datetime) else f"{key[1]}"
        lag = max(0, best_key[1] - key[1])
        behind[_name(mem)] = lag
        what = "the most advanced" if mem is best else f"{lag} s behind {_name(best)}"
        report.append(f"survivor {_name(mem)} ({mem.host}): last applied optime term {key[0]} at {when}, {what}")
    report.append(f"lost: {', '.join(map(_name, lost))}; writes acknowledged only by the lost machines may be gone "
                  "for good, and survivors behind the most advanced one are caught up from it")
    forced = copy.deepcopy(config)
    forced.pop("term", None)
    forced["version"] = int(config.get("version", 0)) + 1
    docs = []
    for mem in survivors:
        if mem is best:
            doc = Member(mem.id, mem.host, 1, mem.priority if mem.priority > 0 else 1.0, mem.tags, mem.extra)
        else:
            doc = Member(mem.id, mem.host, 0, 0.0, mem.tags, mem.extra)
        docs.append(doc.to_doc())
    forced["members"] = docs
    others = [_name(m) for m in survivors if m is not best]
    report.append(f"forced reconfig: {_name(best)} is the only voter (it is elected first)"
                  + (f", {', '.join(others)} non-voting until peergroup votes them in" if others else "")
                  + f"; {', '.join(map(_name, lost))} removed from the config")
    return RecoveryPlan(survivors=[_name(m) for m in survivors], lost=[_name(m) for m in lost],
                        most_advanced=_name(best), behind=behind, lost_hosts=[m.host for m in lost], config=forced,
                        report=report)


__all__ = ["RecoveryPlan", "optime_key", "plan_recovery", "records_without_lost"]
