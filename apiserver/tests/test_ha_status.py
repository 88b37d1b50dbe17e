"""build_ha_status joins machine records with the replica set's config and status (pure, no server)."""

from stateserver_api.backend import build_ha_status

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
    {"name": "10.0.0.1:37017", "state": 1, "stateStr": "PRIMARY", "health": 1},
    {"name": "10.0.0.2:37017", "state": 2, "stateStr": "SECONDARY", "health": 1},
    {"name": "10.0.0.9:37017", "state": 8, "stateStr": "(not reachable/healthy)", "health": 0},
]}


def test_rows_per_machine_with_votes_states_and_strays() -> None:
    status = build_ha_status(RECORDS, CONFIG, STATUS)
    assert (status["replica_set"], status["config_version"], status["config_term"]) == ("stateserver", 7, 2)
    assert status["primary"] == "10.0.0.1:37017"
    rows = {r["machine"]: r for r in status["machines"]}
    assert rows["m1"] == {
        "machine": "m1", "mongo_address": "10.0.0.1:37017", "api_address": "10.0.0.1:17070", "wants_vote": True,
        "has_vote": True, "member_id": 0, "member_state": "PRIMARY", "health": 1, "primary": True}
    assert (rows["m2"]["wants_vote"], rows["m2"]["has_vote"], rows["m2"]["member_state"]) == (False, False, "SECONDARY")
    # A record whose machine has no member yet (ensure_availability added it, peergroup has not).
    assert (rows["m3"]["member_id"], rows["m3"]["has_vote"], rows["m3"]["member_state"]) == (None, False, None)
    assert status["members_without_machine"] == [
        {"member_id": 4, "host": "10.0.0.9:37017", "has_vote": True, "member_state": "(not reachable/healthy)"}]


def test_no_config_or_status_still_lists_the_records() -> None:
    status = build_ha_status(RECORDS, None, None)
    assert [r["machine"] for r in status["machines"]] == ["m1", "m2", "m3"]
    assert status["primary"] is None and status["config_version"] is None
    assert not any(r["has_vote"] for r in status["machines"])
