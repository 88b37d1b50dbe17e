"""IPv6 state machines end to end (issue 12): addresses are built as [v6]:port, never v6:port.

The pool tasks (playbooks/internal/pool.yml) run through ansible-playbook with an inventory holding IPv6 hosts, and
the addresses they build are the ones the modules accept; the modules converge a set whose members listen on ::1.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from cluster import MACHINE_TAG, SET_NAME, SETTINGS
from playbook import REPO, ansible_env, run_tasks
from pymongo import MongoClient
from pymongo.errors import OperationFailure, PyMongoError
from test_modules import EA, PG

pytestmark = pytest.mark.timeout(300)

INVENTORY = """\
[state_machines]
sm1 ansible_host=::1
sm2 ansible_host=2001:db8::12
sm3 ansible_host=192.0.2.13 mongod_bind_address=2001:db8::13
sm4 ansible_host=192.0.2.14
sm5 ansible_host=sm5.example.test

[state_machines:vars]
ansible_connection=local
mongod_port=37018
"""


def run_pool_tasks(workdir: Path) -> dict:
    """Run pool.yml as ensure-ha.yml and status.yml do (vars.yml, then the pool tasks); return what it built."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "hosts.ini").write_text(INVENTORY)
    out = workdir / "pool.json"
    playbook = [{
        "name": "Build the pool",
        "hosts": "localhost",
        "connection": "local",
        "gather_facts": False,
        "vars_files": [str(REPO / "playbooks" / "internal" / "vars.yml")],
        "vars": {"ansible_python_interpreter": sys.executable},
        "tasks": [
            {"name": "Describe the pool", "ansible.builtin.import_tasks": str(REPO / "playbooks" / "internal" / "pool.yml")},
            {"name": "Write it down", "ansible.builtin.copy": {
                "content": "{{ {'pool': __ha_pool, 'plan_pool': __ha_plan_pool, 'seeds': __ha_seeds} | to_json }}",
                "dest": str(out), "mode": "0600"}},
        ],
    }]
    (workdir / "pool.yml").write_text(json.dumps(playbook))
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(workdir / "hosts.ini"),
                           str(workdir / "pool.yml")], check=False, env=ansible_env(workdir / "ansible-home"),
                          capture_output=True, text=True, timeout=240, cwd=str(workdir))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(out.read_text())


def test_the_pool_tasks_bracket_ipv6_hosts(tmp_path):
    built = run_pool_tasks(tmp_path)
    assert [(e["name"], e["mongo_address"], e["api_address"]) for e in built["pool"]] == [
        ("sm1", "[::1]:37018", "[::1]:17070"),
        ("sm2", "[2001:db8::12]:37018", "[2001:db8::12]:17070"),
        ("sm3", "[2001:db8::13]:37018", "[2001:db8::13]:17070"),
        ("sm4", "192.0.2.14:37018", "192.0.2.14:17070"),
        ("sm5", "sm5.example.test:37018", "sm5.example.test:17070"),
    ]
    assert built["seeds"] == [e["mongo_address"] for e in built["pool"]]
    assert all(e["reachable"] is True for e in built["plan_pool"])

    # What the pool tasks build is what the modules' one validation layer accepts, unchanged.
    sys.path.insert(0, str(REPO / "build" / "collections"))
    from ansible_collections.stateserver.ha.plugins.module_utils._records import parse_pool

    hosts, problems = parse_pool(built["plan_pool"], 37018)
    assert problems == []
    assert [(h.mongo_address, h.api_address) for h in hosts] == [
        (e["mongo_address"], e["api_address"]) for e in built["pool"]]


def free_port() -> int:
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", 0))
        return s.getsockname()[1]


class V6Set:
    """Members of one replica set on ::1, one port each (the cluster helpers give each member its own IPv4 address;
    ::1 is one address). Processes are stopped by PID."""

    def __init__(self, workdir: Path, size: int) -> None:
        from mongosim import testing

        self.ports = [free_port() for name in range(size)]
        self.addresses = [f"[::1]:{port}" for port in self.ports]
        self.names = [f"sm{i + 1}" for i in range(size)]
        self.procs = []
        try:
            for i, port in enumerate(self.ports):
                dbpath = workdir / f"node{i}"
                dbpath.mkdir(parents=True)
                self.procs.append(subprocess.Popen(
                    [testing.server_binary(), "--replSet", SET_NAME, "--port", str(port), "--bind_ip", "::1",
                     "--dbpath", str(dbpath), "--logpath", str(dbpath / "log")],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    start_new_session=True, env=dict(os.environ, MONGOSIM_EXIT_WITH_PID=str(os.getpid()))))
            for address in self.addresses:
                self.wait_for(lambda a=address: self.direct(a).admin.command("hello"), 30, f"{address} to answer")
        except BaseException:
            self.stop()
            raise

    def direct(self, address: str) -> MongoClient:
        return MongoClient(address, directConnection=True, serverSelectionTimeoutMS=2000)

    def wait_for(self, predicate, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                found = predicate()
            except PyMongoError:
                found = None
            if found:
                return found
            time.sleep(0.2)
        raise TimeoutError(f"timed out waiting for {what}")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def test_the_modules_converge_a_set_on_ipv6_loopback(tmp_path):
    members = V6Set(tmp_path / "set", 3)
    try:
        config = {"_id": SET_NAME, "version": 1, "settings": dict(SETTINGS),
                  "members": [{"_id": 0, "host": members.addresses[0], "tags": {MACHINE_TAG: "sm1"}}]}
        try:
            with members.direct(members.addresses[0]) as c:
                c.admin.command("replSetInitiate", config)
        except OperationFailure as exc:
            if exc.code == 93 and "maps to this node" in str(exc):
                pytest.skip(f"the simulator does not recognise itself as {members.addresses[0]} (bracketed IPv6 "
                            f"member hosts): {exc}")
            raise
        members.wait_for(lambda: members.direct(members.addresses[0]).admin.command("hello").get("isWritablePrimary"),
                         30, "sm1 to become primary")
        conn = {"seeds": members.addresses[:1], "server_selection_timeout": 10}
        pool = [{"name": name, "mongo_address": address} for name, address in zip(members.names, members.addresses)]
        run = run_tasks(tmp_path / "converge", [
            {EA: {"n": 3, "pool": pool, "down_after": 60, **conn}},
            {PG: {"timeout": 120, **conn}},
            {PG: {"timeout": 120, "seeds": ["::1"], "port": members.ports[1]}},
        ])
        ensure, first, again = run.results
        assert ensure.get("failed") is not True and ensure["added"] == ["sm2", "sm3"], ensure
        assert first.get("failed") is not True and first["converged"] is True, first
        assert again.get("failed") is not True and again["changed"] is False, again
        with MongoClient(members.addresses, replicaSet=SET_NAME, serverSelectionTimeoutMS=10000) as c:
            config = c.admin.command("replSetGetConfig")["config"]
            records = list(c.stateserver.machines.find({}, {"created": 0}).sort("_id", 1))
        assert [(m["host"], m["votes"], m["tags"][MACHINE_TAG]) for m in config["members"]] == [
            (address, 1, name) for name, address in zip(members.names, members.addresses)]
        assert [r["mongo_address"] for r in records] == members.addresses
    finally:
        members.stop()


@pytest.mark.parametrize("bind, extra, ipv6", [("::1", [], True), ("192.0.2.13", ["2001:db8::13"], True),
                                               ("192.0.2.13", [], False)])
def test_mongod_conf_turns_ipv6_on_exactly_when_it_binds_an_ipv6_address(tmp_path, bind, extra, ipv6):
    template = REPO / "roles" / "mongod" / "templates" / "mongod.conf.j2"
    run = run_tasks(tmp_path, [{
        "ansible.builtin.debug": {"msg": "{{ lookup('ansible.builtin.template', template_path) }}"},
        "vars": {"mongod_bind_address": bind, "mongod_bind_extra": extra, "mongod_port": 37017, "mongod_dbpath": "/d",
                 "mongod_logpath": "/l", "__mongod_replset_name": SET_NAME, "mongod_keyfile_path": "/k", "mongod_tls": False,
                 "template_path": str(template)},
    }])
    conf = yaml.safe_load(run[0]["msg"])
    assert conf["net"]["bindIp"].split(",")[0] == bind
    assert conf["net"].get("ipv6", False) is ipv6
