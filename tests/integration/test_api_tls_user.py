"""The API server as the roles deploy it, on one TLS simulator member: HTTPS with the deployment's certificate,
its own least-privileged MongoDB user, and the secret that user's password is.

The CA and the machine's certificate come from stateserver.ha.deployment_certificates; the API server's api.json is
the api_server role's template rendered by Ansible with the role's defaults; the user is made by
stateserver.ha.mongod_user through the admin login, and its password by stateserver.ha.deployment_secrets, for an
existing set that had no such user (a new secret, not a lost one). One member: every privilege check is the
primary's, so more members would only cost time.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from mongosim import testing
from mongosim.certs import make_ca
from playbook import REPO, run_tasks
from pymongo import MongoClient
from pymongo.errors import OperationFailure

pytestmark = pytest.mark.timeout(300)

ADMIN_PASSWORD = "api-tls-admin-password"
TOKEN = "api-tls-bearer-token-0123456789"
ROLE = REPO / "roles" / "api_server"
TEMPLATE = ROLE / "templates" / "api.json.j2"
API_ROLES = [{"role": "readWrite", "db": "stateserver"}, {"role": "clusterMonitor", "db": "admin"}]
UNAUTHORIZED = 13  # mongod's Unauthorized


def free_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def test_api_server_serves_https_with_the_deployment_ca_and_logs_in_as_its_own_user(tmp_path):
    key = tmp_path / "keyfile"
    key.write_text(base64.b64encode(os.urandom(60)).decode())
    key.chmod(0o400)
    cluster = testing.Cluster(1, block="127.21", port=free_port("127.0.0.1"), workdir=tmp_path / "members",
                              key_file=str(key), auth=True, spare=0)
    member = cluster.members[0]
    api_port = free_port(member.ip)
    secrets = tmp_path / "secrets"
    api = None
    try:
        # The deployment CA and the machine's certificate, kept on the controller as ensure-ha.yml keeps them.
        machines = [{"name": "sm1", "mongo_address": member.address, "api_address": f"{member.ip}:{api_port}"}]
        run = run_tasks(tmp_path / "certs", [{"stateserver.ha.deployment_certificates": {
            "secrets_dir": str(secrets), "machines": machines, "seeds": [member.address], "tls": True,
            "tls_allow_invalid_certificates": True, "server_selection_timeout": 1}}])
        assert run.rc == 0, run.stdout
        ca_file, cert = run[0]["ca"]["certificate"], run[0]["certificates"]["sm1"]
        pem = tmp_path / "mongod.pem"
        pem.write_text(Path(cert["certificate"]).read_text() + Path(cert["key"]).read_text())
        pem.chmod(0o400)
        cluster.extra_args = ["--tlsMode", "requireTLS", "--tlsCertificateKeyFile", str(pem), "--tlsCAFile", ca_file,
                              "--tlsAllowConnectionsWithoutCertificates"]
        for holder in (cluster, member):
            holder.client_options = {"tls": True, "tlsCAFile": ca_file}
        cluster.start()
        # An existing deployment from before the API server had its own user: the set and its admin only.
        with MongoClient(member.ip, member.port, directConnection=True, tls=True, tlsCAFile=ca_file) as c:
            c.admin.command("replSetInitiate", cluster.config_document())
            cluster.wait_for_primary(30)
            c.admin.command("createUser", "admin", pwd=ADMIN_PASSWORD, roles=["root"])

        login = {"seeds": [member.address], "login_user": "admin", "login_password": ADMIN_PASSWORD, "tls": True,
                 "tls_ca_file": ca_file, "server_selection_timeout": 5}
        probe = {key: value for key, value in login.items() if not key.startswith("login")}
        user = {**login, "name": "stateserver-api", "roles": API_ROLES,
                "password": f"{{{{ lookup('ansible.builtin.file', '{secrets}/api-mongo-password') }}}}"}
        render_vars = {**yaml.safe_load((ROLE / "defaults" / "main.yml").read_text()),
                       **yaml.safe_load((ROLE / "vars" / "main.yml").read_text()),
                       "ansible_host": member.ip, "api_server_port": api_port, "api_server_config_dir": str(tmp_path),
                       "api_server_mongo_seeds": [member.address], "api_server_tls_ca_src": ca_file,
                       "api_server_tls_certificate_src": cert["certificate"], "api_server_tls_key_src": cert["key"]}
        run = run_tasks(tmp_path / "user", [
            # The API server's password is the one secret this set never had: made, with the admin's given.
            {"stateserver.ha.deployment_secrets": {**probe, "secrets_dir": str(secrets),
                                                   "admin_password": ADMIN_PASSWORD, "api_token": TOKEN,
                                                   "keyfile": key.read_text()}},
            {"stateserver.ha.mongod_user": user, "check_mode": True},
            {"stateserver.ha.mongod_user": user},
            {"stateserver.ha.mongod_user": user},
            # Once the user exists, a run without its password (an AWX job's fresh directory) stops: never a new one.
            {"stateserver.ha.deployment_secrets": {**probe, "secrets_dir": str(tmp_path / "fresh"),
                                                   "admin_password": ADMIN_PASSWORD, "api_token": TOKEN,
                                                   "keyfile": key.read_text()}},
            # api.json and the TLS files' content as the api_server role writes them.
            {"ansible.builtin.debug": {"msg": {
                "config": f"{{{{ lookup('ansible.builtin.template', '{TEMPLATE}') }}}}",
                "ca": "{{ __api_server_tls_ca_content }}", "cert": "{{ __api_server_tls_certificate_content }}",
                "key": "{{ __api_server_tls_key_content }}"}}, "vars": render_vars},
        ])
        made, check, create, again, fresh, rendered = run.results
        assert made["secrets"]["api_mongo_password"]["source"] == "generated" and not made.get("failed"), made
        assert "New secrets for the existing replica set" in made["msg"], made["msg"]
        api_password = (secrets / "api-mongo-password").read_text().strip()
        assert check["changed"] and check["actions"] == ["create"], check
        assert create["changed"] and create["actions"] == ["create"], create
        assert not again["changed"] and again["actions"] == [], again
        assert fresh.get("failed") and fresh["missing"] == ["api_mongo_password"], fresh
        assert "api_server_mongo_password" in fresh["msg"]
        assert api_password not in run.stdout

        config = json.loads(rendered["msg"]["config"])
        assert config["mongo_user"] == "stateserver-api" and config["tls"] is True
        for name in ("ca", "cert", "key"):
            path = Path(config[{"ca": "tls_ca_file", "cert": "tls_cert_file", "key": "tls_key_file"}[name]])
            path.parent.mkdir(exist_ok=True)
            path.write_text(rendered["msg"][name])
            path.chmod(0o400 if name == "key" else 0o444)
        assert config["mongo_tls_ca_file"] == config["tls_ca_file"]
        (tmp_path / "token").write_text(TOKEN + "\n")
        (tmp_path / "mongo-password").write_text(api_password + "\n")
        (tmp_path / "api.json").write_text(rendered["msg"]["config"])

        api = subprocess.Popen([str(Path(sys.executable).parent / "stateserver-api"), "--config",
                                str(tmp_path / "api.json")], stdout=(tmp_path / "api.log").open("ab"),
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        https, plain = f"https://{member.ip}:{api_port}", f"http://{member.ip}:{api_port}"
        deployment_ca = ssl.create_default_context(cafile=ca_file)

        def live() -> bool:
            assert api.poll() is None, (tmp_path / "api.log").read_text()
            try:
                return httpx.get(f"{https}/v1/live", verify=deployment_ca, timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        cluster.wait_for(live, 30, what="the API server to answer over HTTPS")
        auth = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=https, verify=deployment_ca, headers=auth, timeout=10) as client:
            # Its own user reaches the primary over TLS: status (clusterMonitor) and writes (readWrite) work.
            assert client.get("/v1/ready").status_code == 200
            status = client.get("/v1/ha-status")
            assert status.status_code == 200 and status.json()["replica_set"] == cluster.set_name, status.text
            put = client.put("/v1/kv/colour", json={"value": "red", "version": 0, "request_id": "tls-user-1"})
            assert put.status_code == 200, put.text
            assert client.get("/v1/kv/colour").json()["value"] == "red"
        # Plain HTTP is refused (the TLS handshake fails; no HTTP answer), and so is a client trusting another CA.
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{plain}/v1/live", timeout=3)
        other_ca = make_ca(tmp_path / "other-ca")
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{https}/v1/live", verify=ssl.create_default_context(cafile=other_ca.path), timeout=3)

        # What the API server's user may do, asked as it: its database, the set's status, nothing more.
        with MongoClient(member.ip, member.port, directConnection=True, tls=True, tlsCAFile=ca_file,
                         username="stateserver-api", password=api_password, authSource="admin") as c:
            c.stateserver.probe.insert_one({"_id": "written"})
            assert c.stateserver.kv.find_one({"_id": "colour"}) is not None
            assert c.admin.command("replSetGetStatus")["set"] == cluster.set_name
            config_doc = c.admin.command("replSetGetConfig")["config"]
            refused = {
                "replSetReconfig": lambda: c.admin.command(
                    "replSetReconfig", {**config_doc, "version": config_doc["version"] + 1}),
                "read another database": lambda: c.other.things.find_one({}),
                "write another database": lambda: c.other.things.insert_one({}),
                "read the users": lambda: c.admin["system.users"].find_one({}),
                "create a user": lambda: c.admin.command("createUser", "intruder", pwd="intruder-pw", roles=["root"]),
            }
            for what, attempt in refused.items():
                with pytest.raises(OperationFailure) as error:
                    attempt()
                assert error.value.code == UNAUTHORIZED, what
    finally:
        if api is not None and api.poll() is None:
            api.terminate()
            api.wait(10)
        cluster.stop()
