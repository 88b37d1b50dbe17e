"""Recovery from a lost majority (issue 13): the guards and the forced config of _recovery.plan_recovery."""

from __future__ import annotations

import datetime

import pytest
from ansible_collections.stateserver.ha.plugins.module_utils import _replset
from ansible_collections.stateserver.ha.plugins.module_utils._model import ReplSetView
from ansible_collections.stateserver.ha.plugins.module_utils._recovery import plan_recovery, records_without_lost
from ansible_collections.stateserver.ha.plugins.modules import recover_majority
from bson import Timestamp
from fixtures import NOW, addr, config, member, rec

FIVE = config([member(i, f"m{i}") for i in range(5)], version=7)
HELLO = {"setName": "stateserver"}


def survivor_view(me: int, optimes: dict, seen_up=(), state=2) -> ReplSetView:
    """The view member `me` has: itself in `state`, the members in seen_up healthy, the others down."""
    members = []
    for m in FIVE["members"]:
        i = m["_id"]
        up = i == me or i in seen_up
        t, secs = optimes.get(i, (1, 0))
        members.append({"_id": i, "name": m["host"], "health": 1 if up else 0, "state": state if i == me else 2 if up
                        else 8, "self": i == me, "optime": {"ts": Timestamp(secs, 1), "t": t},
                        "optimeDate": datetime.datetime.fromtimestamp(secs, datetime.UTC)})
    return ReplSetView(FIVE, {"set": "stateserver", "myState": state, "members": members}, NOW)


def inputs(survivors: dict):
    """survivors: {member id: view}; every other member is unreachable from the controller."""
    hellos = {m["host"]: (HELLO if m["_id"] in survivors else "connection refused") for m in FIVE["members"]}
    return hellos, {addr(i): v for i, v in survivors.items()}


def test_three_of_five_lost_the_most_advanced_survivor_is_the_only_voter():
    optimes = {3: (2, 100), 4: (2, 130)}
    hellos, views = inputs({3: survivor_view(3, optimes, seen_up=(4,)), 4: survivor_view(4, optimes, seen_up=(3,))})
    plan = plan_recovery("stateserver", "stateserver", hellos, views)
    assert plan.error is None
    assert plan.survivors == ["m3", "m4"] and plan.lost == ["m0", "m1", "m2"] and plan.most_advanced == "m4"
    assert plan.behind == {"m3": 30, "m4": 0}
    assert plan.config["version"] == 8 and "term" not in plan.config
    assert [(m["_id"], m["votes"], m["priority"]) for m in plan.config["members"]] == [(3, 0, 0.0), (4, 1, 1.0)]
    assert any("m3" in line and "30 s behind m4" in line for line in plan.report)
    assert any("may be gone" in line for line in plan.report)


def test_a_newer_term_wins_over_a_newer_timestamp():
    optimes = {3: (3, 100), 4: (2, 900)}
    hellos, views = inputs({3: survivor_view(3, optimes, seen_up=(4,)), 4: survivor_view(4, optimes, seen_up=(3,))})
    assert plan_recovery("stateserver", "stateserver", hellos, views).most_advanced == "m3"


@pytest.mark.parametrize(("about", "confirm", "survivors", "words"), [
    ("no confirmation", "yes", {3: survivor_view(3, {})}, ["confirm", "'stateserver'"]),
    ("nothing answers", "stateserver", {}, ["no member answers"]),
    ("a primary exists", "stateserver", {3: survivor_view(3, {}, state=1)}, ["is primary", "not a majority loss"]),
    ("a majority answers", "stateserver", {i: survivor_view(i, {}, seen_up=(0, 1, 2)) for i in range(3)},
     ["3 of the 5 voters answer", "not a majority loss"]),
    ("a partition", "stateserver", {3: survivor_view(3, {}, seen_up=(0,)), 4: survivor_view(4, {})},
     ["m3 still reaches m0", "a partition is not a loss"]),
])
def test_refusals(about, confirm, survivors, words):
    hellos, views = inputs(survivors)
    plan = plan_recovery("stateserver", confirm, hellos, views)
    assert plan.error and plan.config is None, about
    assert all(w in plan.error for w in words) and "nothing was changed" in plan.error, plan.error


def test_a_member_that_answers_but_cannot_be_read_is_refused():
    hellos, views = inputs({3: survivor_view(3, {})})
    hellos[addr(4)] = HELLO
    views[addr(4)] = "Authentication failed"
    plan = plan_recovery("stateserver", "stateserver", hellos, views)
    assert plan.error and "m4" in plan.error and "Authentication failed" in plan.error


def test_lost_records_are_dropped_by_name_or_address():
    hellos, views = inputs({3: survivor_view(3, {})})
    plan = plan_recovery("stateserver", "stateserver", hellos, views)
    records = [rec(f"m{i}", i) for i in range(5)] + [rec("other-name", 9, address=addr(1)), rec("spare", 8)]
    assert [r.name for r in records_without_lost(records, plan)] == ["m3", "spare"]


def test_read_members_asks_each_seed_once_and_reads_the_views_of_those_that_answer(monkeypatch):
    rs = _replset.ReplSet({"seeds": [addr(0), addr(1)]})
    asked = []

    def probe_one(host):
        asked.append(host)
        return HELLO if host == addr(0) else "nothing answers"
    cfg = config([member(0, "m0"), member(1, "m1")], version=4)
    monkeypatch.setattr(rs, "_probe_one", probe_one)
    monkeypatch.setattr(rs, "kept", lambda host, auth=False: (None, False))
    monkeypatch.setattr(rs, "_admin", lambda command, client=None, **kw:
                        {"config": cfg} if command == "replSetGetConfig" else {"members": []})
    hellos, views = recover_majority.read_members(rs)
    assert sorted(asked) == [addr(0), addr(1)]  # the probe's answers were passed on, not asked for again
    assert hellos == {addr(0): HELLO, addr(1): "nothing answers"}
    assert list(views) == [addr(0)] and views[addr(0)].config == cfg


def test_read_members_with_no_seed_answering_reads_no_view(monkeypatch):
    rs = _replset.ReplSet({"seeds": [addr(0)]})
    monkeypatch.setattr(rs, "_probe_one", lambda host: "nothing answers")
    assert recover_majority.read_members(rs) == ({addr(0): "nothing answers"}, {})
