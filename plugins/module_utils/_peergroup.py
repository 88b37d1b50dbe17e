# Copyright: stateserver.ha contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""The desired peer group and the safe reconfig steps that reach it. Pure functions over plain data.

Behaviour follows Juju's desiredPeerGroup (machines that want a vote get one once they are ready, the others are
non-voting standbys, members of machines that are gone are removed), with its known problems fixed: the voter count
is repaired to odd and never reaches zero, a primary is stepped down before it loses its vote, new members join
non-voting and are promoted only once they are healthy secondaries, and every reconfig changes at most one vote.
Whatever the records say, a healthy set never drops below 3 voters while 3 of its members are healthy (issue 12):
a record that says wants_vote false, or records deleted by mistake, cannot vote a healthy set down to one member.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from ansible_collections.stateserver.ha.plugins.module_utils._model import (
    MACHINE_TAG,
    MAX_VOTERS,
    MachineRecord,
    Member,
    ReplSetView,
    members_of,
    primary_of,
    same_config,
    statuses_of,
)

# A bound on planned steps: far above any real plan (≤ 50 members), it only guards against a planning bug looping.
_MAX_STEPS = 200


class PeerGroupError(ValueError):
    """The current set cannot be managed as a peer group of state machines (e.g. a foreign voting member)."""


@dataclass(frozen=True)
class Desired:
    """The peer group to converge to, assuming every wanted machine becomes ready."""

    members: list
    step_down_primary: bool
    changed: bool
    voters: list
    removed: list = field(default_factory=list)


@dataclass(frozen=True)
class Step:
    """One action: a step-down (config None) or one replSetReconfig carrying the full new config."""

    action: str
    machine: str
    member_id: int
    config: dict | None
    changes: tuple = ()


def _machine_name(member: Member) -> str:
    return member.machine or member.host


def desired_peer_group(machines: list[MachineRecord], view: ReplSetView) -> Desired:
    """The member list the set should end up with (Juju's desiredPeerGroup, assuming readiness)."""
    current = members_of(view.config)
    records = {r.name: r for r in machines}
    by_host = {m.host.lower(): m for m in current}
    claimed: dict[str, Member] = {}
    for mem in current:
        if mem.machine in records and mem.machine not in claimed:
            claimed[mem.machine] = mem
    for rec in machines:
        # An untagged member at a machine's address is that machine (e.g. one bootstrapped by hand): adopt it.
        mem = by_host.get(rec.mongo_address.lower()) if rec.mongo_address else None
        if rec.name not in claimed and mem is not None and mem.machine is None:
            claimed[rec.name] = mem
    for mem in current:
        if mem.voting and mem.machine is None and mem not in claimed.values():
            raise PeerGroupError(
                f"voting member {mem.id} ({mem.host}) is not a state machine (it has no {MACHINE_TAG} tag and no "
                "machine record has its address); make it non-voting or remove it before managing this set")

    primary = primary_of(view.status)
    primary_id = primary.id if primary else None
    statuses = {s.id: s for s in statuses_of(view.status)}

    def healthy(mem: Member) -> bool:
        return statuses.get(mem.id) is not None and statuses[mem.id].ready

    next_id = max((m.id for m in current), default=-1) + 1
    goal: dict[str, Member] = {}
    for rec in machines:
        mem = claimed.get(rec.name)
        if mem is None and not rec.mongo_address:
            continue  # no address yet: it cannot be a member until it has one
        if mem is None:
            goal[rec.name] = Member(id=next_id, host=rec.mongo_address, votes=0, priority=0.0,
                                    tags={MACHINE_TAG: rec.name})
            next_id += 1
        else:
            goal[rec.name] = Member(id=mem.id, host=rec.mongo_address or mem.host, votes=mem.votes,
                                    priority=mem.priority, tags={**mem.tags, MACHINE_TAG: rec.name}, extra=mem.extra)

    if not goal:
        # Removing every member is never what anyone wants: the records are missing or have no addresses.
        raise PeerGroupError(
            "no state machine record with a mongo address matches this replica set (stateserver.machines is empty "
            "or its records have no mongo_address); run ensure_availability first, nothing was changed")

    order = {r.name: i for i, r in enumerate(machines)}
    voting_now = {name for name, mem in claimed.items() if mem.voting}
    wants = [r.name for r in machines if r.wants_vote and r.name in goal]
    # Keep existing voters first so a cap or a parity cut never takes a vote that is already working.
    wants.sort(key=lambda n: (n not in voting_now, order[n]))
    chosen = wants[:MAX_VOTERS]
    # The safety floor (issue 12), whatever the records say: a healthy voter keeps its vote when the set would
    # otherwise have fewer than 3 voters although 3 healthy members exist, and when the parity cut would otherwise
    # take a working voter. One record saying wants_vote false, or records deleted by
    # mistake, can then never shrink a healthy set: a voter is retired by wanting a replacement (ensure_availability
    # does), or by its member going down. Recorded machines are kept before members whose record is gone, the
    # primary first.
    name_of = {mem.id: name for name, mem in claimed.items()}
    keepers = sorted((m for m in current if m.voting and healthy(m)
                      and name_of.get(m.id, m.machine or m.host) not in chosen),
                     key=lambda m: (m.id not in name_of, m.id != primary_id, m.id))
    spare = [name_of.get(m.id, m.machine or m.host) for m in keepers]
    for name, mem in zip(spare, keepers):
        goal.setdefault(name, mem)  # a healthy voter whose record is gone stays as it is while it is needed
        voting_now.add(name)
    primary_name = next((n for n, m in goal.items() if m.id == primary_id), None)
    if chosen:
        floor = 3 if sum(1 for m in goal.values() if healthy(m)) >= 3 else 1
        while len(chosen) < floor and spare:
            chosen.append(spare.pop(0))
        if len(chosen) % 2 == 0:
            newcomers = [n for n in chosen if n not in voting_now]
            if newcomers:
                chosen.remove(newcomers[-1])
            elif spare and len(chosen) < MAX_VOTERS:
                chosen.append(spare.pop(0))
            else:
                chosen.remove(next(n for n in reversed(chosen) if n != primary_name))
    else:
        # Never zero voters: with no machine wanting a vote, the current voters keep theirs (healthy ones whose record
        # is gone too); when every voter belongs to a machine that is gone and is down, one remaining machine (a
        # ready one first) takes the vote.
        ready = [n for n, m in goal.items() if healthy(m)]
        chosen = [n for n in goal if n in voting_now] or ready[:1] or list(goal)[:1]
        if len(chosen) % 2 == 0:
            chosen.remove(next(n for n in reversed(chosen) if n != primary_name))
    recorded = {r.name for r in machines}
    for name in [n for n in goal if n not in recorded and n not in chosen]:
        del goal[name]  # members of gone machines go, unless the floor keeps their vote

    members = []
    for name, mem in goal.items():
        if name in chosen:
            priority = mem.priority if mem.voting and mem.priority > 0 else 1.0
            members.append(Member(id=mem.id, host=mem.host, votes=1, priority=priority, tags=mem.tags, extra=mem.extra))
        else:
            members.append(Member(id=mem.id, host=mem.host, votes=0, priority=0.0, tags=mem.tags, extra=mem.extra))
    members.sort(key=lambda m: m.id)
    kept = {m.id for m in members}
    removed = [m for m in current if m.id not in kept]
    voter_ids = {m.id for m in members if m.voting}
    return Desired(
        members=members,
        step_down_primary=primary_id is not None and primary_id not in voter_ids and bool(voter_ids),
        changed=[m.to_doc() for m in members] != [m.to_doc() for m in current],
        voters=sorted(_machine_name(m) for m in members if m.voting),
        removed=removed,
    )


def _majority(count: int) -> int:
    return count // 2 + 1


class _Planner:
    """Walks from the current members to the goal one safe reconfig at a time (simulating each step)."""

    def __init__(self, view: ReplSetView, goal: list[Member], assume_ready: bool) -> None:
        self.goal = {m.id: m for m in goal}
        self.assume_ready = assume_ready
        self.status = {s.id: s for s in statuses_of(view.status)}
        primary = primary_of(view.status)
        self.primary_id = primary.id if primary else None

    def ready(self, mid: int) -> bool:
        """Can this member take a vote now? Members not yet in the status are new: ready only when assumed."""
        st = self.status.get(mid)
        if st is None:
            return self.assume_ready
        return st.ready or (self.assume_ready and not st.down)

    def up(self, mid: int) -> bool:
        st = self.status.get(mid)
        return self.assume_ready if st is None else not st.down

    def voting_change(self, cur: dict) -> tuple[str, int] | None:
        """The one vote to change next, or None (nothing to do, or nothing safe to do yet)."""
        cur_voters = {i for i, m in cur.items() if m.voting}
        goal_voters = {i for i, m in self.goal.items() if m.voting}
        promote = sorted(i for i in goal_voters - cur_voters if i in cur and self.ready(i))
        demote = sorted(cur_voters - goal_voters, key=lambda i: (self.up(i), i))
        others = [i for i in demote if i != self.primary_id]
        down = [i for i in others if not self.up(i)]
        count = len(cur_voters)

        options: list[tuple[str, int]] = []
        if count % 2 == 0:
            # Even (a transition, or an even set we inherited): restore odd first.
            options += [("demote", i) for i in others[:1]] + [("promote", i) for i in promote[:1]]
        else:
            # A down voter goes first: removing it costs nothing, and it makes room for its replacement.
            options += [("demote", i) for i in down[:1]]
            if len(promote) >= 2 or (promote and demote):
                options.append(("promote", promote[0]))
            # With the goal odd too, demotions pair up: one now, the other (perhaps the primary's) next.
            if others and (len(demote) >= 2 or promote):
                options.append(("demote", others[0]))
        # Never more than 7 voters, not even for one step: at the cap a demotion (or a step-down) comes first.
        options = [(kind, mid) for kind, mid in options if kind != "promote" or count < MAX_VOTERS]
        if not options and self.primary_id in demote:
            # A replacement that is joining or syncing will be promoted first (below the cap of 7): stepping down
            # now would cost an election for nothing, as the primary cannot lose its vote before that promotion.
            waiting = count < MAX_VOTERS and [i for i in goal_voters - cur_voters
                                              if self.status.get(i) is None or not self.status[i].down]
            if count == 1:
                options += [("promote", i) for i in promote[:1]]  # Juju's "N=2" move: a second voter first
            elif waiting:
                return None
            else:
                return ("step_down", self.primary_id)
        # A healthy voter is never demoted below 3 voters when the goal has 3 or more (issue 12): the replacement is
        # promoted first, so a swap of voters never passes through a 1-voter set while the newcomers sync.
        floor = min(3, len(goal_voters))
        options = [(kind, mid) for kind, mid in options
                   if kind != "demote" or not self.up(mid) or len(cur_voters) - 1 >= floor]
        for kind, mid in options:
            after = cur_voters - {mid} if kind == "demote" else cur_voters | {mid}
            # Never leave the set without a reachable majority of its voters.
            if after and sum(1 for i in after if self.up(i) or i == mid) >= _majority(len(after)):
                return (kind, mid)
        return None

    def next_step(self, cur: dict, config: dict) -> tuple[Step, dict] | None:
        new = dict(cur)
        changes = []
        first: tuple[str, int] | None = None

        vote = self.voting_change(cur)
        if vote and vote[0] == "step_down":
            mem = cur[vote[1]]
            return Step("step_down", _machine_name(mem), mem.id, None,
                        (f"step down primary {mem.host} before it loses its vote",)), cur
        if vote:
            kind, mid = vote
            mem = cur[mid]
            if kind == "promote":
                target = self.goal[mid]
                new[mid] = Member(mid, target.host, 1, target.priority or 1.0, target.tags, target.extra)
                changes.append(f"promote {mem.host} to a voter")
                first = ("promote", mid)
            elif mid in self.goal:
                target = self.goal[mid]
                new[mid] = Member(mid, target.host, 0, 0.0, target.tags, target.extra)
                changes.append(f"demote {mem.host} to a non-voting member")
                first = ("demote", mid)
            else:
                del new[mid]
                changes.append(f"remove voting member {mem.host}")
                first = ("remove", mid)

        # Changes that move no vote ride along: adds (non-voting), address/tag/priority updates, non-voter removals.
        for mid, target in self.goal.items():
            if mid not in new:
                new[mid] = Member(mid, target.host, 0, 0.0, target.tags, target.extra)
                changes.append(f"add {target.host} as a non-voting member")
                first = first or ("add", mid)
                continue
            have = new[mid]
            votes = have.votes
            # A voter keeps its priority until its own demote step: priority 0 on a voter would make it passive.
            priority = (target.priority if target.voting else have.priority) if votes else 0.0
            if (have.host, dict(have.tags), have.priority) != (target.host, dict(target.tags), priority):
                new[mid] = Member(mid, target.host, votes, priority, target.tags, target.extra)
                what = f"move member {mid} from {have.host} to {target.host}" if have.host != target.host \
                    else f"update member {mid} ({target.host})"
                changes.append(what)
                first = first or ("update_address", mid)
        for mid, have in list(new.items()):
            if mid not in self.goal and not have.voting:
                del new[mid]
                changes.append(f"remove non-voting member {have.host}")
                first = first or ("remove", mid)
        if first is None:
            return None
        kind, mid = first
        mem = new.get(mid) or cur[mid]
        cfg = copy.deepcopy(config)
        cfg["version"] = int(config.get("version", 0)) + 1
        cfg["members"] = [m.to_doc() for m in sorted(new.values(), key=lambda m: m.id)]
        return Step(kind, _machine_name(mem), mid, cfg, tuple(changes)), new

    def after_step_down(self, cur: dict) -> bool:
        """Simulate the election that follows a step-down; False when no other member could win it."""
        old = self.primary_id
        candidates = [i for i, m in sorted(cur.items())
                      if m.voting and m.priority > 0 and i != old and self.ready(i)]
        preferred = [i for i in candidates if self.goal.get(i) is not None and self.goal[i].voting]
        if not (preferred or candidates):
            return False
        self.primary_id = (preferred or candidates)[0]
        return True


def plan_steps(view: ReplSetView, machines: list[MachineRecord], assume_ready: bool = True) -> list[Step]:
    """The reconfig steps from the current config to the desired peer group.

    assume_ready=True plans the whole path (check mode), assuming new members become healthy secondaries and a
    step-down elects another voter. assume_ready=False returns only what can be done on the set as it is now; the
    convergence loop applies the first step, waits, re-reads and plans again.
    """
    if view.config is None:
        return []
    desired = desired_peer_group(machines, view)
    planner = _Planner(view, desired.members, assume_ready)
    cur = {m.id: m for m in members_of(view.config)}
    config = view.config
    steps: list[Step] = []
    while len(steps) < _MAX_STEPS:
        found = planner.next_step(cur, config)
        if found is None:
            break
        step, cur = found
        steps.append(step)
        if step.config is None:
            if not assume_ready or not planner.after_step_down(cur):
                break
            continue
        config = step.config
    return steps


def convergence_report(view: ReplSetView, machines: list[MachineRecord]) -> tuple[bool, list[str]]:
    """(converged, reasons): the set equals the desired group, one primary, every wanted voter a healthy member
    on the primary's config version and term, and no member still flagged newlyAdded."""
    if view.config is None:
        return False, ["the replica set is not initiated"]
    try:
        desired = desired_peer_group(machines, view)
    except PeerGroupError as exc:
        return False, [str(exc)]
    reasons = []
    current = {m.id: m for m in members_of(view.config)}
    for mem in desired.members:
        have = current.get(mem.id)
        if have is None:
            reasons.append(f"machine {_machine_name(mem)} ({mem.host}) is not a member yet")
        elif have.votes != mem.votes:
            want = "a voter" if mem.voting else "non-voting"
            reasons.append(f"machine {_machine_name(mem)} ({mem.host}) should be {want}")
        elif have.host != mem.host or have.to_doc() != mem.to_doc():
            reasons.append(f"member {mem.id} ({have.host}) should be {mem.host} with tags {dict(mem.tags)}")
    for mem in desired.removed:
        reasons.append(f"member {mem.id} ({mem.host}) belongs to no state machine and should be removed")
    primaries = [s for s in statuses_of(view.status) if s.state == 1]
    if len(primaries) != 1:
        reasons.append(f"expected exactly one PRIMARY, found {len(primaries)}")
    statuses = {s.id: s for s in statuses_of(view.status)}
    for mem in desired.members:
        st = statuses.get(mem.id)
        if mem.id not in current:
            continue
        role = "voter" if mem.voting else "standby"
        if not mem.voting and (st is None or st.down):
            continue  # a down standby (e.g. demoted because it died) holds no vote: it must not block convergence
        if st is None or not st.ready:
            state = st.state_str if st else "not in the status"
            reasons.append(f"{role} {_machine_name(mem)} ({mem.host}) is {state}, not a healthy PRIMARY/SECONDARY")
        elif len(primaries) == 1 and not same_config(st.config_version, st.config_term,
                                                     primaries[0].config_version, primaries[0].config_term):
            reasons.append(f"{role} {_machine_name(mem)} has config version {st.config_version} term "
                           f"{st.config_term}, the primary {primaries[0].config_version} term "
                           f"{primaries[0].config_term}")
    for doc in view.config.get("members", []):
        if doc.get("newlyAdded"):
            reasons.append(f"member {doc['_id']} ({doc['host']}) is still newlyAdded")
    return not reasons, reasons
