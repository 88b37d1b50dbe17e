"""x509 member authentication from the mongod role (mongod_cluster_auth_mode): what its template writes, what its
preflight refuses, and a set of simulator members started from the rendered mongod.conf files with the deployment's
own machine certificates, which must be enough for mongod's membership rule (the same O for every machine), while
the API servers' certificates of the same CA must not let anyone in as a member.
Nothing is installed on this machine: the members are processes of this test."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mongosim import testing
from playbook import ansible_env, run_tasks
from pymongo import MongoClient
from pymongo.errors import OperationFailure, PyMongoError
from test_mongod_tls import BASE_VARS, ROLE_VARS, free_port, host_files

pytestmark = pytest.mark.timeout(300)

CERTS = "stateserver.ha.deployment_certificates"
PASSWORD = "x509-integration-admin-pw"


MODES = ("keyFile", "sendKeyFile", "sendX509", "x509")


def render_confs(workdir: Path, per_conf: list[dict]) -> list[dict]:
    """The role's mongod.conf rendered by Ansible once per variable set, in one run."""
    run = run_tasks(workdir, [
        {"ansible.builtin.debug": {"msg": "{{ lookup('ansible.builtin.template', template_path) }}"},
         "vars": {**ROLE_VARS, **BASE_VARS, "mongod_tls": True, **role_vars}} for role_vars in per_conf])
    assert run.rc == 0, run.stdout
    return [yaml.safe_load(r["msg"]) for r in run.results]


def test_mongod_conf_names_the_cluster_auth_mode_only_when_it_is_not_keyfile(tmp_path):
    confs = dict(zip(MODES, render_confs(tmp_path, [{"mongod_cluster_auth_mode": m} for m in MODES]), strict=True))
    assert confs["keyFile"]["security"] == {"keyFile": "/k", "authorization": "enabled"}
    for mode in MODES[1:]:
        # The keyfile stays: the transition steps need it.
        assert confs[mode]["security"] == {"keyFile": "/k", "clusterAuthMode": mode, "authorization": "enabled"}


def run_preflight(tmp_path: Path, cases: dict[str, dict]) -> dict[str, str]:
    """Run the role's preflight once per case (its variables); returns "ok" or the failure message per case."""
    tls_files = {}
    for name in ("ca.crt", "sm1.crt", "sm1.key"):
        (tmp_path / name).write_text("placeholder\n")
        tls_files[name] = str(tmp_path / name)
    common = {"mongod_install_method": "simulator", "mongod_simulator_wheel_dir": "/w",
              "mongod_bind_address": "192.0.2.13", "mongod_bind_extra": [],
              "mongod_keyfile_content": base64.b64encode(os.urandom(30)).decode(),
              "mongod_admin_password": PASSWORD, "mongod_tls_ca_file": tls_files["ca.crt"],
              "mongod_tls_certificate_file": tls_files["sm1.crt"], "mongod_tls_key_file": tls_files["sm1.key"],
              "__mongod_config_path": str(tmp_path / "absent.conf")}
    out = tmp_path / "preflight.json"
    tasks = [{"ansible.builtin.set_fact": {"outcome": {}}}]
    for name, case_vars in cases.items():
        tasks.append({"block": [
            {"ansible.builtin.include_role": {"name": "stateserver.ha.mongod", "tasks_from": "preflight"},
             "vars": {**common, **case_vars}},
            {"ansible.builtin.set_fact": {"outcome": "{{ outcome | combine({case: 'ok'}) }}"}},
        ], "rescue": [
            {"ansible.builtin.set_fact": {"outcome": "{{ outcome | combine({case: ansible_failed_result.msg}) }}"}},
        ], "vars": {"case": name}})
    tasks.append({"ansible.builtin.copy": {"content": "{{ outcome | to_json }}", "dest": str(out), "mode": "0600"}})
    playbook = tmp_path / "preflight.yml"
    playbook.write_text(json.dumps([{"hosts": "localhost", "connection": "local", "gather_facts": False,
                                     "vars": {"ansible_python_interpreter": sys.executable}, "tasks": tasks}]))
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), str(playbook)], check=False,
                          capture_output=True, text=True, env=ansible_env(tmp_path / "ansible-home"), timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(out.read_text())


def test_preflight_refuses_certificates_without_tls_and_a_jump_of_more_than_one_step(tmp_path):
    # The files a machine has when the role last ran in keyFile and in sendX509.
    running = {"keyFile": tmp_path / "keyFile.conf", "sendX509": tmp_path / "sendX509.conf"}
    running["keyFile"].write_text("# Ansible managed\nsecurity:\n  keyFile: /k\n  authorization: enabled\n")
    running["sendX509"].write_text("# Ansible managed\nsecurity:\n  keyFile: /k\n  clusterAuthMode: sendX509\n")
    outcome = run_preflight(tmp_path, {
        "first deployment in x509": {"mongod_cluster_auth_mode": "x509"},
        "x509 without tls": {"mongod_cluster_auth_mode": "x509", "mongod_tls": False},
        "keyFile to x509": {"mongod_cluster_auth_mode": "x509", "__mongod_config_path": str(running["keyFile"])},
        "sendX509 to x509": {"mongod_cluster_auth_mode": "x509", "__mongod_config_path": str(running["sendX509"])},
        "sendX509 to keyFile": {"__mongod_config_path": str(running["sendX509"])},
    })
    assert outcome["first deployment in x509"] == "ok"
    assert outcome["sendX509 to x509"] == "ok"
    assert "which mongod allows only with TLS; mongod_tls is false" in outcome["x509 without tls"], outcome
    assert "runs with clusterAuthMode keyFile" in outcome["keyFile to x509"], outcome
    assert "one step apart" in outcome["keyFile to x509"], outcome
    assert "runs with clusterAuthMode sendX509" in outcome["sendX509 to keyFile"], outcome


def test_members_configured_by_the_role_for_x509_converge_with_the_deployment_certificates(tmp_path):
    key = tmp_path / "keyfile"
    key.write_text(base64.b64encode(os.urandom(60)).decode())
    key.chmod(0o400)
    port = free_port()
    cluster = testing.Cluster(3, block="127.20", port=port, workdir=tmp_path / "members", spare=0)
    try:
        machines = [{"name": f"sm{m.index + 1}", "mongo_address": m.address, "api_address": f"{m.ip}:17070"}
                    for m in cluster.members]
        run = run_tasks(tmp_path / "certs", [{CERTS: {"secrets_dir": str(tmp_path / "secrets"), "machines": machines,
                                                      "seeds": cluster.addresses, "tls": True,
                                                      "tls_allow_invalid_certificates": True,
                                                      "server_selection_timeout": 2}}])
        assert run.rc == 0 and run[0]["ca"]["action"] == "issued", run.stdout
        ca_file, certs = run[0]["ca"]["certificate"], run[0]["certificates"]
        assert {c["api"]["action"] for c in certs.values()} == {"issued"}
        member_pem = Path(certs["sm1"]["certificate"]).read_text() + Path(certs["sm1"]["key"]).read_text()

        # A deployment from before API certificates: the controller lacks them and the API server serves its
        # machine's. The next run issues them and leaves the members' alone; the run after it changes nothing.
        upgrade = {CERTS: {"secrets_dir": str(tmp_path / "secrets"), "machines": machines,
                           "held_api": {m["name"]: member_pem for m in machines[:1]}}}
        runs = run_tasks(tmp_path / "upgrade", [
            {"ansible.builtin.file": {"path": str(tmp_path / "secrets" / "certs" / "api"), "state": "absent"}},
            upgrade, upgrade])
        assert runs.rc == 0, runs.stdout
        for name, cert in runs[1]["certificates"].items():
            assert (cert["action"], cert["api"]["action"], cert["not_after"]) \
                == ("reused", "issued", certs[name]["not_after"])
        assert runs[1]["changed"] and not runs[2]["changed"]
        assert {c["api"]["action"] for c in runs[2]["certificates"].values()} == {"reused"}
        certs = runs[2]["certificates"]
        api_pem = tmp_path / "api-sm1.pem"
        api_pem.write_text(Path(certs["sm1"]["api"]["certificate"]).read_text()
                           + Path(certs["sm1"]["api"]["key"]).read_text())

        # Each member's mongod.conf and TLS files, rendered by Ansible from the role's template and variables.
        tls_dirs, tasks = {}, []
        for m in cluster.members:
            tls_dirs[m.index], role_vars = host_files(tmp_path, m.index, certs, ca_file)
            role_vars.update(mongod_bind_address=m.ip, mongod_port=port, mongod_keyfile_path=str(key),
                             mongod_dbpath=str(m.dbpath), mongod_logpath=str(m.logpath),
                             mongod_cluster_auth_mode="x509")
            tasks.append({"ansible.builtin.debug": {"msg": {
                "conf": "{{ lookup('ansible.builtin.template', template_path) }}",
                "ca": "{{ __mongod_tls_ca_content }}", "pem": "{{ __mongod_tls_pem_content }}"}},
                "vars": {**ROLE_VARS, **role_vars}})
        rendered = run_tasks(tmp_path / "render", tasks)
        assert rendered.rc == 0, rendered.stdout
        confs = {}
        for m in cluster.members:
            out, tls_dir = rendered[m.index]["msg"], tls_dirs[m.index]
            assert yaml.safe_load(out["conf"])["security"]["clusterAuthMode"] == "x509"
            (tls_dir / "ca.crt").write_text(out["ca"])
            (tls_dir / "mongod.pem").write_text(out["pem"])
            confs[m.index] = tmp_path / "hosts" / f"sm{m.index + 1}" / "mongod.conf"
            confs[m.index].write_text(out["conf"])

        command_line = cluster.command_line
        cluster.command_line = lambda m: [*command_line(m), "--config", str(confs[m.index])]
        for holder in (cluster, *cluster.members):
            holder.client_options = {"tls": True, "tlsCAFile": ca_file}
        cluster.start()
        # The localhost exception lets the initiate in; everything after it runs on x509 member logins, since
        # x509 mode refuses the keyfile the role still writes.
        cluster.initiate()
        first = cluster.members[0]
        with MongoClient(first.ip, port, directConnection=True, tls=True, tlsCAFile=ca_file,
                         serverSelectionTimeoutMS=5000) as anon:
            anon.admin.command("createUser", "admin", pwd=PASSWORD, roles=["root"])
        login = {"username": "admin", "password": PASSWORD, "authSource": "admin"}
        for holder in (cluster, *cluster.members):
            holder.client_options.update(login)
        primary = cluster.wait_for_primary(30)
        status = cluster.wait_for_states({m.index: "SECONDARY" for m in cluster.members if m is not primary}, 60)
        assert sorted(m["stateStr"] for m in status["members"]) == ["PRIMARY", "SECONDARY", "SECONDARY"]
        config = cluster.client().admin.command("replSetGetConfig")["config"]
        assert [m["host"] for m in config["members"]] == cluster.addresses
        with MongoClient(first.ip, port, directConnection=True, tls=True, tlsCAFile=ca_file, username="__system",
                         password=key.read_text(), authSource="local", authMechanism="SCRAM-SHA-256",
                         serverSelectionTimeoutMS=5000) as keyfile_login, pytest.raises(OperationFailure):
            keyfile_login.admin.command("connectionStatus")

        # The member certificate logs in as a member; the API server's certificate (OU=api-server, server use
        # only) does not, so the key the API server holds is no member credential.
        x509_login = {"directConnection": True, "tls": True, "tlsCAFile": ca_file, "authMechanism": "MONGODB-X509",
                      "serverSelectionTimeoutMS": 5000}
        with MongoClient(first.ip, port, tlsCertificateKeyFile=str(tls_dirs[0] / "mongod.pem"),
                         **x509_login) as member:
            users = member.admin.command("connectionStatus")["authInfo"]["authenticatedUsers"]
            assert users == [{"user": "__system", "db": "local"}]
        # Refused at the handshake or at the login, as by mongod: either way it is never __system (a short
        # selection timeout, since a refused handshake is retried until then).
        with MongoClient(first.ip, port, tlsCertificateKeyFile=str(api_pem),
                         **{**x509_login, "serverSelectionTimeoutMS": 1500}) as api, pytest.raises(PyMongoError):
            api.admin.command("connectionStatus")
    finally:
        cluster.stop()
