"""auth: who can reach what, checked on the running deployment (TLS on, the default).

mongod refuses plain TCP and a TLS client that trusts another CA; logins need the right password; the API refuses
plain HTTP, another CA and a missing or wrong token; every served certificate names the machine's published
addresses; the API server's own MongoDB user can do its job and nothing more; a -vvv run shows no secret; and
rotate-certificates.yml renews every certificate while a client keeps writing through the API without a failure.
"""

import contextlib
import datetime
import socket
import ssl
import threading
import time
import uuid

import hatest
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pymongo import MongoClient
from pymongo.errors import ConnectionFailure, OperationFailure

PORTS = {"mongod": hatest.PORT, "api": hatest.API_PORT}


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory):
    """A CA that has nothing to do with the deployment: what a client trusting the wrong authority holds."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not the deployment CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))
    path = tmp_path_factory.mktemp("other-ca") / "ca.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def served_certificate(name, port):
    """The certificate a machine serves on that port, after a handshake that verifies it with the deployment CA
    and checks that the machine's address is among its names (ssl raises otherwise)."""
    context = ssl.create_default_context(cafile=str(hatest.ca_file()))
    with socket.create_connection((hatest.address(name), port), timeout=10) as sock, \
            context.wrap_socket(sock, server_hostname=hatest.address(name)) as tls:
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


def sans_of(cert):
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(ip) for ip in ext.get_values_for_type(x509.IPAddress)} | set(ext.get_values_for_type(x509.DNSName))


def test_mongod_refuses_plain_tcp_but_serves_tls():
    for h in hatest.hosts():
        with MongoClient(f"{h['ip']}:{hatest.PORT}", directConnection=True, serverSelectionTimeoutMS=3000) as c, \
                pytest.raises(ConnectionFailure):
            c.admin.command("ping")
        with hatest.member_client(h["name"]) as c:
            assert c.admin.command("ping")["ok"] == 1


def test_mongod_refuses_a_client_that_trusts_another_ca(other_ca):
    for h in hatest.hosts():
        with hatest.member_client(h["name"], tlsCAFile=str(other_ca), serverSelectionTimeoutMS=3000) as c, \
                pytest.raises(ConnectionFailure) as err:
            c.admin.command("ping")
        assert "certificate verify failed" in str(err.value).lower(), err.value


def test_unauthenticated_client_cannot_read_or_reconfigure():
    for h in hatest.hosts():
        with MongoClient(f"{h['ip']}:{hatest.PORT}", directConnection=True, serverSelectionTimeoutMS=10000,
                         **hatest.tls_options()) as c:
            with pytest.raises(OperationFailure) as err:
                c.admin.command("replSetGetConfig")
            assert err.value.code == 13  # Unauthorized
            with pytest.raises(OperationFailure):
                c.stateserver.machines.find_one()


def test_wrong_password_is_refused():
    with pytest.raises(OperationFailure) as err, hatest.client(password="not-the-password",
                                                               serverSelectionTimeoutMS=10000) as c:
        c.admin.command("replSetGetConfig")
    assert err.value.code == 18  # AuthenticationFailed


def test_api_refuses_plain_http_and_another_ca(other_ca):
    token = hatest.api_token()
    for h in hatest.hosts():
        # The token is offered in clear text here; the server must not answer with anything.
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://{h['ip']}:{hatest.API_PORT}/v1/ready", headers={"Authorization": f"Bearer {token}"},
                      timeout=10)
        with pytest.raises(httpx.ConnectError) as err:
            hatest.api(h["name"], "GET", "/v1/live", verify=ssl.create_default_context(cafile=str(other_ca)))
        assert "certificate verify failed" in str(err.value).lower(), err.value
        assert hatest.api(h["name"], "GET", "/v1/live").status_code == 200


def test_api_refuses_requests_without_the_token():
    for h in hatest.hosts():
        assert hatest.api(h["name"], "GET", "/v1/ready").status_code == 401
        assert hatest.api(h["name"], "GET", "/v1/ready", "wrong-token-wrong-token").status_code == 401
        assert hatest.api(h["name"], "GET", "/v1/ready", hatest.api_token()).status_code == 200


def test_served_certificates_name_the_published_addresses():
    with hatest.client() as c:
        records = {r["_id"]: r for r in c.stateserver.machines.find()}
    assert sorted(records) == sorted(h["name"] for h in hatest.hosts())
    for name, record in records.items():
        published = {record["mongo_address"].rsplit(":", 1)[0], record["api_address"].rsplit(":", 1)[0]}
        for service, port in PORTS.items():
            cert = served_certificate(name, port)
            assert published <= sans_of(cert), (name, service, sans_of(cert))
            assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == name
            # The API server serves its own certificate, whose OU mongod does not take for a member's.
            units = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)]
            assert units == (["api-server"] if service == "api" else []), (name, service, cert.subject)


def test_the_api_servers_mongodb_user_can_do_its_job_and_nothing_more():
    user, password = hatest.api_mongo_credentials()
    assert user != "admin"
    with hatest.client(username=user, password=password, w="majority") as c:
        # Its own database, and the replica set's status its health answers need.
        c.stateserver.auth_probe.insert_one({"by": user})
        assert c.stateserver.machines.count_documents({}) == 3
        assert c.admin.command("replSetGetStatus")["ok"] == 1
        config = c.admin.command("replSetGetConfig")["config"]
        with pytest.raises(OperationFailure) as err:
            c.admin.command("replSetReconfig", {**config, "version": config["version"] + 1})
        assert err.value.code == 13
        for db in ("admin", "config", "otherdb"):
            with pytest.raises(OperationFailure) as err:
                c[db].auth_probe.insert_one({"by": user})
            assert err.value.code == 13, db
        for db, collection in (("admin", "system.users"), ("otherdb", "things")):
            with pytest.raises(OperationFailure) as err:
                c[db][collection].find_one()
            assert err.value.code == 13, db
        with pytest.raises(OperationFailure) as err:
            c.admin.command("createUser", "intruder", pwd="intruder-password", roles=["root"])
        assert err.value.code == 13
    assert replset_version() == config["version"]


def replset_version():
    return hatest.replset_config()["version"]


def secret_values():
    """Every secret of the deployment as it could appear in a log: the passwords and the token whole, the keyfile
    and each private key (PEM) as each of their lines."""
    secrets = hatest.EPHEMERAL / "secrets"
    whole = [hatest.admin_password(), hatest.api_token(), hatest.api_mongo_credentials()[1]]
    keys = [hatest.keyfile(), (secrets / "ca.key").read_text(),
            *(path.read_text() for path in sorted((secrets / "certs").glob("*.key")))]
    assert len(keys) == 2 + len(hatest.hosts())
    lines = [line for key in keys for line in key.splitlines() if len(line) >= 32 and "PRIVATE KEY" not in line]
    assert len(lines) >= len(keys)
    return whole + lines


def test_no_secret_appears_in_a_verbose_run(tmp_path):
    log = tmp_path / "ensure-ha-vvv.log"
    proc = hatest.run_playbook("ensure-ha.yml", "-e", "n=3", "-vvv", log=log)
    assert proc.returncode == 0, proc.stdout[-4000:]
    text = log.read_text()
    assert len(text) > 10000  # a real -vvv log, not an empty one
    leaked = [i for i, value in enumerate(secret_values()) if value in text]
    assert not leaked, f"secret values number {leaked} appear in the -vvv output"
    # Also no long fragment of the keyfile (it could be wrapped or split).
    key = hatest.keyfile()
    assert not any(key[i:i + 40] in text for i in range(0, len(key) - 40, 40))


class ApiWriter(threading.Thread):
    """A unit's software writing one key through the API servers (stateserver_client, as stateserver-client
    does: HTTPS verified with the deployment CA, the next server when one does not answer), one write after
    another; a write that does not succeed within 10 s counts as failed."""

    def __init__(self):
        super().__init__(daemon=True)
        from stateserver_client.client import StateClient

        self.client = StateClient([f"{h['ip']}:{hatest.API_PORT}" for h in hatest.hosts()], hatest.api_token(),
                                  retry_for=10, request_timeout=5, tls=hatest.api_tls())
        self.stop = threading.Event()
        self.key = f"rotation-{uuid.uuid4().hex[:12]}"  # new at every run: version 0 creates it
        self.written, self.failed, self.slowest, self.version = 0, [], 0.0, 0

    def run(self):
        with self.client:
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    self.version = self.client.put(self.key, self.written, self.version)["version"]
                    self.written += 1
                except Exception as exc:  # noqa: BLE001 - a failed write is what the test counts
                    self.failed.append(repr(exc))
                    with contextlib.suppress(Exception):
                        self.version = self.client.get(self.key)["version"]
                self.slowest = max(self.slowest, time.monotonic() - started)
                self.stop.wait(0.1)


def served_serials():
    return {(h["name"], service): served_certificate(h["name"], port).serial_number
            for h in hatest.hosts() for service, port in PORTS.items()}


def issued_files():
    """The controller's certificate files by path under certs/ (the API servers' are in certs/api/)."""
    certs = hatest.EPHEMERAL / "secrets" / "certs"
    return {str(path.relative_to(certs)): path.read_bytes() for path in sorted(certs.rglob("*")) if path.is_file()}


def test_rotation_check_mode_changes_nothing():
    files, serials = issued_files(), served_serials()
    proc = hatest.run_playbook("rotate-certificates.yml", "--check")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert issued_files() == files
    assert served_serials() == serials


def test_rotation_renews_every_certificate_while_a_client_keeps_writing():
    before = served_serials()
    ca = (hatest.EPHEMERAL / "secrets" / "ca.crt").read_bytes()
    writer = ApiWriter()
    writer.start()
    try:
        hatest.wait_until(lambda: writer.written >= 5, 60, "the writer's first writes")
        proc = hatest.run_playbook("rotate-certificates.yml")
        written_during = writer.written
    finally:
        writer.stop.set()
        writer.join(30)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert writer.failed == [], writer.failed[:5]
    assert written_during > 20, (written_during, writer.slowest)
    entry = hatest.api("m1", "GET", f"/v1/kv/{writer.key}", hatest.api_token()).json()
    assert (entry["value"], entry["version"]) == (writer.written - 1, writer.version)

    after = served_serials()
    assert all(after[k] != before[k] for k in before), (before, after)
    # The same CA signed the new ones (served_certificate verified each with it), and the controller's files are
    # what the machines serve now.
    assert (hatest.EPHEMERAL / "secrets" / "ca.crt").read_bytes() == ca
    files = issued_files()
    for h in hatest.hosts():
        for service, path in (("mongod", f"{h['name']}.crt"), ("api", f"api/{h['name']}.crt")):
            assert after[(h["name"], service)] == x509.load_pem_x509_certificate(files[path]).serial_number
    hatest.healthy_voters(3)
