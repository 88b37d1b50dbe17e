"""retire-machine.yml and recover-majority-loss.yml, run by ansible-playbook against loopback sets.

The state machines are loopback members reached with a local connection, so the plays that plan and report run
as they do for real hosts. --check never reaches the plays that provision or stop services; the real retirement
with wipe=true runs them against a copy of the collection whose state_machine role is a stand-in (provisioning
would install mongod on this machine) and a stand-in systemctl that keeps each unit's state in a file. What the
plays registered is read from a callback that records every task result.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from cluster import Cluster
from playbook import REPO, ansible_env, run_recorded, run_tasks
from test_modules import assert_converged, ea, pg, voters
from test_retire import members

pytestmark = pytest.mark.timeout(600)
PASSWORD = "retire-test-password"


def inventory(cluster: Cluster, workdir: Path, machines: Path | None = None) -> Path:
    """machines: a directory with one directory per state machine for the files the roles put on a host."""
    lines = ["[state_machines]"]
    for name, host in zip(cluster.names, cluster.hosts):
        line = f"{name} ansible_host={host} ansible_connection=local ansible_python_interpreter={sys.executable}"
        if machines:
            # No sudo here: the test already runs as the user that owns these files.
            line += (f" ansible_become=false mongod_dbpath={machines / name / 'data'}"
                     f" mongod_keyfile_path={machines / name / 'mongod.keyfile'}"
                     f" mongod_tls_dir={machines / name / 'tls'}"
                     f" api_server_config_dir={machines / name / 'api'}")
        lines.append(line)
    # Every secret of the deployment, as an operator's vault gives them: the playbooks resolve them before any host.
    # The simulator members serve plain TCP: the documented opt-out (TLS runs are test_mongod_tls.py's).
    lines += ["", "[state_machines:vars]", "stateserver_tls=false", f"mongod_admin_password={PASSWORD}",
              "mongod_keyfile_content=cmV0aXJlLXRlc3Qta2V5ZmlsZS0wMTIzNDU2Nzg5", "state_machine_api_token=retire-test-token",
              "api_server_mongo_password=retire-test-api-mongo-password"]
    path = workdir / "hosts.ini"
    path.write_text("\n".join(lines) + "\n")
    return path


# A callback that writes every task result to a JSON-lines file: what the plays registered, without parsing output.
RECORDER = """
import json, os
from ansible.plugins.callback import CallbackBase

class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "record"
    CALLBACK_NEEDS_ENABLED = True

    def _write(self, result, **flags):
        with open(os.environ["RECORD_RESULTS"], "a") as out:
            out.write(json.dumps({"task": result._task.get_name(), "host": result._host.get_name(),
                                  "result": {**result._result, **flags}}, default=str) + "\\n")

    def v2_runner_on_ok(self, result):
        self._write(result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._write(result, failed=True)

    def v2_runner_on_skipped(self, result):
        self._write(result, skipped=True)
"""


def run(workdir: Path, cluster: Cluster, playbook: str, *extra: str, stand_ins: Path | None = None) -> list[dict]:
    """Every task result ({task, host, result}) of one ansible-playbook run; the last entry is {"rc": ...}.

    stand_ins: a directory made by stand_ins(); the run then really changes the hosts (no --check)."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = ansible_env(workdir / "ansible-home")
    args = ["--check"]
    if stand_ins:
        args = []
        env.update(ANSIBLE_COLLECTIONS_PATH=str(stand_ins / "collections"), FAKE_SYSTEMD=str(stand_ins / "units.json"),
                   PATH=f"{stand_ins / 'bin'}{os.pathsep}{env['PATH']}")
    hosts = inventory(cluster, workdir, stand_ins / "machines" if stand_ins else None)
    proc, entries = run_recorded(workdir, RECORDER, ["-i", str(hosts), str(REPO / "playbooks" / playbook), *args,
                                                     *extra], env=env)
    return entries + [{"rc": proc.returncode}]


def play(workdir: Path, cluster: Cluster, playbook: str, *extra: str) -> tuple[int, dict]:
    """(rc, {task name: localhost's result}) of a --check run."""
    *entries, end = run(workdir, cluster, playbook, *extra)
    return end["rc"], {e["task"]: e["result"] for e in entries if e["host"] == "localhost"}


# systemctl as systemd_service calls it, over a JSON file of {unit: {"active": bool, "enabled": bool}}.
SYSTEMCTL = """#!{python}
import json, os, sys
path = os.environ["FAKE_SYSTEMD"]
units = json.load(open(path))
command, unit = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else ""
state = units.get(unit)
if command == "show":
    if state is None:
        print(f"Id={{unit}}\\nLoadState=not-found\\nActiveState=inactive")
    else:
        print(f"Id={{unit}}\\nLoadState=loaded\\nActiveState={{'active' if state['active'] else 'inactive'}}")
elif command == "is-enabled":
    print("enabled" if state and state["enabled"] else "disabled")
    sys.exit(0 if state and state["enabled"] else 1)
elif command in ("stop", "disable"):
    state["active" if command == "stop" else "enabled"] = False
    json.dump(units, open(path, "w"))
else:
    sys.exit(f"the stand-in systemctl does not know {{command!r}}")
"""

# The spare's provisioning, reduced to a task the recorder sees per host.
STAND_IN_ROLE = """---
- name: Stand in for provisioning
  ansible.builtin.debug:
    msg: "{{ inventory_hostname }} would be provisioned"
"""


def stand_ins(path: Path, cluster: Cluster) -> Path:
    """The collection with a stand-in state_machine role, a stand-in systemctl whose units all run, and each
    machine's data directory, keyfile and API server configuration as the roles leave them."""
    collection = path / "collections" / "ansible_collections" / "stateserver" / "ha"
    (collection / "roles" / "state_machine" / "tasks").mkdir(parents=True)
    for entry in REPO.iterdir():
        if entry.name not in ("roles", "build", ".git", ".venv"):
            (collection / entry.name).symlink_to(entry)
    for role in (REPO / "roles").iterdir():
        if role.name != "state_machine":
            (collection / "roles" / role.name).symlink_to(role)
    (collection / "roles" / "state_machine" / "tasks" / "main.yml").write_text(STAND_IN_ROLE)
    (path / "bin").mkdir()
    (path / "bin" / "systemctl").write_text(SYSTEMCTL.format(python=sys.executable))
    (path / "bin" / "systemctl").chmod(0o755)
    (path / "units.json").write_text(json.dumps({u: {"active": True, "enabled": True}
                                                 for u in ("mongod", "stateserver-api")}))
    for name in cluster.names:
        machine = path / "machines" / name
        (machine / "data" / "journal").mkdir(parents=True)
        (machine / "data" / "collection-0.wt").write_text("data")
        (machine / "mongod.keyfile").write_text("keyfile")
        (machine / "tls").mkdir()
        (machine / "tls" / "mongod.pem").write_text("machine key and certificate")
        (machine / "api").mkdir()
        (machine / "api" / "token").write_text("token")
    return path


def leftovers(machine: Path) -> list[str]:
    return sorted(str(p.relative_to(machine)) for p in machine.rglob("*"))


def grown(cluster: Cluster, workdir: Path) -> None:
    cluster.initiate(0)
    with cluster.client() as c:
        c.admin.command("createUser", "admin", pwd=PASSWORD, roles=["root"])
    run = run_tasks(workdir, [ea(cluster, 3, 3), pg(cluster)])
    assert all(r.get("failed") is not True for r in run.results), run.results
    assert_converged(cluster, ["sm1", "sm2", "sm3"])


def test_retire_machine_check_changes_nothing_then_wipe_deletes_only_the_retirees_files_and_a_rerun_nothing(
        tmp_path, cluster_factory):
    # One set for the whole story: growing it costs more than each playbook run.
    cluster = cluster_factory(size=4)
    grown(cluster, tmp_path / "grow")
    before = cluster.read()
    rc, tasks = play(tmp_path / "check", cluster, "retire-machine.yml", "-e", "machine=sm1", "-e", "with=sm4")
    assert rc == 0, tasks
    plan = tasks["Plan which spare takes the retiree's vote"]
    assert plan["retiring"] == ["sm1"] and plan["added"] == ["sm4"]
    steps = [(s["action"], s["machine"]) for s in tasks["Move the vote from the retiree to the spare"]["steps"]]
    assert steps[:2] == [("add", "sm4"), ("promote", "sm4")] and ("demote", "sm1") in steps
    assert tasks["Delete the retiree's record"].get("skipped") is True
    after = cluster.read()
    assert after[0] == before[0] and after[2] == before[2]

    rc, tasks = play(tmp_path / "unknown", cluster, "retire-machine.yml", "-e", "machine=nosuch")
    assert rc != 0
    assert "unknown machine 'nosuch'" in tasks["Plan which spare takes the retiree's vote"]["msg"]

    hosts = stand_ins(tmp_path / "hosts", cluster)
    machines = {name: leftovers(hosts / "machines" / name) for name in cluster.names}
    before = cluster.read()

    # A retirement the plan refuses (the replacement is a voter, not a spare) wipes nothing and stops nothing.
    *entries, end = run(tmp_path / "refused", cluster, "retire-machine.yml", "-e", "machine=sm1", "-e", "with=sm2",
                        "-e", "wipe=true", stand_ins=hosts)
    assert end["rc"] != 0
    assert [e["result"].get("failed") for e in entries
            if e["task"] == "Plan which spare takes the retiree's vote"] == [True]
    assert {name: leftovers(hosts / "machines" / name) for name in cluster.names} == machines
    assert all(u == {"active": True, "enabled": True} for u in json.loads((hosts / "units.json").read_text()).values())
    after = cluster.read()
    assert after[0] == before[0] and after[2] == before[2]

    *entries, end = run(tmp_path / "wipe", cluster, "retire-machine.yml", "-e", "machine=sm1", "-e", "wipe=true",
                        stand_ins=hosts)
    assert end["rc"] == 0, [e for e in entries if e["result"].get("failed")]
    provisioned = {e["host"] for e in entries if e["task"].endswith("Stand in for provisioning")}
    assert provisioned == {"sm2", "sm3", "sm4"}
    # The retiree's services are stopped and disabled, its data directory, keyfile, mongod's TLS files (its private
    # key) and API server configuration (which holds the API token and the database password) are gone; every other machine keeps its files.
    assert json.loads((hosts / "units.json").read_text()) == {u: {"active": False, "enabled": False}
                                                              for u in ("mongod", "stateserver-api")}
    assert leftovers(hosts / "machines" / "sm1") == []
    assert {n: leftovers(hosts / "machines" / n) for n in cluster.names[1:]} == {n: machines[n]
                                                                                 for n in cluster.names[1:]}
    config, status, records = cluster.read()
    assert voters(config) == {"sm2", "sm3", "sm4"} and members(config) == {"sm2", "sm3", "sm4"}
    assert sorted(r["_id"] for r in records) == ["sm2", "sm3", "sm4"]
    primary = cluster.primary_name()
    assert len([m for m in status["members"] if m["state"] == 1]) == 1 and primary in {"sm2", "sm3", "sm4"}

    # A re-run finds the work done: no task changes anything on any host, the set keeps its config and primary.
    *entries, end = run(tmp_path / "again", cluster, "retire-machine.yml", "-e", "machine=sm1", "-e", "wipe=true",
                        stand_ins=hosts)
    assert end["rc"] == 0, [e for e in entries if e["result"].get("failed")]
    assert [(e["task"], e["host"]) for e in entries if e["result"].get("changed")] == []
    again = cluster.read()
    assert again[0] == config and cluster.primary_name() == primary
    assert sorted(r["_id"] for r in again[2]) == ["sm2", "sm3", "sm4"]


def test_recover_majority_loss_check_reports_the_survivor_and_changes_nothing(tmp_path, cluster_factory):
    cluster = cluster_factory(size=4)
    grown(cluster, tmp_path / "grow")
    survivor = cluster.primary_name()
    lost = [n for n in cluster.names[:3] if n != survivor]
    for name in lost:
        cluster.kill(cluster.names.index(name))
    s = cluster.names.index(survivor)
    cluster.wait_for(lambda: all(cluster.member_down_for(v, via=s) > 1 for v in lost), 60, "the loss seen")
    before = cluster.direct_config(s)
    rc, tasks = play(tmp_path / "refused", cluster, "recover-majority-loss.yml", "-e", "confirm=wrong")
    assert rc != 0 and "'stateserver'" in tasks["Plan the forced reconfig"]["msg"]
    rc, tasks = play(tmp_path / "check", cluster, "recover-majority-loss.yml", "-e", "confirm=stateserver")
    plan = tasks["Plan the forced reconfig"]
    # The lost members' hosts still answer over their (local) connection: not lost for good, so it stops there.
    assert rc != 0 and plan["survivors"] == [survivor] and sorted(plan["lost"]) == sorted(lost)
    assert "still answer" in tasks["Check that every machine to drop is unreachable over its connection too"]["msg"]
    assert cluster.direct_config(s) == before
