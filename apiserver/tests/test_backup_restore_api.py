"""Issue 16's scenario: a unit writes through the API, backup.yml copies the state database, every machine is lost
(processes killed, data directories deleted), a new deployment comes up, restore.yml fills it, and the unit reads
every acknowledged write back through the new API servers.

Both sets run as deployed (members in requireTLS with keyfile and authorization, API servers on HTTPS), so the
playbooks reach the members with the stateserver_tls variables: from the inventory for the backup, from extra vars
for the restore. What the playbooks registered is read from ansible-runner's events.
"""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any

import ansible_runner
import pytest
from machines import API_PORT, StateMachines, mongod_binary
from stateserver_client import ClientError, StateClient, VersionConflict

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(240),
    pytest.mark.skipif(mongod_binary() is None, reason="needs .venv/bin/mongosim or $MONGOD_BIN"),
]

REPO = Path(__file__).resolve().parents[2]
COLLECTIONS = REPO / "build" / "collections"
BACKUP_TASK = "Copy the state database as of one majority-committed point in time"
RESTORE_TASK = "Verify the backup and restore it with majority write concern"
UNITS = [f"app-{i}" for i in range(5)]
# Values of every JSON kind the API stores, several keys rewritten to later versions.
VALUES: list[Any] = [{"nested": {"list": [1, 2.5, "three", None, True]}}, "ünïcødé ✓", 0, -17, 3.25, None, False,
                     [], {}, "x" * 2000]


def deployment(workdir: Path, request: pytest.FixtureRequest) -> StateMachines:
    workdir.mkdir()
    machines = StateMachines(workdir, auth=True)
    request.addfinalizer(machines.stop)
    return machines.start()


def inventory(machines: StateMachines, path: Path, tls_vars: bool) -> Path:
    lines = ["[state_machines]"]
    lines += [f"{m.name} ansible_host={m.host} ansible_connection=local ansible_python_interpreter={sys.executable}"
              for m in machines.machines]
    lines += ["", "[state_machines:vars]", f"mongod_admin_user={machines.admin_user}",
              f"mongod_admin_password={machines.admin_password}", f"api_server_port={API_PORT}"]
    if tls_vars:
        lines += ["stateserver_tls=true", f"stateserver_tls_ca_file={machines.ca.path}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def play(workdir: Path, hosts: Path, playbook: str, extravars: dict[str, Any]) -> tuple[int, dict[str, dict]]:
    """(rc, {task name: localhost's result}) of one ansible-playbook run through ansible-runner, in a private data
    directory of its own (ansible-runner would otherwise reuse an earlier run's command line)."""
    link = COLLECTIONS / "ansible_collections" / "stateserver" / "ha"
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(REPO)
    workdir.mkdir()
    runner = ansible_runner.run(
        private_data_dir=str(workdir), playbook=str(REPO / "playbooks" / playbook), inventory=str(hosts),
        extravars=extravars, quiet=True, timeout=180,
        envvars={"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                 "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS), "ANSIBLE_HOME": str(workdir / "ansible-home"),
                 "ANSIBLE_LOCALHOST_WARNING": "False"})
    tasks = {event["event_data"]["task"]: {**event["event_data"].get("res", {}), "event": event["event"]}
             for event in runner.events if event["event"] in ("runner_on_ok", "runner_on_failed", "runner_on_skipped")
             and event["event_data"]["host"] == "localhost"}
    return runner.rc, tasks


def unit_writes(client: StateClient) -> tuple[dict[str, dict], dict[str, dict], dict[str, Any]]:
    """What a unit does: register, heartbeat, write keys (some several times). Returns the acknowledged units and
    keys ({name: unit}, {key: {value, version}}) and the last write's body, to be retried after the restore."""
    units = {}
    for name in UNITS:
        client.register(name)
        units[name] = client.heartbeat(name)
    keys: dict[str, dict] = {}
    for i, value in enumerate(VALUES * 3):
        key = f"config-{i % 12:02d}"
        version = keys.get(key, {}).get("version", 0)
        request_id = uuid.uuid4().hex
        written = client.put(key, value, version, request_id)
        assert written["version"] == version + 1 and not written["replayed"]
        keys[key] = {"value": value, "version": written["version"]}
        last = {"key": key, "value": value, "version": version, "request_id": request_id}
    return units, keys, last


def test_write_through_the_api_back_up_lose_every_machine_restore_and_read_it_all_back(
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    old = deployment(tmp_path / "old", request)
    with old.client(tmp_path / "unit-cache.json", seed=1) as unit:
        units, keys, last = unit_writes(unit)
    assert len(keys) == 12 and max(k["version"] for k in keys.values()) == 3

    backups = tmp_path / "backups"
    rc, tasks = play(tmp_path / "backup", inventory(old, tmp_path / "old.ini", tls_vars=True), "backup.yml",
                     {"backup_dir": str(backups)})
    assert rc == 0, tasks
    backup = tasks[BACKUP_TASK]
    assert backup["event"] == "runner_on_ok" and backup["changed"]
    assert backup["collections"] == {"kv": 12, "machines": 3, "units": 5}
    assert backup["source"] in {m.mongo_address for m in old.machines}

    # Every machine is lost: both processes of each killed by PID, and the members' data deleted.
    old.stop()
    shutil.rmtree(old.cluster.workdir)

    new = deployment(tmp_path / "new", request)
    with new.client(tmp_path / "new-unit-cache.json", seed=2) as unit:
        with pytest.raises(ClientError) as missing:
            unit.get("config-00")
        assert missing.value.status == 404

    # The TLS options come as extra vars this time: the new deployment's CA, and a client certificate it issued.
    rc, tasks = play(tmp_path / "restore", inventory(new, tmp_path / "new.ini", tls_vars=False), "restore.yml",
                     {"backup": backup["path"], "stateserver_tls": True, "stateserver_tls_ca_file": new.ca.path,
                      "stateserver_tls_certificate_key_file": new.ca.issue("controller", ["127.0.0.1"])})
    assert rc == 0, tasks
    # Ansible reported the restore as skipped while its result carried a key named "skipped" (now left_out).
    assert tasks[RESTORE_TASK]["event"] == "runner_on_ok" and tasks[RESTORE_TASK]["changed"]
    assert tasks[RESTORE_TASK]["collections"] == {"kv": 12, "units": 5}
    assert tasks[RESTORE_TASK]["left_out"] == ["machines"]

    with new.client(tmp_path / "new-unit-cache.json", seed=3) as unit:
        for key, expected in keys.items():
            assert unit.get(key) == {"key": key, **expected}
        for name, expected in units.items():
            assert unit.request("GET", f"/v1/units/{name}") == expected
        # The new deployment's records stayed: the API publishes the new machines' addresses.
        assert sorted(unit.refresh_addresses()) == sorted(m.api_address for m in new.machines)
        # The last write, retried after the restore with its request id, is recognised, not applied again.
        retried = unit.put(last["key"], last["value"], last["version"], last["request_id"])
        assert retried == {"key": last["key"], "version": last["version"] + 1, "replayed": True}
        # Versions carry on from the backup's: a stale version conflicts, the current one writes.
        key = last["key"]
        with pytest.raises(VersionConflict) as stale:
            unit.put(key, "stale", keys[key]["version"] - 1)
        assert stale.value.current_version == keys[key]["version"]
        assert unit.put(key, "after the restore", keys[key]["version"])["version"] == keys[key]["version"] + 1
        assert unit.get(key) == {"key": key, "value": "after the restore", "version": keys[key]["version"] + 1}
