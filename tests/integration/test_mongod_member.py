"""mongod_member through ansible-playbook against replica-set processes started with --auth and a keyfile.

The members listen on loopback addresses of 127.20.0.0/16, so the module's loopback connection gets MongoDB's
localhost exception as it does on a state machine. Every assertion reads the set back through pymongo.
"""

from __future__ import annotations

import base64
import os
import subprocess

import pytest
from cluster import MACHINE_TAG
from mongosim import testing
from playbook import run_tasks
from pymongo import MongoClient
from pymongo.errors import OperationFailure

pytestmark = pytest.mark.timeout(480)

MEMBER = "stateserver.ha.mongod_member"
PASSWORD = "integration-admin-pw"
# Fast elections so that a step-down hands over quickly; the module does not depend on these values.
SETTINGS = {"electionTimeoutMillis": 1000, "heartbeatIntervalMillis": 200}


@pytest.fixture
def auth_cluster(tmp_path):
    """Three members with keyfile authentication and authorization on, started but not initiated, no users."""
    key = tmp_path / "keyfile"
    key.write_text(base64.b64encode(os.urandom(60)).decode())
    key.chmod(0o400)
    cluster = testing.Cluster(3, block="127.20", workdir=tmp_path / "members", key_file=str(key), auth=True,
                              spare=0)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def bootstrap(cluster, index=0, password=PASSWORD, **extra):
    member = cluster.members[index]
    return {MEMBER: {"state": "bootstrapped", "login_host": member.ip, "login_password": password,
                     "member_host": member.address, "machine": f"sm{index + 1}", "timeout": 60, **extra}}


def admin(cluster, index=0, password=PASSWORD) -> MongoClient:
    member = cluster.members[index]
    return MongoClient(member.ip, member.port, directConnection=True, username="admin", password=password,
                       authSource="admin", serverSelectionTimeoutMS=5000)


def hello(cluster, index) -> dict:
    return cluster.members[index].hello(2.0) or {}


def config_of(cluster, index=0) -> dict:
    with admin(cluster, index) as c:
        return c.admin.command("replSetGetConfig")["config"]


def test_bootstrap_check_then_real_then_rerun_changes_nothing(tmp_path, auth_cluster):
    run = run_tasks(tmp_path / "check", [bootstrap(auth_cluster)], check=True)
    assert run.rc == 0, run.stdout
    assert run[0]["changed"] and len(run[0]["actions"]) == 2, run[0]
    # Check mode sent nothing: still no set, and the localhost exception is still open (no user exists).
    assert not hello(auth_cluster, 0).get("setName")
    with pytest.raises(OperationFailure), admin(auth_cluster) as c:
        c.admin.command("connectionStatus")

    run = run_tasks(tmp_path / "real", [bootstrap(auth_cluster), bootstrap(auth_cluster)])
    assert run.rc == 0, run.stdout
    first, second = run[0], run[1]
    assert first["changed"] and first["member"]["primary"], first
    assert not second["changed"] and second["actions"] == [], second

    config = config_of(auth_cluster)
    assert config["_id"] == "stateserver"
    assert [(m["host"], m["tags"]) for m in config["members"]] == [
        (auth_cluster.members[0].address, {MACHINE_TAG: "sm1"})]
    assert hello(auth_cluster, 0)["isWritablePrimary"]
    with admin(auth_cluster) as c:
        roles = c.admin.command("usersInfo", "admin")["users"][0]["roles"]
    assert {"role": "root", "db": "admin"} in roles
    # The password never appears in what the module returned.
    assert PASSWORD not in run.stdout + str(run.results)


def test_a_wrong_password_after_bootstrap_fails_clearly_and_changes_nothing(tmp_path, auth_cluster):
    assert run_tasks(tmp_path / "real", [bootstrap(auth_cluster)]).rc == 0
    before = config_of(auth_cluster)
    run = run_tasks(tmp_path / "wrong", [bootstrap(auth_cluster, password="not-the-password")])
    assert run[0].get("failed"), run[0]
    assert "not the deployed one" in run[0]["msg"]
    assert config_of(auth_cluster) == before
    with admin(auth_cluster) as c:
        assert [u["user"] for u in c.admin.command("usersInfo")["users"]] == ["admin"]


def test_bootstrap_refuses_bad_input_before_connecting(tmp_path, auth_cluster):
    run = run_tasks(tmp_path / "bad", [bootstrap(auth_cluster, member_host="127.20.0.1"),
                                       bootstrap(auth_cluster, machine=" "),
                                       {MEMBER: {"state": "bootstrapped", "member_host": "10.0.0.1:37017",
                                                 "machine": "sm1"}}])
    assert "member_host must be HOST:PORT" in run[0]["msg"]
    assert "machine must name" in run[1]["msg"]
    assert "login_password" in run[2]["msg"]
    assert all(r.get("failed") for r in run.results)
    assert not hello(auth_cluster, 0).get("setName")


def grow_to_three(cluster) -> None:
    """Add members 2 and 3 as voters, one reconfig at a time, as peergroup would."""
    for count in (2, 3):
        def reconfig(count=count):
            with admin(cluster) as c:
                config = c.admin.command("replSetGetConfig")["config"]
                config["version"] += 1
                config["settings"] = {**config.get("settings", {}), **SETTINGS}
                config["members"] = config["members"][:1] + [
                    {"_id": i, "host": cluster.members[i].address, "tags": {MACHINE_TAG: f"sm{i + 1}"}}
                    for i in range(1, count)]
                c.admin.command("replSetReconfig", config)
            return True
        cluster.wait_for(reconfig, 60, interval=0.5, what=f"a reconfig to {count} members")
    cluster.wait_for(lambda: all(hello(cluster, i).get("secondary") for i in (1, 2)), 60, interval=0.2,
                     what="two secondaries")


def test_step_down_hands_over_then_changes_nothing_and_ready_waits(tmp_path, auth_cluster):
    assert run_tasks(tmp_path / "boot", [bootstrap(auth_cluster)]).rc == 0
    grow_to_three(auth_cluster)
    primary = auth_cluster.members[0]
    step = {MEMBER: {"state": "stepped_down", "login_host": primary.ip, "login_password": PASSWORD, "timeout": 60}}
    ready = {MEMBER: {"state": "ready", "login_host": primary.ip, "timeout": 60}}

    run = run_tasks(tmp_path / "check", [step, ready], check=True)
    assert run.rc == 0, run.stdout
    assert run[0]["changed"] and run[0]["actions"], run[0]
    assert run[1]["member"]["primary"] and not run[1]["changed"]
    assert hello(auth_cluster, 0)["isWritablePrimary"]

    run = run_tasks(tmp_path / "real", [step, step, ready])
    assert run.rc == 0, run.stdout
    assert run[0]["changed"] and not run[0]["member"]["primary"], run[0]
    assert not run[1]["changed"] and run[1]["actions"] == []
    assert run[2]["member"]["secondary"] and not run[2]["changed"]
    new = auth_cluster.wait_for_primary(60, exclude=[0])
    assert new.index in (1, 2)


def test_the_only_voter_is_not_stepped_down(tmp_path, auth_cluster):
    assert run_tasks(tmp_path / "boot", [bootstrap(auth_cluster)]).rc == 0
    run = run_tasks(tmp_path / "step", [{MEMBER: {"state": "stepped_down", "login_host": auth_cluster.members[0].ip,
                                                  "login_password": PASSWORD}}])
    assert run.rc == 0 and not run[0]["changed"] and "only voter" in run[0]["msg"]
    assert hello(auth_cluster, 0)["isWritablePrimary"]


def test_started_waits_for_a_member_that_comes_up_and_times_out_on_one_that_does_not(tmp_path, auth_cluster):
    auth_cluster.kill(2)
    run = run_tasks(tmp_path / "wait", [{MEMBER: {"state": "started", "login_host": auth_cluster.members[1].ip}},
                                        {MEMBER: {"state": "started", "login_host": auth_cluster.members[2].ip,
                                                  "timeout": 1.5}}])
    assert not run[0].get("failed") and run[0]["member"]["answering"] and not run[0]["member"]["initiated"]
    assert run[1].get("failed") and "timed out after 1.5s waiting for the member to answer" in run[1]["msg"]


def test_without_pymongo_the_module_says_what_to_install(tmp_path, auth_cluster):
    python = "/usr/bin/python3"
    has_pymongo = os.path.exists(python) and subprocess.run(
        [python, "-c", "import pymongo"], check=False, capture_output=True).returncode == 0
    if not os.path.exists(python) or has_pymongo:
        pytest.skip("needs a Python without pymongo")
    run = run_tasks(tmp_path / "nolib", [{MEMBER: {"state": "ready", "login_host": auth_cluster.members[0].ip},
                                          "vars": {"ansible_python_interpreter": python}}])
    assert run[0].get("failed") and "pymongo" in run[0]["msg"]
