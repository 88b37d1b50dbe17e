"""backup.yml and restore.yml run by ansible-playbook with an inventory of loopback state machines.

Data written to a set is backed up (retention applied), deleted, and restored by the playbooks; the documents read
back equal the originals. What the plays registered comes from the recording callback of test_retire_playbooks.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playbook import REPO, run_recorded
from test_backup import MAJORITY, backups, dump, three_members, write_state
from test_retire_playbooks import PASSWORD, RECORDER, inventory

pytestmark = pytest.mark.timeout(600)


def play(workdir: Path, cluster, playbook: str, *extra: str) -> tuple[int, dict]:
    """(rc, {task name: localhost's result}) of one ansible-playbook run."""
    workdir.mkdir(parents=True, exist_ok=True)
    proc, entries = run_recorded(workdir, RECORDER, ["-i", str(inventory(cluster, workdir)),
                                                     str(REPO / "playbooks" / playbook), *extra])
    return proc.returncode, {e["task"]: e["result"] for e in entries if e["host"] == "localhost"}


def with_admin(cluster):
    """The admin user the inventory's mongod_admin_password logs in as (the mongod role creates it)."""
    with cluster.client() as c:
        c.admin.command("createUser", "admin", pwd=PASSWORD, roles=["root"], writeConcern={"w": "majority"})
    return cluster


BACKUP_TASK = "Copy the state database as of one majority-committed point in time"
RESTORE_TASK = "Verify the backup and restore it with majority write concern"


def test_backup_and_restore_playbooks_round_trip_with_retention(tmp_path, cluster_factory):
    cluster = with_admin(three_members(cluster_factory))
    write_state(cluster)
    units, kv = dump(cluster, "units"), dump(cluster, "kv")
    dest = tmp_path / "backups"

    rc, tasks = play(tmp_path / "check", cluster, "backup.yml", "-e", f"backup_dir={dest}", "--check")
    assert rc == 0 and tasks[BACKUP_TASK]["changed"], tasks
    assert backups(dest) == []

    # Retention itself is unit-tested (test_backup_manifest); here the playbook passes backup_retain through.
    for i in range(2):
        rc, tasks = play(tmp_path / f"backup{i}", cluster, "backup.yml", "-e", f"backup_dir={dest}", "-e", "backup_retain=1")
        assert rc == 0, tasks
    kept = backups(dest)
    assert len(kept) == 1 and str(kept[-1]) == tasks[BACKUP_TASK]["path"]
    assert len(tasks[BACKUP_TASK]["removed"]) == 1

    # The units' data is lost (a new deployment after losing every machine is apiserver/tests/
    # test_backup_restore_api.py's scenario; this set is reused to keep the suite short).
    with cluster.client() as c:
        db = c.get_database("stateserver", write_concern=MAJORITY)
        db.units.delete_many({})
        db.kv.delete_many({})
    rc, tasks = play(tmp_path / "no-backup", cluster, "restore.yml")
    assert rc != 0 and "-e backup=DIR" in tasks["Check that a backup directory was given"]["msg"]

    rc, tasks = play(tmp_path / "restore", cluster, "restore.yml", "-e", f"backup={kept[-1]}")
    assert rc == 0, tasks
    assert tasks[RESTORE_TASK]["collections"] == {"kv": 2, "units": 250}
    # Reported as run, not skipped (its result once carried a key named "skipped").
    assert tasks[RESTORE_TASK]["left_out"] == ["machines"] and not tasks[RESTORE_TASK].get("skipped")
    assert dump(cluster, "units") == units and dump(cluster, "kv") == kv

    with cluster.client() as c:
        c.get_database("stateserver", write_concern=MAJORITY).kv.insert_one({"_id": "later", "value": 1})
    rc, tasks = play(tmp_path / "refused", cluster, "restore.yml", "-e", f"backup={kept[-1]}")
    assert rc != 0 and "already holds data" in tasks[RESTORE_TASK]["msg"]
    assert len(dump(cluster, "kv")) == 3
