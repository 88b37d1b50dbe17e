"""majority_loss: with 2 of 3 voters powered off, ensure-ha fails clearly and changes nothing.

Recovery, as the collection README documents it: bring the machines back and re-run ensure-ha.yml (or, if they are
lost for good, force-reconfigure the survivor by hand first).
"""

import hatest
from pymongo import MongoClient, ReadPreference


def survivor_view():
    """Config version and records as the lone survivor holds them (it cannot be primary, so read it directly)."""
    with MongoClient(f"{hatest.address('m1')}:37017", directConnection=True, username="admin",
                     password=hatest.admin_password(), authSource="admin", serverSelectionTimeoutMS=10000) as c:
        config = c.admin.command("replSetGetConfig")["config"]
        machines = c.stateserver.machines.with_options(read_preference=ReadPreference.SECONDARY_PREFERRED)
        records = sorted((r["_id"], r["wants_vote"]) for r in machines.find())
    return config["version"], records


def test_majority_loss_fails_clearly_and_changes_nothing():
    hatest.healthy_voters(3)
    before = survivor_view()
    hatest.labhosts("stop", "m2", "m3")

    proc = hatest.run_playbook("ensure-ha.yml", "-e", "n=3")
    assert proc.returncode != 0
    assert "majority" in (proc.stdout + proc.stderr).lower()
    assert survivor_view() == before


def test_recovery_by_bringing_the_machines_back():
    hatest.labhosts("start", "m2", "m3")
    hatest.healthy_voters(3, timeout=180)
    proc = hatest.run_playbook("ensure-ha.yml", "-e", "n=3")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert hatest.voters(hatest.replset_config()) == ["m1", "m2", "m3"]
