"""retire-machine.yml and recover-majority-loss.yml under --check, run by ansible-playbook against loopback sets.

The state machines are loopback members reached with a local connection, so the plays that plan and report run
as they do for real hosts; --check never reaches the plays that provision or stop services. What they registered
is read from ansible's json callback; the set itself must be unchanged.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cluster import Cluster
from playbook import REPO, ansible_env, run_tasks
from test_modules import assert_converged, ea, pg

pytestmark = pytest.mark.timeout(600)
PASSWORD = "retire-test-password"


def inventory(cluster: Cluster, workdir: Path) -> Path:
    lines = ["[state_machines]"]
    lines += [f"{name} ansible_host={host} ansible_connection=local ansible_python_interpreter={sys.executable}"
              for name, host in zip(cluster.names, cluster.hosts)]
    # Every secret of the deployment, as an operator's vault gives them: the playbooks resolve them before any host.
    # The simulator members serve plain TCP: the documented opt-out (TLS runs are test_mongod_tls.py's).
    lines += ["", "[state_machines:vars]", "stateserver_tls=false", f"mongod_admin_password={PASSWORD}",
              "mongod_keyfile_content=cmV0aXJlLXRlc3Qta2V5ZmlsZS0wMTIzNDU2Nzg5", "state_machine_api_token=retire-test-token"]
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


def play(workdir: Path, cluster: Cluster, playbook: str, *extra: str) -> tuple[int, dict]:
    """(rc, {task name: localhost's result}) of a --check run."""
    plugins = workdir / "callbacks"
    plugins.mkdir(parents=True, exist_ok=True)
    (plugins / "record.py").write_text(RECORDER)
    results = workdir / "results.jsonl"
    env = ansible_env(workdir / "ansible-home")
    env.update(ANSIBLE_CALLBACK_PLUGINS=str(plugins), ANSIBLE_CALLBACKS_ENABLED="record", RECORD_RESULTS=str(results))
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i",
                           str(inventory(cluster, workdir)), str(REPO / "playbooks" / playbook), "--check", *extra],
                          check=False, env=env, capture_output=True, text=True, timeout=300, cwd=str(workdir))
    assert results.exists(), proc.stdout + proc.stderr
    tasks = {}
    for line in results.read_text().splitlines():
        entry = json.loads(line)
        if entry["host"] == "localhost":
            tasks[entry["task"]] = entry["result"]
    return proc.returncode, tasks


def grown(cluster: Cluster, workdir: Path) -> None:
    cluster.initiate(0)
    with cluster.client() as c:
        c.admin.command("createUser", "admin", pwd=PASSWORD, roles=["root"])
    run = run_tasks(workdir, [ea(cluster, 3, 3), pg(cluster)])
    assert all(r.get("failed") is not True for r in run.results), run.results
    assert_converged(cluster, ["sm1", "sm2", "sm3"])


def test_retire_machine_check_prints_the_plan_and_changes_nothing(tmp_path, cluster_factory):
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
