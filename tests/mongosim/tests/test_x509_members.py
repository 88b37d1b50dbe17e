"""x509 member authentication (``--clusterAuthMode`` / ``security.clusterAuthMode``): members log in to each other
with their certificates, a peer is a member when its subject's O/OU/DC equal this member's own, the keyFile is
refused in x509 mode only, and mongod's startup refusals."""
from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mongosim.certs import make_ca
from mongosim.testing import Cluster, using_real_mongod
from pymongo import MongoClient
from pymongo.errors import OperationFailure

MONGOSIM = str(Path(sys.executable).parent / "mongosim")
PW = "x509-test-password"

pytestmark = pytest.mark.skipif(using_real_mongod(), reason="the certificates are made for the simulator's addresses; "
                                "the same options work on mongod")


def x509_cluster(tmp_path: Path, n: int, mode: str = "x509", *, key_file: str | None = None,
                 organizations: dict[int, str] | None = None,
                 cluster_files: tuple[int, ...] = ()) -> tuple[Cluster, dict[str, str]]:
    """An unstarted requireTLS cluster in clusterAuthMode ``mode``; member i's certificate carries
    ``organizations[i]`` as O (default: the CA's usual one); members in ``cluster_files`` present a second
    certificate (--tlsClusterFile) to their peers. Returns the cluster and each member's mode by address, which
    the next (re)start of that member takes."""
    c = Cluster(n, block="127.10", workdir=tmp_path / "cluster", key_file=key_file)
    ca = make_ca(tmp_path / "pki")
    args = {}
    for m in c.members:
        org = (organizations or {}).get(m.index)
        cert = ca.issue(f"member{m.index}", [m.ip], **({"organization": org} if org else {}))
        args[m.address] = ["--tlsMode", "requireTLS", "--tlsCertificateKeyFile", cert, "--tlsCAFile", ca.path]
        if m.index in cluster_files:
            args[m.address] += ["--tlsClusterFile", ca.issue(f"member{m.index}-cluster", [m.ip])]
    modes = {m.address: mode for m in c.members}
    base = c.command_line
    c.command_line = lambda m: [*base(m), *args[m.address], "--clusterAuthMode", modes[m.address]]  # type: ignore[method-assign]
    c.client_options = {"tls": True, "tlsCAFile": ca.path,
                        "tlsCertificateKeyFile": ca.issue("client", ["127.0.0.1"], organization="mongosim clients")}
    for m in c.members:
        m.client_options = dict(c.client_options)
    return c, modes


def log_in_as_admin(c: Cluster) -> None:
    """Create the first user through the localhost exception; every helper client logs in with it from now on."""
    c.wait_for_primary(30).client().admin.command("createUser", "admin", pwd=PW, roles=["root"])
    for options in [c.client_options] + [m.client_options for m in c.members]:
        options.update(username="admin", password=PW, authSource="admin")


def test_x509_set_elects_and_replicates_and_a_certificate_of_another_organization_cannot_join(tmp_path):
    # No keyFile anywhere: every heartbeat, vote and oplog fetch rides on an x509 member login.
    c, _modes = x509_cluster(tmp_path, 4, organizations={3: "another organization"}, cluster_files=(2,))
    with c:
        c.start()
        c.initiate(members=[0, 1, 2])
        log_in_as_admin(c)
        p = c.wait_for_primary(30)
        c.wait_for_states({m.index: "SECONDARY" for m in c.members[:3] if m is not p}, 30)
        c.client().app.things.insert_one({"_id": 1})
        c.wait_for(lambda: all(m.client().app.things.find_one({"_id": 1}) for m in c.members[:3]), 20,
                   what="the write on the three members")

        admin = c.client().admin
        cfg = admin.command("replSetGetConfig")["config"]
        cfg["version"] += 1
        outsider = c.members[3]
        cfg["members"].append({"_id": outsider.index, "host": outsider.address, "votes": 0, "priority": 0})
        admin.command("replSetReconfig", cfg)
        # Over ten heartbeat intervals the outsider never becomes healthy, and never receives the config.
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            status = admin.command("replSetGetStatus")
            entry = next(x for x in status["members"] if x["name"] == outsider.address)
            assert entry["health"] != 1, entry
            assert entry["stateStr"] not in ("SECONDARY", "PRIMARY"), entry
            time.sleep(0.2)
        assert "setName" not in (outsider.hello() or {})
        assert admin.command("replSetGetStatus")["members"][0]["health"] == 1


def _key(tmp_path: Path) -> str:
    key = tmp_path / "keyfile"
    key.write_text(base64.b64encode(os.urandom(60)).decode())
    key.chmod(0o600)
    return str(key)


@pytest.mark.parametrize(("mode", "accepted"), [("keyFile", True), ("sendKeyFile", True), ("sendX509", True),
                                                ("x509", False)])
def test_keyfile_member_login_is_refused_only_in_x509_mode(tmp_path, mode, accepted):
    key = _key(tmp_path)
    c, _modes = x509_cluster(tmp_path, 1, mode, key_file=key)
    with c:
        c.start()
        m = c.members[0]
        client = MongoClient(m.ip, m.port, directConnection=True, serverSelectionTimeoutMS=5000,
                             username="__system", password=Path(key).read_text(), authSource="local",
                             authMechanism="SCRAM-SHA-256", **c.client_options)
        try:
            if accepted:
                users = client.admin.command("connectionStatus")["authInfo"]["authenticatedUsers"]
                assert users == [{"user": "__system", "db": "local"}]
            else:
                with pytest.raises(OperationFailure, match="Authentication failed"):
                    client.admin.command("connectionStatus")
        finally:
            client.close()


def test_set_parameter_moves_the_mode_one_step_forward_only(tmp_path):
    key = _key(tmp_path)
    c, _modes = x509_cluster(tmp_path, 1, "keyFile", key_file=key)
    with c:
        c.start()
        m = c.members[0]
        keyfile_login = {"username": "__system", "password": Path(key).read_text(), "authSource": "local",
                         "authMechanism": "SCRAM-SHA-256"}
        admin = m.client(**keyfile_login).admin
        with pytest.raises(OperationFailure, match="Illegal state transition for clusterAuthMode, change from "
                                                   "keyFile to x509"):
            admin.command("setParameter", 1, clusterAuthMode="x509")
        for step in ("sendKeyFile", "sendX509", "x509"):
            admin.command("setParameter", 1, clusterAuthMode=step)
            assert admin.command("getParameter", 1, clusterAuthMode=1)["clusterAuthMode"] == step
        with pytest.raises(OperationFailure, match="change from x509 to keyFile"):
            admin.command("setParameter", 1, clusterAuthMode="keyFile")
        # A new keyfile login is refused now; the open connection stays logged in.
        with pytest.raises(OperationFailure, match="Authentication failed"):
            m.client(**keyfile_login).admin.command("connectionStatus")

    plain = Cluster(1, block="127.10", workdir=tmp_path / "plain")
    with plain:
        plain.start()
        with pytest.raises(OperationFailure, match="need to enable SSL for outgoing connections"):
            plain.members[0].client().admin.command("setParameter", 1, clusterAuthMode="sendKeyFile")


def test_one_rolling_restart_per_step_moves_a_keyfile_set_to_x509(tmp_path):
    # The documented transition: keyFile -> sendKeyFile -> sendX509 -> x509, every member restarted once per step,
    # the primary last; after each restart the set has a primary and every member is healthy again.
    c, modes = x509_cluster(tmp_path, 3, "keyFile", key_file=_key(tmp_path))
    with c:
        c.start()
        c.initiate()
        log_in_as_admin(c)
        rs = c.client()
        rs.app.steps.insert_one({"_id": "keyFile"})

        def healthy() -> bool:
            members = rs.admin.command("replSetGetStatus")["members"]
            return all(x["health"] == 1 and x["stateStr"] in ("PRIMARY", "SECONDARY") for x in members)

        for step in ("sendKeyFile", "sendX509", "x509"):
            primary = c.wait_for_primary(30)
            for m in [m for m in c.members if m is not primary] + [primary]:
                modes[m.address] = step
                c.terminate(m)
                c.start(m)
                c.wait_for(healthy, 60, what=f"every member healthy after restarting {m.address} in {step}")
            rs.app.steps.insert_one({"_id": step})
        c.wait_for(lambda: all(m.client().app.steps.count_documents({}) == 4 for m in c.members), 20,
                   what="every step's write on every member")
        assert {m.client().admin.command("getCmdLineOpts")["parsed"]["security"]["clusterAuthMode"]
                for m in c.members} == {"x509"}


@pytest.mark.parametrize(("args", "message"), [
    (["--clusterAuthMode", "x509"], "need to enable TLS via the tlsMode flag"),
    (["--clusterAuthMode", "sendKeyFile"], "need to enable TLS via the tlsMode flag"),
    (["--clusterAuthMode", "sendX509", "--tlsMode", "allowTLS", "--tlsCertificateKeyFile", "x.pem",
      "--tlsCAFile", "ca.pem"], "cannot have x.509 cluster authentication in allowTLS mode"),
    (["--clusterAuthMode", "x509", "--tlsMode", "requireTLS", "--tlsCertificateKeyFile", "x.pem"],
     "No TLS certificate validation can be performed since no CA file has been provided"),
    (["--clusterAuthMode", "sometimes"], "unsupported value for clusterAuthMode sometimes"),
    (["--tlsClusterFile", "c.pem"], "need to enable TLS via the sslMode/tlsMode flag"),
])
def test_invalid_cluster_auth_options_stop_the_start_with_mongods_message(tmp_path, args, message):
    r = subprocess.run([MONGOSIM, "--dbpath", str(tmp_path), "--port", "1", *args], check=False,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert message in r.stderr
