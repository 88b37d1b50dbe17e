"""TLS from the deployment's certificates to a running set: the files deployment_certificates keeps on the
controller, turned into what the mongod role writes on a host (its mongod.conf template and its one-PEM expression,
rendered by Ansible), served by simulator members, and used by the role's own client and by the playbooks.

The first member also binds 127.0.0.1 (on a free port), as a state machine does, so mongod_member reaches it there
over TLS with the localhost exception and checks the certificate's 127.0.0.1 name. Nothing is installed on this
machine: the members are processes of this test, the playbook a read-only status run with local connections.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cluster import MACHINE_TAG
from mongosim import testing
from playbook import REPO, ansible_env, run_tasks
from pymongo import MongoClient
from pymongo.errors import PyMongoError
from test_retire_playbooks import RECORDER

pytestmark = pytest.mark.timeout(480)

CERTS = "stateserver.ha.deployment_certificates"
SECRETS = "stateserver.ha.deployment_secrets"
MEMBER = "stateserver.ha.mongod_member"
PASSWORD = "tls-integration-admin-pw"
TEMPLATE = REPO / "roles" / "mongod" / "templates" / "mongod.conf.j2"
# The role's own derived variables (file paths, the PEM's content), given to each rendering task as the role has them.
ROLE_VARS = yaml.safe_load((REPO / "roles" / "mongod" / "vars" / "main.yml").read_text())
BASE_VARS = {"mongod_bind_address": "192.0.2.13", "mongod_bind_extra": [], "mongod_port": 37017,
             "mongod_dbpath": "/d", "mongod_logpath": "/l", "mongod_keyfile_path": "/k", "mongod_tls_dir": "/t",
             "mongod_install_method": "simulator", "template_path": str(TEMPLATE)}


def render_conf(tmp_path: Path, **role_vars) -> dict:
    run = run_tasks(tmp_path, [
        {"ansible.builtin.debug": {"msg": "{{ lookup('ansible.builtin.template', template_path) }}"},
         "vars": {**ROLE_VARS, **BASE_VARS, **role_vars}},
    ])
    assert run.rc == 0, run.stdout
    return yaml.safe_load(run[0]["msg"])


def test_mongod_conf_requires_tls_with_the_role_files_unless_tls_is_off(tmp_path):
    conf = render_conf(tmp_path / "on", mongod_tls=True)
    assert conf["net"]["tls"] == {"mode": "requireTLS", "certificateKeyFile": "/t/mongod.pem", "CAFile": "/t/ca.crt",
                                  "allowConnectionsWithoutCertificates": True}
    # Members still authenticate each other with the keyfile.
    assert conf["security"] == {"keyFile": "/k", "authorization": "enabled"}
    assert "tls" not in render_conf(tmp_path / "off", mongod_tls=False)["net"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def host_files(tmp_path: Path, index: int, certs: dict, ca_file: str) -> tuple[Path, dict]:
    """Render member `index`'s mongod.conf and TLS files as the role's tasks would, into its own directory."""
    name = f"sm{index + 1}"
    tls_dir = tmp_path / "hosts" / name / "tls"
    tls_dir.mkdir(parents=True)
    role_vars = {**BASE_VARS, "mongod_tls": True, "mongod_tls_dir": str(tls_dir), "mongod_tls_ca_file": ca_file,
                 "mongod_tls_certificate_file": certs[name]["certificate"],
                 "mongod_tls_key_file": certs[name]["key"]}
    return tls_dir, role_vars


def test_a_set_served_with_the_deployment_certificates_takes_tls_clients_only(tmp_path):
    key = tmp_path / "keyfile"
    keyfile = base64.b64encode(os.urandom(60)).decode()
    key.write_text(keyfile)
    key.chmod(0o400)
    port = free_port()
    cluster = testing.Cluster(3, block="127.20", port=port, workdir=tmp_path / "members", key_file=str(key),
                              auth=True, spare=0)
    secrets = tmp_path / "inventory" / "stateserver-secrets"
    try:
        # The deployment's CA and certificates, as ensure-ha.yml's first play makes them (nothing answers yet).
        machines = [{"name": f"sm{m.index + 1}", "mongo_address": m.address, "api_address": f"{m.ip}:17070"}
                    for m in cluster.members]
        run = run_tasks(tmp_path / "certs", [{CERTS: {"secrets_dir": str(secrets), "machines": machines,
                                                      "seeds": cluster.addresses, "tls": True,
                                                      "tls_allow_invalid_certificates": True,
                                                      "server_selection_timeout": 2}}])
        assert run.rc == 0 and run[0]["ca"]["action"] == "issued", run.stdout
        ca_file, certs = run[0]["ca"]["certificate"], run[0]["certificates"]

        # Each member's mongod.conf and TLS files, rendered by Ansible from the role's template and variables.
        confs = {}
        for m in cluster.members:
            tls_dir, role_vars = host_files(tmp_path, m.index, certs, ca_file)
            role_vars.update(mongod_bind_address=m.ip, mongod_port=port, mongod_keyfile_path=str(key),
                             mongod_dbpath=str(m.dbpath), mongod_logpath=str(m.logpath))
            rendered = run_tasks(tmp_path / f"render{m.index}", [
                {"ansible.builtin.debug": {"msg": {
                    "conf": "{{ lookup('ansible.builtin.template', template_path) }}",
                    "ca": "{{ __mongod_tls_ca_content }}", "pem": "{{ __mongod_tls_pem_content }}"}},
                 "vars": {**ROLE_VARS, **role_vars}},
            ])
            assert rendered.rc == 0, rendered.stdout
            out = rendered[0]["msg"]
            (tls_dir / "ca.crt").write_text(out["ca"])
            (tls_dir / "mongod.pem").write_text(out["pem"])
            conf = tmp_path / "hosts" / f"sm{m.index + 1}" / "mongod.conf"
            conf.write_text(out["conf"])
            confs[m.index] = str(conf)
        pem = (tmp_path / "hosts" / "sm1" / "tls" / "mongod.pem").read_text()
        assert pem.startswith("-----BEGIN CERTIFICATE-----") and "-----BEGIN PRIVATE KEY-----" in pem

        # The simulator reads the rendered file; member 0 takes its bindIp from it (its address and 127.0.0.1).
        command_line = cluster.command_line

        def with_config(m):
            args = command_line(m)
            if m.index == 0:
                at = args.index("--bind_ip")
                del args[at:at + 2]
            return [*args, "--config", confs[m.index]]

        cluster.command_line = with_config
        for holder in (cluster, *cluster.members):
            holder.client_options = {"tls": True, "tlsCAFile": ca_file}
        cluster.start()

        installed_ca = str(tmp_path / "hosts" / "sm1" / "tls" / "ca.crt")
        boot = {"state": "bootstrapped", "port": port, "member_host": cluster.members[0].address, "machine": "sm1",
                "login_password": PASSWORD, "timeout": 60, "tls": True, "tls_ca_file": installed_ca}
        run = run_tasks(tmp_path / "boot", [
            {MEMBER: {**boot, "tls": False, "tls_ca_file": None, "timeout": 3}},
            {MEMBER: boot},
            {MEMBER: boot},
            {MEMBER: {"state": "ready", "port": port, "tls": True, "tls_ca_file": installed_ca}},
            {MEMBER: {"state": "ready", "port": port, "tls": True}},
            {MEMBER: {"state": "ready", "port": port, "tls": True, "tls_ca_file": certs["sm2"]["certificate"]}},
        ])
        plain, first, again, ready, no_ca, wrong_ca = run.results
        # A plain connection to 127.0.0.1 is refused, so the member looks silent and nothing is sent.
        assert plain.get("failed") and not plain["member"]["answering"], plain
        assert first["changed"] and first["member"]["primary"], first
        assert not again["changed"], again
        assert ready["member"]["primary"] and not ready.get("failed"), ready
        assert no_ca.get("failed") and "tls_ca_file" in no_ca["msg"], no_ca
        assert wrong_ca.get("failed") and "does not verify" in wrong_ca["msg"], wrong_ca

        with MongoClient(cluster.members[0].ip, port, directConnection=True, tls=True, tlsCAFile=ca_file,
                         username="admin", password=PASSWORD, authSource="admin", serverSelectionTimeoutMS=5000) as c:
            config = c.admin.command("replSetGetConfig")["config"]
            config["version"] += 1
            config["members"] += [{"_id": i, "host": cluster.members[i].address,
                                   "tags": {MACHINE_TAG: f"sm{i + 1}"}} for i in (1, 2)]
            c.admin.command("replSetReconfig", config, force=False)
        # Secondaries only when the members reach each other over TLS with their own certificates.
        cluster.wait_for(lambda: all((cluster.members[i].hello() or {}).get("secondary") for i in (1, 2)), 60,
                         what="two TLS secondaries")

        # Plain clients and clients trusting another CA are refused.
        for options in ({}, {"tls": True, "tlsCAFile": certs["sm2"]["certificate"]}):
            with MongoClient(cluster.members[1].ip, port, directConnection=True, serverSelectionTimeoutMS=1500,
                             **options) as c, pytest.raises(PyMongoError):
                c.admin.command("hello")

        # A plan that trusts another CA hears no hello from any member, yet they all take its connections: that
        # is not a first deployment (it would name a bootstrap machine over a running set). It fails, changing nothing.
        with MongoClient(cluster.members[0].ip, port, directConnection=True, tls=True, tlsCAFile=ca_file,
                         username="admin", password=PASSWORD, serverSelectionTimeoutMS=5000) as c:
            # (The config version alone may still move: the set drops the new members' newlyAdded on its own.)
            members = [(m["host"], m.get("votes", 1)) for m in c.admin.command("replSetGetConfig")["config"]["members"]]
            run = run_tasks(tmp_path / "wrong-ca-plan", [
                {"stateserver.ha.ensure_availability": {
                    "n": 3, "pool": machines, "seeds": cluster.addresses, "tls": True, "login_user": "admin",
                    "login_password": PASSWORD, "tls_ca_file": certs["sm2"]["certificate"],
                    "server_selection_timeout": 2}}])
            plan = run[0]
            assert plan.get("failed") and "took a connection" in plan["msg"], plan
            assert not plan.get("first_deployment") and not plan.get("bootstrap"), plan
            after = [(m["host"], m.get("votes", 1)) for m in c.admin.command("replSetGetConfig")["config"]["members"]]
            assert after == members
            assert c.stateserver.machines.count_documents({}) == 0
        # Nor do the secrets take that silence for a first deployment: no new secret is made over the running set.
        fresh = tmp_path / "wrong-ca-secrets"
        run = run_tasks(tmp_path / "wrong-ca-secrets-run", [
            {SECRETS: {"secrets_dir": str(fresh), "seeds": cluster.addresses, "tls": True,
                       "tls_ca_file": certs["sm2"]["certificate"], "server_selection_timeout": 2}, "no_log": True}])
        assert run.results[0].get("failed") and "took a connection" in run.results[0]["msg"], run.results[0]
        assert not fresh.exists() or not any(fresh.iterdir())

        # Asked without TLS, the TLS set still counts as existing: no new secrets, no new CA over it.
        empty = tmp_path / "no-secrets"
        run = run_tasks(tmp_path / "plain-probe", [
            {SECRETS: {"secrets_dir": str(empty), "seeds": cluster.addresses, "server_selection_timeout": 2},
             "no_log": True},
            {CERTS: {"secrets_dir": str(empty), "machines": machines, "seeds": cluster.addresses,
                     "server_selection_timeout": 2}},
        ])
        for refused in run.results:
            assert refused.get("failed") and "already exists" in refused["msg"], refused
        assert not empty.exists()

        # A playbook with no TLS variable at all: TLS is on and verified with the deployment CA it finds.
        (secrets / "admin-password").write_text(PASSWORD + "\n")
        inventory = tmp_path / "inventory" / "hosts.ini"
        inventory.write_text("[state_machines]\n" + "".join(
            f"sm{m.index + 1} ansible_host={m.ip} mongod_port={port} ansible_connection=local "
            f"ansible_python_interpreter={sys.executable}\n" for m in cluster.members))
        plugins = tmp_path / "callbacks"
        plugins.mkdir()
        (plugins / "record.py").write_text(RECORDER)
        results = tmp_path / "results.jsonl"
        env = ansible_env(tmp_path / "ansible-home")
        env.update(ANSIBLE_CALLBACK_PLUGINS=str(plugins), ANSIBLE_CALLBACKS_ENABLED="record",
                   RECORD_RESULTS=str(results))
        proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory),
                               str(REPO / "playbooks" / "status.yml")], check=False, capture_output=True, text=True,
                              env=env, timeout=240, cwd=str(tmp_path))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        tasks = {e["task"]: e["result"] for e in map(json.loads, results.read_text().splitlines())}
        status = tasks["Read the replica set, the machine records and the primary"]
        assert not status.get("failed"), status
        assert sorted(row["state"] for row in status["rows"]) == ["PRIMARY", "SECONDARY", "SECONDARY"], status
    finally:
        cluster.stop()
