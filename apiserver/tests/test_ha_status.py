"""build_ha_status: the collection's join of machine records with the replica set's config and status, as the API
answers it (pure, no server)."""

from stateserver_api.collection._records import parse_record_docs
from stateserver_api.collection._status import status_rows
from stateserver_api.status import SetReading, build_ha_status

RECORDS = [
    {"_id": "m1", "mongo_address": "10.0.0.1:37017", "api_address": "10.0.0.1:17070", "wants_vote": True},
    {"_id": "m2", "mongo_address": "10.0.0.2:37017", "api_address": "10.0.0.2:17070", "wants_vote": False},
    {"_id": "m3", "mongo_address": "10.0.0.3:37017", "api_address": "10.0.0.3:17070", "wants_vote": True},
]
CONFIG = {"_id": "stateserver", "version": 7, "term": 2, "members": [
    {"_id": 0, "host": "10.0.0.1:37017", "votes": 1, "tags": {"stateserver-machine": "m1"}},
    {"_id": 1, "host": "10.0.0.2:37017", "votes": 0, "priority": 0},  # no tag: matched by address
    {"_id": 4, "host": "10.0.0.9:37017", "votes": 1, "tags": {}},  # a member no record claims
]}
STATUS = {"set": "stateserver", "members": [
    {"_id": 0, "name": "10.0.0.1:37017", "state": 1, "stateStr": "PRIMARY", "health": 1},
    {"_id": 1, "name": "10.0.0.2:37017", "state": 2, "stateStr": "SECONDARY", "health": 1},
    {"_id": 4, "name": "10.0.0.9:37017", "state": 8, "stateStr": "(not reachable/healthy)", "health": 0},
]}
ANSWERS = {"10.0.0.1:17070": True, "10.0.0.2:17070": False, "10.0.0.3:17070": True}


def test_rows_per_machine_with_votes_states_and_strays() -> None:
    status = build_ha_status(SetReading(RECORDS, CONFIG, STATUS, from_primary=True), ANSWERS)
    assert (status["replica_set"], status["config_version"], status["config_term"]) == ("stateserver", 7, 2)
    assert status["primary"] == "10.0.0.1:37017" and status["read_from"] == "primary"
    rows = {r["machine"]: r for r in status["machines"]}
    assert rows["m1"] == {
        "machine": "m1", "address": "10.0.0.1:37017", "wants_vote": True, "has_vote": True, "state": "PRIMARY",
        "primary": True, "note": "", "api_address": "10.0.0.1:17070", "api_answers": True}
    assert (rows["m2"]["wants_vote"], rows["m2"]["has_vote"], rows["m2"]["state"]) == (False, False, "SECONDARY")
    assert rows["m2"]["api_answers"] is False
    # A record whose machine has no member yet (ensure_availability added it, peergroup has not).
    assert (rows["m3"]["has_vote"], rows["m3"]["state"], rows["m3"]["address"]) == (None, "spare", "10.0.0.3:37017")
    stray = rows["10.0.0.9:37017"]
    assert (stray["has_vote"], stray["state"], stray["wants_vote"], stray["api_address"]) == (True, "DOWN", None, None)
    assert "not a state machine" in stray["note"]
    assert status["record_problems"] == []


def test_rows_and_table_are_the_collections_join() -> None:
    # The rows are ha_status_info's rows (plus the API fields), in its order, and the table is the one it prints.
    status = build_ha_status(SetReading(RECORDS, CONFIG, STATUS, from_primary=False))
    records, _ = parse_record_docs(RECORDS)
    expected = [row.as_dict() for row in status_rows(records, CONFIG, STATUS)]
    assert [{k: r[k] for k in expected[0]} for r in status["machines"]] == expected
    assert status["table"][0].split()[:3] == ["MACHINE", "ADDRESS", "WANTS-VOTE"]
    assert len(status["table"]) == len(expected) + 1
    assert all(r["api_answers"] is None for r in status["machines"])  # not asked
    assert status["read_from"] != "primary"


def test_invalid_records_are_named_not_joined() -> None:
    broken = [*RECORDS[:2], {"_id": "m3", "mongo_address": "10.0.0.3:99999", "api_address": 5, "wants_vote": "no"}]
    status = build_ha_status(SetReading(broken, CONFIG, STATUS, from_primary=True))
    assert [r["machine"] for r in status["machines"]][:2] == ["m1", "m2"]
    assert "m3" not in {r["machine"] for r in status["machines"]}
    assert len(status["record_problems"]) == 3 and all("'m3'" in p for p in status["record_problems"])


def test_no_config_or_status_still_lists_the_records() -> None:
    status = build_ha_status(SetReading(RECORDS, None, None, from_primary=False))
    assert [r["machine"] for r in status["machines"]] == ["m1", "m2", "m3"]
    assert status["primary"] is None and status["config_version"] is None
    assert {r["state"] for r in status["machines"]} == {"no replica set"}
