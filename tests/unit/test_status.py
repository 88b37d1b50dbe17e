"""The status rows and table (_status.py): records, pool, config members and member status joined once."""

from __future__ import annotations

import pytest
from ansible_collections.stateserver.ha.plugins.module_utils import _converge, _status
from ansible_collections.stateserver.ha.plugins.module_utils._model import MachineRecord

TAG = "stateserver-machine"


def rec(name: str, i: int, wants: bool = True) -> MachineRecord:
    return MachineRecord(name, f"10.0.0.{i}:37017", f"10.0.0.{i}:17070", wants)


def mem(i: int, name: str | None, votes: int = 1) -> dict:
    doc = {"_id": i, "host": f"10.0.0.{i}:37017", "votes": votes, "priority": 1.0 if votes else 0.0}
    if name:
        doc["tags"] = {TAG: name}
    return doc


def st(i: int, state: int, health: int = 1, **extra) -> dict:
    names = {1: "PRIMARY", 2: "SECONDARY", 3: "RECOVERING", 5: "STARTUP2", 8: "(not reachable/healthy)"}
    return {"_id": i, "name": f"10.0.0.{i}:37017", "state": state, "stateStr": names.get(state, "X"),
            "health": health, **extra}


CONFIG = {"_id": "stateserver", "version": 5, "members": [mem(1, "sm1"), mem(2, "sm2"), mem(3, "sm3"),
                                                          mem(4, "sm4", votes=0)]}
STATUS = {"members": [st(1, 1), st(2, 2), st(3, 8, health=0, lastHeartbeatMessage="connection refused"),
                      st(4, 3)]}
RECORDS = [rec("sm1", 1), rec("sm2", 2), rec("sm3", 3), rec("sm4", 4)]
POOL = [{"name": f"sm{i}", "address": f"10.0.0.{i}:37017"} for i in range(1, 6)]


def rows(*args, **kwargs) -> list[dict]:
    return [r.as_dict() for r in _status.status_rows(*args, **kwargs)]


def test_a_healthy_machine_row_has_every_column():
    row = rows(RECORDS, CONFIG, STATUS, POOL)[0]
    assert row == {"machine": "sm1", "address": "10.0.0.1:37017", "wants_vote": True, "has_vote": True,
                   "state": "PRIMARY", "primary": True, "note": "", "api_answers": None}


def test_pool_order_first_then_spares_then_down_and_recovering_members_are_named():
    out = rows(RECORDS, CONFIG, STATUS, POOL)
    assert [r["machine"] for r in out] == ["sm1", "sm2", "sm3", "sm4", "sm5"]
    assert out[2]["state"] == "DOWN" and out[2]["note"] == "unreachable (connection refused)"
    assert out[3]["state"] == "RECOVERING" and out[3]["has_vote"] is False and "not promoted" in out[3]["note"]
    assert out[4] == {"machine": "sm5", "address": "10.0.0.5:37017", "wants_vote": None, "has_vote": None,
                      "state": "spare", "primary": False, "note": "", "api_answers": None}


def test_a_too_stale_member_says_it_needs_a_resync():
    out = rows(RECORDS, CONFIG, STATUS, POOL, stale=frozenset({"10.0.0.4:37017"}))
    assert out[3]["state"] == "RECOVERING"
    assert "too stale" in out[3]["note"] and "resync" in out[3]["note"]


def test_before_the_set_exists_every_machine_is_no_replica_set():
    out = rows([], None, None, POOL[:3])
    assert [r["state"] for r in out] == ["no replica set"] * 3
    assert all(r["wants_vote"] is None and r["has_vote"] is None and not r["primary"] for r in out)
    assert out[0]["address"] == "10.0.0.1:37017"


def test_without_a_pool_records_then_stray_members_are_listed():
    config = {"members": [mem(1, "sm1"), mem(2, None, votes=0), mem(3, "gone", votes=0)]}
    status = {"members": [st(1, 1), st(2, 2), st(3, 2)]}
    out = rows([rec("sm1", 1), rec("sm9", 9, wants=False)], config, status)
    assert [r["machine"] for r in out] == ["sm1", "sm9", "10.0.0.2:37017", "gone"]
    assert out[1]["state"] == "spare" and out[1]["wants_vote"] is False and out[1]["address"] == "10.0.0.9:37017"
    assert out[2]["wants_vote"] is None and "not a state machine" in out[2]["note"]
    assert out[3]["note"] == "no machine record"


def test_an_untagged_member_at_a_recorded_address_is_that_machine():
    config = {"members": [mem(1, None)]}
    out = rows([rec("sm1", 1)], config, {"members": [st(1, 1)]})
    assert len(out) == 1 and out[0]["machine"] == "sm1" and out[0]["has_vote"] is True and out[0]["primary"]


def test_a_member_missing_from_the_status_is_unknown():
    out = rows([rec("sm1", 1)], {"members": [mem(1, "sm1")]}, {"members": []})
    assert out[0]["state"] == "UNKNOWN" and out[0]["note"] == "not in the replica set status yet"


def test_table_has_the_playbook_columns_header_first():
    table = _status.status_table(_status.status_rows(RECORDS, CONFIG, STATUS, POOL))
    assert table[0] == "MACHINE    ADDRESS              WANTS-VOTE  HAS-VOTE  STATE          PRIMARY API  NOTE"
    assert table[1] == "sm1        10.0.0.1:37017       yes         yes       PRIMARY        *       -"
    assert table[5] == "sm5        10.0.0.5:37017       -           -         spare                  -"
    assert table[3].endswith("unreachable (connection refused)")
    assert len(table) == 1 + 5


def test_api_answers_join_by_the_records_api_address_else_the_pools():
    pool = [*POOL[:4], dict(POOL[4], api_address="10.0.0.5:17070")]
    stray = {**CONFIG, "members": [*CONFIG["members"], mem(7, None)]}
    answers = {"10.0.0.1:17070": True, "10.0.0.2:17070": False, "10.0.0.5:17070": True,
               "10.0.0.7:17070": True}  # no machine claims the member at 10.0.0.7: its API is not looked up
    out = rows(RECORDS, stray, STATUS, pool, api_answers=answers)
    assert [r["api_answers"] for r in out] == [True, False, None, None, True, None]
    assert all(r["api_answers"] is None for r in rows(RECORDS, stray, STATUS, pool))  # not probed


def test_the_table_says_whether_each_api_server_answered():
    answers = {"10.0.0.1:17070": True, "10.0.0.2:17070": False}
    table = _status.status_table(_status.status_rows(RECORDS, CONFIG, STATUS, POOL, api_answers=answers))
    assert table[1] == "sm1        10.0.0.1:37017       yes         yes       PRIMARY        *       yes"
    assert table[2] == "sm2        10.0.0.2:37017       yes         yes       SECONDARY              no"
    assert table[3].split()[5:7] == ["-", "unreachable"]


@pytest.mark.parametrize("config, status", [(CONFIG, STATUS), (None, None), ({"members": []}, {})])
def test_peergroup_members_are_the_member_half_of_the_same_join(config, status):
    summary = _converge.member_summary(config, status)
    states = _status.member_states(config, status)
    assert [m["host"] for m in summary] == [m.host for m in states]
    assert [m["state"] for m in summary] == [m.state for m in states]
    if config is CONFIG:
        assert summary[0] == {"member_id": 1, "host": "10.0.0.1:37017", "machine": "sm1", "votes": 1,
                              "priority": 1.0, "state": "PRIMARY", "health": 1}
        assert _converge.voter_names(config) == ["sm1", "sm2", "sm3"]
