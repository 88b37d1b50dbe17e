"""Properties of the planner over generated replica sets (hypothesis).

From any valid current config and status and any set of machine records: every planned reconfig is one MongoDB
accepts, changes at most one vote, the primary never loses its vote before it was stepped down, and (when every
member is up) the sequence ends at the desired peer group with an odd number of voters.
"""

from __future__ import annotations

from ansible_collections.stateserver.ha.plugins.module_utils._availability import PoolHost, plan_availability
from ansible_collections.stateserver.ha.plugins.module_utils._model import Member
from ansible_collections.stateserver.ha.plugins.module_utils._peergroup import desired_peer_group, plan_steps
from ansible_collections.stateserver.ha.plugins.module_utils._rules import validate_config, voting_ids
from fixtures import DOWN, PRIMARY, ToySet, config, member, rec, view
from hypothesis import assume, given
from hypothesis import strategies as st


@st.composite
def scenarios(draw):
    size = draw(st.integers(1, 8))
    votes = draw(st.lists(st.sampled_from([0, 1]), min_size=size, max_size=size))
    voters = [i for i, v in enumerate(votes) if v]
    assume(1 <= len(voters) <= 7)
    primary = draw(st.sampled_from(voters))
    down = {i for i in range(size) if i != primary and draw(st.booleans()) and draw(st.booleans())}
    # Keep a majority of voters up, as the planner is only ever run against a set with a primary.
    assume(len([i for i in voters if i not in down]) >= len(voters) // 2 + 1)
    cfg = config([member(i, f"m{i}", v) for i, v in enumerate(votes)], version=draw(st.integers(1, 50)))
    states = {i: (PRIMARY if i == primary else DOWN if i in down else 2) for i in range(size)}
    records = []
    keep_primary = draw(st.integers(0, 4)) > 0  # now and then the primary's machine is gone too
    for i in range(size):
        if draw(st.booleans()) or (i == primary and keep_primary):
            moved = draw(st.integers(0, 5)) == 0  # now and then a machine's address changes
            records.append(rec(f"m{i}", i, wants=draw(st.booleans()), address=f"10.1.0.{i}:37017" if moved else None))
    for j in range(draw(st.integers(0, 4))):
        records.append(rec(f"n{j}", 20 + j, wants=draw(st.booleans())))
    assume(records)  # no records at all is refused (test_peergroup: test_no_records_is_refused)
    return cfg, states, records, primary, down


def _members(cfg):
    return [Member.from_doc(m).to_doc() for m in sorted(cfg["members"], key=lambda m: m["_id"])]


@given(scenarios())
def test_every_step_is_safe(scenario):
    cfg, states, records, primary, down = scenario
    v = view(cfg, states)
    steps = plan_steps(v, records, assume_ready=True)
    prev = cfg
    stepped_down = False
    for step in steps:
        if step.config is None:
            assert step.action == "step_down"
            assert stepped_down or step.member_id == primary
            stepped_down = True
            continue
        assert validate_config(step.config) == [], step
        assert step.config["version"] == prev["version"] + 1
        assert len(voting_ids(prev) ^ voting_ids(step.config)) <= 1
        if not stepped_down:
            assert primary in voting_ids(step.config), "the primary lost its vote without a step-down"
        prev = step.config
    if not down:
        desired = desired_peer_group(records, v)
        assert _members(prev) == [m.to_doc() for m in desired.members]
        assert len(voting_ids(prev)) % 2 == 1


@given(scenarios())
def test_replanning_after_the_plan_is_a_no_op(scenario):
    cfg, states, records, _primary, down = scenario
    assume(not down)
    steps = plan_steps(view(cfg, states), records, assume_ready=True)
    assume(steps and all(s.config is not None for s in steps))
    final = steps[-1].config
    states = {m["_id"]: states.get(m["_id"], 2) for m in final["members"]}
    assert plan_steps(view(final, states), records, assume_ready=True) == []


@given(scenarios())
def test_steps_valid_now_are_a_prefix_of_safe_moves(scenario):
    cfg, states, records, _primary, _down = scenario
    prev = cfg
    for step in plan_steps(view(cfg, states), records, assume_ready=False):
        if step.config is None:
            break
        assert validate_config(step.config) == []
        assert len(voting_ids(prev) ^ voting_ids(step.config)) <= 1
        prev = step.config


@given(st.sampled_from([3, 5, 7]), st.integers(1, 7), st.integers(0, 7))
def test_availability_never_shrinks_and_targets_odd(n, voters, spares):
    names = [f"m{i}" for i in range(voters)]
    cfg = config([member(i, names[i]) for i in range(voters)])
    records = [rec(x, i) for i, x in enumerate(names)]
    pool = [PoolHost(x, f"10.0.0.{i}:37017", f"10.0.0.{i}:17070") for i, x in enumerate(names)]
    pool += [PoolHost(f"s{j}", f"10.0.1.{j}:37017", f"10.0.1.{j}:17070") for j in range(spares)]
    plan = plan_availability(n, records, pool, view(cfg, {0: PRIMARY}))
    wanting = [r for r in plan.records_after if r.wants_vote]
    if plan.error:
        assert "more host" in plan.error and not plan.changed
        return
    assert len(wanting) >= voters
    if voters <= n:
        assert len(wanting) == n and n % 2 == 1
    else:
        assert not plan.changed


@given(scenarios())
def test_the_convergence_loop_keeps_the_primary_voting(scenario):
    """Driven the way the loop drives it (plan on the set as it is, apply the first step, re-read), the member that
    is primary at each moment keeps its vote, and every wanted, reachable machine ends up where the goal says."""
    cfg, states, records, _primary, down = scenario
    toy = ToySet(cfg, states)
    for _attempt in range(60):
        steps = plan_steps(toy.view(), records, assume_ready=False)
        if not steps:
            toy.sync()
            steps = plan_steps(toy.view(), records, assume_ready=False)
            if not steps:
                break
        step = steps[0]
        current_primary = next(i for i, s in toy.states.items() if s == PRIMARY)
        if step.config is not None:
            assert current_primary in voting_ids(step.config)
            assert len(voting_ids(toy.cfg) ^ voting_ids(step.config)) <= 1
            assert validate_config(step.config) == []
        else:
            assert step.member_id == current_primary
        toy.apply(step)
    else:
        raise AssertionError("the loop did not settle")
    if not down:
        assert _members(toy.cfg) == [m.to_doc() for m in desired_peer_group(records, toy.view()).members]
        assert len(voting_ids(toy.cfg)) % 2 == 1


def _fewest_reconfigs(cfg, goal, primary):
    """An independent oracle: breadth-first search over voting sets for the fewest reconfigs that reach the goal.

    A move is one replSetReconfig: at most one vote changes (promote a member that already exists, demote one, or
    remove a voter outright) and every change that moves no vote rides along for free. Rules the planner promises:
    a new member votes only after a reconfig that added it, the primary keeps its vote (no step-down here), there
    are 1 to 7 voters, and an even count is entered
    only when the vote that makes it odd again can follow at once (never held across a new member's sync)."""
    from collections import deque

    start_voters = frozenset(voting_ids(cfg))
    goal_voters = frozenset(m.id for m in goal if m.voting)
    goal_ids = frozenset(m.id for m in goal)
    start_ids = frozenset(m["_id"] for m in cfg["members"])
    free_changes = _members(cfg) != [m.to_doc() for m in goal]
    # state: (voters, ids present, all free changes done)
    start = (start_voters, start_ids, not free_changes)
    seen = {start: 0}
    queue = deque([start])
    while queue:
        state = queue.popleft()
        voters, ids, done = state
        if voters == goal_voters and done:
            return seen[state]
        moves = [None] + sorted(voters ^ goal_voters)
        for mid in moves:
            new_voters, new_ids = voters, ids
            if mid is not None:
                if mid in voters:
                    new_voters = voters - {mid}
                    if mid == primary:
                        continue
                    if mid not in goal_ids:
                        new_ids = ids - {mid}
                elif mid in ids:
                    new_voters = voters | {mid}
                else:
                    continue  # not a member yet: it must be added (non-voting) by an earlier reconfig
            if not 1 <= len(new_voters) <= 7:
                continue
            if mid in voters and len(new_voters) < min(3, len(goal_voters)):
                continue  # every member is up here: no healthy voter goes below the floor of 3 (issue 12)
            if len(new_voters) % 2 == 0 and len(voters) % 2 == 1:
                # An even count is entered only when the vote that makes it odd again can follow at once: a
                # demotion, or a promotion of a member that was already there (synced) before this reconfig.
                rest = (new_voters ^ goal_voters) - {primary}
                if not any(i in new_voters or i in ids for i in rest):
                    continue
            # the free changes: add every goal member (non-voting), drop every non-voter that is not in the goal
            new_ids = (new_ids | goal_ids) - {i for i in new_ids - goal_ids if i not in new_voters}
            nxt = (frozenset(new_voters), frozenset(new_ids), new_ids == goal_ids)
            if nxt not in seen:
                seen[nxt] = seen[state] + 1
                queue.append(nxt)
    raise AssertionError("the oracle found no path")


@given(scenarios())
def test_the_plan_uses_the_fewest_reconfigs_the_rules_allow(scenario):
    cfg, states, records, primary, down = scenario
    assume(not down)
    v = view(cfg, states)
    desired = desired_peer_group(records, v)
    assume(not desired.step_down_primary)
    steps = plan_steps(v, records, assume_ready=True)
    assume(all(s.config is not None for s in steps))
    assert len(steps) == _fewest_reconfigs(cfg, desired.members, primary)


@given(st.sampled_from([3, 5, 7]), st.integers(1, 7), st.integers(0, 7), st.data())
def test_availability_replanning_its_own_result_changes_nothing(n, voters, spares, data):
    names = [f"m{i}" for i in range(voters)]
    cfg = config([member(i, names[i]) for i in range(voters)])
    records = [rec(x, i) for i, x in enumerate(names)]
    pool = [PoolHost(x, f"10.0.0.{i}:37017", f"10.0.0.{i}:17070") for i, x in enumerate(names)]
    pool += [PoolHost(f"s{j}", f"10.0.1.{j}:37017", f"10.0.1.{j}:17070") for j in range(spares)]
    down = {i for i in range(1, voters) if data.draw(st.booleans())}
    since = {i: data.draw(st.sampled_from([5, 600])) for i in down}
    v = view(cfg, {0: PRIMARY, **{i: DOWN for i in down}}, since)
    plan = plan_availability(n, records, pool, v, down_after=60)
    if plan.error:
        assert not plan.changed and plan.records_after == []
        return
    wanting_before = sum(1 for r in records if r.wants_vote)
    wanting_after = sum(1 for r in plan.records_after if r.wants_vote)
    if wanting_before <= n:
        assert wanting_after == n == plan.target  # down voters are replaced one for one: never fewer than n
    else:
        assert not plan.changed and wanting_after == wanting_before  # never shrinks
    again = plan_availability(n, plan.records_after, pool, v, down_after=60)
    assert not again.changed and again.added == again.promoted == again.demoted == []


# -- the safety floor (issue 12): whatever the records say, a healthy set keeps its voters -------------------------

def _healthy_voters(toy: ToySet) -> set:
    return {m["_id"] for m in toy.cfg["members"] if m.get("votes", 1) and toy.states.get(m["_id"]) in (PRIMARY, 2)}


@given(scenarios())
def test_a_healthy_set_never_drops_below_three_voters_whatever_the_records_say(scenario):
    """Records with any wants_vote, records missing for any member, addresses moved: while 3 voters are healthy,
    no reconfig leaves fewer than 3 voters, and the goal keeps at least 3."""
    cfg, states, records, _primary, _down = scenario
    toy = ToySet(cfg, states)
    if len(_healthy_voters(toy)) >= 3 and any(r.wants_vote for r in records):
        assert len(desired_peer_group(records, toy.view()).voters) >= 3
    for _attempt in range(60):
        steps = plan_steps(toy.view(), records, assume_ready=False)
        if not steps:
            toy.sync()
            steps = plan_steps(toy.view(), records, assume_ready=False)
            if not steps:
                break
        step = steps[0]
        if step.config is not None and len(_healthy_voters(toy)) >= 3:
            assert len(voting_ids(step.config)) >= 3, (step.action, step.machine, step.changes)
        toy.apply(step)


RAW_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-1, 70000), st.floats(allow_nan=True),
                       st.text(max_size=12), st.sampled_from(["no", "yes", "true", "0", "h:99999", "a:b:c", " ",
                                                              "not a host!!", "10.0.0.1:37017", "[::1]:1"]))


@st.composite
def raw_record_docs(draw):
    """Documents as anyone with write access may leave them in stateserver.machines: most valid, some not."""
    docs = []
    for i in range(draw(st.integers(0, 8))):
        good = {"_id": f"m{i}", "mongo_address": f"10.0.0.{i}:37017", "api_address": f"10.0.0.{i}:17070",
                "wants_vote": draw(st.booleans())}
        for key in list(good):
            if draw(st.integers(0, 6)) == 0:
                good[key] = draw(RAW_VALUES)
        if draw(st.integers(0, 10)) == 0:
            del good[draw(st.sampled_from(sorted(good)))]
        docs.append(good)
    return docs


@given(raw_record_docs(), st.integers(0, 4), st.data())
def test_malformed_records_are_refused_never_acted_on(docs, voters_extra, data):
    """parse_record_docs never raises: a malformed document is a problem that names it, and only a fully valid
    set of records reaches the planner, which then keeps the floor whatever wants_vote says."""
    from ansible_collections.stateserver.ha.plugins.module_utils._records import parse_record_docs

    records, problems = parse_record_docs(docs)
    valid = [d for d in docs if isinstance(d.get("_id"), str) and isinstance(d.get("wants_vote"), bool)]
    assert len(records) <= len(valid)
    for record in records:
        assert isinstance(record.wants_vote, bool) and isinstance(record.name, str) and record.name
    if problems:
        return  # peergroup and ensure_availability refuse; nothing is planned from a partly valid record set
    size = 3 + voters_extra
    cfg = config([member(i, f"m{i}") for i in range(size)] if size % 2 else
                 [member(i, f"m{i}") for i in range(size - 1)] + [member(size - 1, f"m{size - 1}", 0)])
    primary = data.draw(st.sampled_from(sorted(voting_ids(cfg))))
    v = view(cfg, {primary: PRIMARY})
    if any(r.wants_vote and r.mongo_address for r in records):
        assert len(desired_peer_group(records, v).voters) >= 3


@given(st.sampled_from([3, 5, 7]), st.integers(0, 6), st.integers(0, 2), st.integers(0, 6), st.booleans())
def test_retiring_a_voter_never_runs_below_n_and_ends_without_it(n, retiree, spares, primary, replace):
    """Issue 13: whatever the set and the retiree, a retirement that is planned keeps n voters at every step (odd at
    rest), steps a primary down before it loses its vote, and ends with the retiree out of the config and records.
    At n=7 one step has 6: MongoDB allows no 8th voter, so the retiree's vote goes before the spare's comes."""
    assume(retiree < n and primary < n)
    names = [f"m{i}" for i in range(n + spares)]
    pool = [PoolHost(x, f"10.0.0.{i}:37017", f"10.0.0.{i}:17070") for i, x in enumerate(names)]
    toy = ToySet(config([member(i, names[i]) for i in range(n)]), {primary: PRIMARY})
    records = [rec(names[i], i) for i in range(n)]
    target = names[retiree]
    first = plan_availability(n, records, pool, toy.view(), retire=[target],
                              replace_with=names[n] if replace and spares else None)
    if spares == 0:
        assert first.error and "1 more spare host" in first.error
        return
    assert not first.error, first.error
    plan = first
    for _phase in range(3):
        for _attempt in range(40):
            steps = plan_steps(toy.view(), plan.records_after, assume_ready=False)
            if not steps:
                toy.sync()
                steps = plan_steps(toy.view(), plan.records_after, assume_ready=False)
                if not steps:
                    break
            step = steps[0]
            if step.action in ("demote", "remove") and step.config is not None:
                gone = next(m for m in toy.cfg["members"] if m["_id"] == step.member_id)
                primary_id = next(i for i, s in toy.states.items() if s == PRIMARY)
                assert gone["_id"] != primary_id or not gone.get("votes", 1), "a primary lost its vote"
            toy.apply(step)
            assert len(voting_ids(toy.cfg)) >= min(n, 6)
        assert len(voting_ids(toy.cfg)) % 2 == 1
        plan = plan_availability(n, plan.records_after, pool, toy.view(), retire=[target])
        assert not plan.error, plan.error
    assert target not in {m["tags"]["stateserver-machine"] for m in toy.cfg["members"]}
    assert target not in {r.name for r in plan.records_after} and plan.retired == [target]
