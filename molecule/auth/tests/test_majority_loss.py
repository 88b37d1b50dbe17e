"""majority loss, in the auth scenario after test_auth.py, on its hosts: 2 of 3 voters powered off. ensure-ha fails
clearly and changes nothing; recover-majority-loss.yml refuses without confirmation, then forces the set down to the
survivor; the lost machines come back as wiped replacement hardware at the same addresses and ensure-ha restores
n=3.

What is guaranteed, and tested: a write acknowledged with w: majority that had reached the survivor before the loss
survives the recovery. What cannot be: a write acknowledged only by the lost machines (the survivor never had it).
"""

import hatest
from pymongo import ReadPreference

ACKED = [{"_id": f"before-loss-{i}"} for i in range(20)]


def survivor(**kwargs):
    return hatest.member_client("m1", serverSelectionTimeoutMS=10000, **kwargs)


def survivor_view():
    """Config version and members and the records as the survivor holds them (read directly: it may not be primary)."""
    with survivor() as c:
        config = c.admin.command("replSetGetConfig")["config"]
        machines = c.stateserver.machines.with_options(read_preference=ReadPreference.SECONDARY_PREFERRED)
        records = sorted((r["_id"], r["wants_vote"]) for r in machines.find())
    return config["version"], sorted(m["host"] for m in config["members"]), records


def on_survivor(ids):
    with survivor(read_preference=ReadPreference.SECONDARY_PREFERRED) as c:
        return {d["_id"] for d in c.stateserver.loss_probe.find({"_id": {"$in": ids}})}


def test_majority_loss_fails_clearly_and_changes_nothing():
    hatest.healthy_voters(3)
    with hatest.client(w="majority", wtimeoutMS=10000) as c:
        c.stateserver.loss_probe.insert_many(ACKED)
    ids = [d["_id"] for d in ACKED]
    # A majority of 3 may be the other two: wait until the survivor has applied them before the loss.
    hatest.wait_until(lambda: on_survivor(ids) == set(ids), 60, "the acknowledged writes on the survivor m1")
    before = survivor_view()
    hatest.labhosts("stop", "m2", "m3")

    proc = hatest.run_playbook("ensure-ha.yml", "-e", "n=3")
    assert proc.returncode != 0
    assert "majority" in (proc.stdout + proc.stderr).lower()
    assert survivor_view() == before


def test_recovery_without_confirmation_is_refused_and_changes_nothing():
    before = survivor_view()
    proc = hatest.run_playbook("recover-majority-loss.yml")
    assert proc.returncode != 0
    assert "confirm=<replica set name>" in proc.stdout + proc.stderr
    assert survivor_view() == before


def test_recovery_forces_the_set_down_to_the_survivor():
    proc = hatest.run_playbook("recover-majority-loss.yml", "-e", "confirm=stateserver")
    assert proc.returncode == 0, proc.stdout[-4000:]
    with survivor() as c:
        assert c.admin.command("hello")["isWritablePrimary"]
        config = c.admin.command("replSetGetConfig")["config"]
        assert [m["host"] for m in config["members"]] == [f"{hatest.address('m1')}:37017"]
        assert sorted((r["_id"], r["wants_vote"]) for r in c.stateserver.machines.find()) == [("m1", True)]
    assert on_survivor([d["_id"] for d in ACKED]) == {d["_id"] for d in ACKED}


def test_wiped_replacements_at_the_same_addresses_restore_three_voters():
    # Replacement hardware: the old data must not come back, so the data directories go before the machines boot.
    for name in ("m2", "m3"):
        hatest.wipe_mongod_data(name)
    hatest.labhosts("start", "m2", "m3")
    proc = hatest.run_playbook("ensure-ha.yml", "-e", "n=3")
    assert proc.returncode == 0, proc.stdout[-4000:]

    hatest.healthy_voters(3, timeout=180)
    assert hatest.voters(hatest.replset_config()) == ["m1", "m2", "m3"]
    with hatest.client(w="majority", wtimeoutMS=10000) as c:
        ids = [d["_id"] for d in ACKED]
        assert {d["_id"] for d in c.stateserver.loss_probe.find({"_id": {"$in": ids}})} == set(ids)
        assert sorted((r["_id"], r["wants_vote"]) for r in c.stateserver.machines.find()) == [
            ("m1", True), ("m2", True), ("m3", True)]
        # Clients write again with a majority of the restored set.
        assert c.stateserver.loss_probe.insert_one({"_id": "after-recovery"}).acknowledged
