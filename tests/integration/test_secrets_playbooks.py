"""A deployment's secrets across AWX-like jobs: every job starts in a fresh directory, as AWX's private data dir does.

The state machines are loopback simulator members reached with a local connection, started with the keyfile and
the admin user the first "job" generated, so a wrong secret would really be refused. Only ensure-ha.yml's --check
runs go past the secrets (a real run would provision this machine); the refusals are real runs, which stop before
any host task. What the plays decided is read from their task results; the set and the files are read back.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest
from cluster import Cluster
from playbook import REPO, run_recorded, run_tasks
from pymongo import MongoClient
from test_retire_playbooks import RECORDER

pytestmark = pytest.mark.timeout(600)
SECRETS = "stateserver.ha.deployment_secrets"
FILES = {"keyfile": "mongod_keyfile_content", "admin-password": "mongod_admin_password",
         "api-token": "state_machine_api_token", "api-mongo-password": "api_server_mongo_password"}


def job(jobdir: Path, cluster: Cluster, playbook: str, *args: str, tls: bool = False) -> tuple[int, dict, set]:
    """One job in its own new directory, the inventory in inventory/ (secrets default to inventory/stateserver-secrets).
    The simulator members serve plain TCP, so the inventory opts out of TLS unless `tls` (TLS sets: test_mongod_tls).

    (rc, {task name: localhost's result}, the state machines any task ran on)."""
    (jobdir / "inventory").mkdir(parents=True)
    inventory = jobdir / "inventory" / "hosts.ini"
    inventory.write_text("[state_machines]\n" + "".join(
        f"{name} ansible_host={host} ansible_connection=local ansible_python_interpreter={sys.executable}\n"
        for name, host in zip(cluster.names, cluster.hosts))
        + ("" if tls else "\n[state_machines:vars]\nstateserver_tls=false\n"))
    proc, entries = run_recorded(jobdir, RECORDER, ["-i", str(inventory), str(REPO / "playbooks" / playbook), *args])
    tasks, touched = {}, set()
    for entry in entries:
        if entry["host"] == "localhost":
            tasks[entry["task"]] = entry["result"]
        else:
            touched.add(entry["host"])
    return proc.returncode, tasks, touched


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if "stateserver-secrets" in str(p))


def admin(cluster: Cluster, password: str) -> MongoClient:
    return MongoClient(cluster.addresses[0], directConnection=True, username="admin", password=password,
                       authSource="admin", serverSelectionTimeoutMS=5000)


def bootstrap(cluster: Cluster, password: str) -> None:
    """What the mongod role does on the bootstrap machine, through the localhost exception (auth is on)."""
    config = {"_id": cluster.set_name, "version": 1, "settings": {"electionTimeoutMillis": 1000,
                                                                  "heartbeatIntervalMillis": 200},
              "members": [{"_id": 0, "host": cluster.addresses[0], "tags": {"stateserver-machine": cluster.names[0]}}]}
    with cluster.direct(0) as c:
        c.admin.command("replSetInitiate", config)
        cluster.wait_for(lambda: c.admin.command("hello").get("isWritablePrimary"), 30, "sm1 to become primary")
        c.admin.command("createUser", "admin", pwd=password, roles=["root"])


def test_jobs_in_fresh_directories_reuse_the_first_jobs_secrets_or_stop(tmp_path, cluster_factory):
    keyfile = tmp_path / "job1" / "inventory" / "stateserver-secrets" / "keyfile"
    cluster = cluster_factory(size=3, start=0, extra_args=("--keyFile", str(keyfile)))

    # Nothing runs yet: a first deployment. --check says what it would generate and writes nothing: no secret, no
    # CA (TLS is on by default, so the plan connects without the CA it did not write).
    rc, tasks, touched = job(tmp_path / "job0", cluster, "ensure-ha.yml", "--check", tls=True)
    assert rc == 0, tasks
    assert tasks["Plan which machines keep, gain or lose a vote"]["first_deployment"] is True
    assert all("would be generated" in line for line in tasks["Say where each secret comes from"]["msg"][:3])
    certificates = tasks["Keep the deployment CA and a certificate for each state machine"]
    assert certificates["changed"] and certificates["ca"]["action"] == "issued", certificates
    assert {c["action"] for c in certificates["certificates"].values()} == {"issued"}
    assert files_under(tmp_path / "job0") == []

    # Job 1 makes the secrets (the module as ensure-ha.yml runs it), and the set is bootstrapped with them.
    secrets_dir = keyfile.parent
    made = run_tasks(tmp_path / "job1-run", [{SECRETS: {"secrets_dir": str(secrets_dir), "seeds": cluster.addresses},
                                              "no_log": True}])
    assert made.rc == 0 and made[0]["changed"] is True, made.stdout
    assert stat.S_IMODE(os.stat(secrets_dir).st_mode) == 0o700
    assert sorted(p.name for p in secrets_dir.iterdir()) == sorted(FILES)
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in secrets_dir.iterdir())
    stored = {FILES[p.name]: p.read_text().strip() for p in secrets_dir.iterdir()}
    before = {p.name: p.read_bytes() for p in secrets_dir.iterdir()}
    for i in range(3):
        cluster.sim.start(i)
    bootstrap(cluster, stored["mongod_admin_password"])
    with admin(cluster, stored["mongod_admin_password"]) as c:
        config = c.admin.command("replSetGetConfig")["config"]

    # Job 2: a fresh directory and no credential. It stops before the plan and before any host task. (A job with
    # the credential injected is test_awx_jobs.py's, through ansible-runner.)
    rc, tasks, touched = job(tmp_path / "job2", cluster, "ensure-ha.yml", "-e", "n=3")
    assert rc != 0
    msg = tasks["Stop when the secrets cannot be used"]["msg"]
    assert "already exists" in msg and cluster.addresses[0] in msg
    assert all(variable in msg for variable in FILES.values())
    assert "Plan which machines keep, gain or lose a vote" not in tasks and touched == set()
    assert files_under(tmp_path / "job2") == []

    # Outside AWX: stateserver_secrets_dir names the first deployment's directory, which is reused as it is; the
    # plan logs in with the generated admin password and reads the records.
    rc, tasks, touched = job(tmp_path / "job3", cluster, "ensure-ha.yml", "--check",
                             "-e", f"stateserver_secrets_dir={secrets_dir}")
    assert rc == 0, tasks
    assert tasks["Plan which machines keep, gain or lose a vote"]["first_deployment"] is False
    assert all("reused from " + str(secrets_dir) in line for line in tasks["Say where each secret comes from"]["msg"])
    assert files_under(tmp_path / "job3") == []

    # retire-machine.yml has the same guard (mongod_secrets_dir, the older name, pointing nowhere useful).
    rc, tasks, touched = job(tmp_path / "job4", cluster, "retire-machine.yml", "-e", "machine=sm1", "--check",
                             "-e", f"mongod_secrets_dir={tmp_path / 'job4' / 'elsewhere'}")
    assert rc != 0 and "already exists" in tasks["Stop when the secrets cannot be used"]["msg"] and touched == set()
    assert not (tmp_path / "job4" / "elsewhere").exists()

    # The set kept its config and its admin login; the first job's files are untouched.
    with admin(cluster, stored["mongod_admin_password"]) as c:
        assert c.admin.command("replSetGetConfig")["config"] == config
    assert {p.name: p.read_bytes() for p in secrets_dir.iterdir()} == before
