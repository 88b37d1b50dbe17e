"""TLS with mongod's options: ``--tlsMode`` (disabled, allowTLS, preferTLS, requireTLS), ``--tlsCertificateKeyFile``,
``--tlsCAFile``, ``--tlsAllowConnectionsWithoutCertificates`` and the ``net.tls`` keys of the config file. Clients
connect through pymongo's own TLS; certificates come from a private CA made for each test."""
from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mongosim.certs import make_ca
from mongosim.testing import Cluster, using_real_mongod
from pymongo import MongoClient
from pymongo.errors import ServerSelectionTimeoutError

MONGOSIM = str(Path(sys.executable).parent / "mongosim")


def tls_cluster(tmp_path: Path, n: int, mode: str = "requireTLS", *, without_certificates: bool = False,
                client_certificate: bool = True) -> tuple[Cluster, dict]:
    """An unstarted cluster whose members run with ``mode``, each with a certificate for its own address; the
    clients the helpers open use TLS with the CA (and a client certificate unless told otherwise). Returns the
    cluster and the file paths (ca, client, member certificates)."""
    c = Cluster(n, block="127.10", workdir=tmp_path / "cluster")
    ca = make_ca(tmp_path / "pki")
    files = {"ca": ca.path, "client": ca.issue("client", ["127.0.0.1"])}
    for m in c.members:
        files[m.address] = ca.issue(f"member{m.index}", [m.ip])
    member_args = {m.address: ["--tlsMode", mode, "--tlsCertificateKeyFile", files[m.address], "--tlsCAFile", ca.path]
                   + (["--tlsAllowConnectionsWithoutCertificates"] if without_certificates else [])
                   for m in c.members}
    base = c.command_line
    c.command_line = lambda m: base(m) + member_args[m.address]  # type: ignore[method-assign]
    c.client_options = {"tls": True, "tlsCAFile": ca.path}
    if client_certificate:
        c.client_options["tlsCertificateKeyFile"] = files["client"]
    for m in c.members:
        m.client_options = dict(c.client_options)
    return c, files


def ping(address: str, **options) -> dict:
    host, _, port = address.rpartition(":")
    client = MongoClient(host, int(port), directConnection=True, serverSelectionTimeoutMS=2000, **options)
    try:
        return client.admin.command("ping")
    finally:
        client.close()


pytestmark = pytest.mark.skipif(using_real_mongod(), reason="the certificates are made for the simulator's addresses; "
                                "the same options work on mongod")


def test_three_members_elect_and_replicate_over_tls_and_plain_clients_are_refused(tmp_path):
    c, files = tls_cluster(tmp_path, 3)
    with c:
        c.start()
        c.initiate()  # over TLS: the quorum check, heartbeats and votes all go member to member
        p = c.wait_for_primary(30)
        c.wait_for_states({m.index: "SECONDARY" for m in c.members if m is not p}, 30)
        client = c.client()
        client.app.things.insert_one({"_id": 1})
        c.wait_for(lambda: all(m.client().app.things.find_one({"_id": 1}) for m in c.members), 20,
                   what="the write on every member")
        with pytest.raises(ServerSelectionTimeoutError):
            ping(p.address)  # plain
        with pytest.raises(ServerSelectionTimeoutError):
            ping(p.address, tls=True, tlsCAFile=files["ca"])  # no client certificate, and the CA asks for one
        with pytest.raises(ServerSelectionTimeoutError, match="CERTIFICATE_VERIFY_FAILED"):
            ping(p.address, tls=True, tlsCAFile=make_ca(tmp_path / "other").path,
                 tlsCertificateKeyFile=files["client"])  # a CA that did not sign the server's certificate
        assert ping(p.address, tls=True, tlsCAFile=files["ca"], tlsCertificateKeyFile=files["client"])["ok"] == 1


def test_keyfile_members_authenticate_to_each_other_over_tls(tmp_path):
    # The roles keep keyFile membership auth and add TLS: the SCRAM exchange between members runs inside TLS.
    c, _ = tls_cluster(tmp_path, 2)
    key = tmp_path / "keyfile"
    key.write_text(base64.b64encode(os.urandom(60)).decode())
    key.chmod(0o600)
    c.key_file = str(key)
    with c:
        c.start()
        c.initiate()  # the localhost exception lets the first command in; members log in as __system
        p = c.wait_for_primary(30)
        secondary = next(m for m in c.members if m is not p)
        # hello needs no login: the secondary has joined, which takes heartbeats and an initial sync from the
        # primary, each behind a keyFile login inside TLS.
        c.wait_for(lambda: (secondary.hello() or {}).get("secondary"), 30, what="the second member SECONDARY")


def test_allow_connections_without_certificates_lets_a_client_in_with_the_ca_only(tmp_path):
    c, files = tls_cluster(tmp_path, 1, without_certificates=True, client_certificate=False)
    with c:
        c.start()
        c.initiate()
        assert ping(c.members[0].address, tls=True, tlsCAFile=files["ca"])["ok"] == 1
        with pytest.raises(ServerSelectionTimeoutError):
            ping(c.members[0].address)


@pytest.mark.parametrize("mode", ["allowTLS", "preferTLS"])
def test_allow_and_prefer_take_tls_and_plain_clients_on_one_port(tmp_path, mode):
    c, files = tls_cluster(tmp_path, 2, mode)
    with c:
        c.start()
        c.initiate()  # allowTLS: members talk plain; preferTLS: over TLS
        c.wait_for_states({m.index: "SECONDARY" for m in c.members if m is not c.wait_for_primary()}, 30)
        address = c.members[1].address
        assert ping(address)["ok"] == 1
        assert ping(address, tls=True, tlsCAFile=files["ca"], tlsCertificateKeyFile=files["client"])["ok"] == 1


def test_net_tls_keys_of_the_config_file(tmp_path):
    c = Cluster(1, block="127.10", workdir=tmp_path / "cluster")
    ca = make_ca(tmp_path / "pki")
    m = c.members[0]
    conf = tmp_path / "mongod.conf"
    conf.write_text("net:\n"
                    "  tls:\n"
                    "    mode: requireTLS\n"
                    f"    certificateKeyFile: {ca.issue('member', [m.ip])}\n"
                    f"    CAFile: {ca.path}\n"
                    "    allowConnectionsWithoutCertificates: true\n")
    base = c.command_line
    c.command_line = lambda member: base(member) + ["--config", str(conf)]  # type: ignore[method-assign]
    m.client_options = {"tls": True, "tlsCAFile": ca.path}
    with c:
        c.start()
        opts = m.client().admin.command("getCmdLineOpts")
        assert opts["parsed"]["net"]["tls"]["mode"] == "requireTLS"
        with pytest.raises(ServerSelectionTimeoutError):
            ping(m.address)


@pytest.mark.parametrize(("args", "message"), [
    (["--tlsMode", "requireTLS"], "need tlsCertificateKeyFile or certificateSelector when TLS is enabled"),
    (["--tlsMode", "requireTLS", "--tlsCertificateKeyFile", "x.pem"],
     "The use of TLS without specifying a chain of trust is no longer supported"),
    (["--tlsCAFile", "ca.pem"], "need to enable TLS via the sslMode/tlsMode flag"),
    (["--tlsMode", "sometimes"], "unsupported value for tlsMode sometimes"),
])
def test_invalid_tls_options_stop_the_start_with_mongods_message(tmp_path, args, message):
    r = subprocess.run([MONGOSIM, "--dbpath", str(tmp_path), "--port", "1", *args], check=False,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert message in r.stderr
