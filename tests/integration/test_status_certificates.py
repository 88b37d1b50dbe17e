"""ha_status_info reports when the certificates its machines serve expire, read from the TLS handshakes themselves.

Two simulator members in requireTLS and two real API servers serving HTTPS, each with a certificate of its own
lifetime from one throwaway CA: sm1 serves one certificate (400 days) for both, as a deployment does; sm2's mongod
serves one that ends in 10 days and its API server one that has already expired (so it does not verify, and counts
as not answering, but its end is still reported); sm3 is a pool host where nothing listens. The reported dates are
compared with the notAfter of the certificate files. One set, one play of two tasks: seconds.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from cluster import MACHINE_TAG
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from mongosim import testing
from mongosim.certs import CA, make_ca
from playbook import run_tasks

pytestmark = pytest.mark.timeout(240)

STATUS = "stateserver.ha.ha_status_info"
TOKEN = "status-certificates-token-0123456789"


def issue(ca: CA, name: str, ip: str, not_before_days: float, not_after_days: float) -> Path:
    """A leaf for `ip` valid from now + not_before_days to now + not_after_days, as one PEM (certificate and key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca.cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now + datetime.timedelta(days=not_before_days))
            .not_valid_after(now + datetime.timedelta(days=not_after_days))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca.key, hashes.SHA256()))
    path = ca.directory / f"{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    path.chmod(0o600)
    return path


def not_after(pem: Path) -> str:
    return x509.load_pem_x509_certificate(pem.read_bytes()).not_valid_after_utc.isoformat()


def free_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def start_api(tmp_path: Path, ip: str, port: int, pem: Path, ca: CA) -> subprocess.Popen:
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    with (tmp_path / f"api-{ip}.log").open("ab") as log:
        return subprocess.Popen([str(Path(sys.executable).parent / "stateserver-api"), "--host", ip, "--port",
                                 str(port), "--token-file", str(token), "--mongo-seeds", "127.0.0.1:1",
                                 "--tls-cert-file", str(pem), "--tls-key-file", str(pem), "--tls-ca-file", ca.path],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)


def wait_until_serving(proc: subprocess.Popen, url: str, what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{what} exited"
        try:
            # Any certificate: one of them has expired, which is the point.
            if httpx.get(url, verify=False, timeout=1, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{what} did not answer within 60 s")


def test_status_reports_each_served_certificate_expiry_and_flags_due_and_expired_ones(tmp_path):
    ca = make_ca(tmp_path / "ca", "status test CA")
    cluster = testing.Cluster(2, block="127.24", port=free_port("127.0.0.1"), workdir=tmp_path / "members", spare=1,
                              client_options={"tls": True, "tlsCAFile": ca.path})
    sm1, sm2 = cluster.members
    spare_ip = f"{cluster.prefix}.3"
    pems = {sm1.index: issue(ca, "sm1", sm1.ip, -1, 400), sm2.index: issue(ca, "sm2", sm2.ip, -1, 10)}
    expired = issue(ca, "sm2-api", sm2.ip, -30, -2)
    command_line = cluster.command_line
    cluster.command_line = lambda m: [*command_line(m), "--tlsMode", "requireTLS", "--tlsCertificateKeyFile",
                                      str(pems[m.index]), "--tlsCAFile", ca.path,
                                      "--tlsAllowConnectionsWithoutCertificates"]
    api_port = free_port(sm1.ip)
    apis = []
    try:
        apis = [start_api(tmp_path, sm1.ip, api_port, pems[sm1.index], ca),
                start_api(tmp_path, sm2.ip, api_port, expired, ca)]
        cluster.start()
        config = cluster.config_document()
        for doc, name in zip(config["members"], ("sm1", "sm2")):
            doc["tags"] = {MACHINE_TAG: name}
        cluster.initiate(config)
        for proc, m in zip(apis, (sm1, sm2)):
            wait_until_serving(proc, f"https://{m.ip}:{api_port}/v1/live", f"the API server on {m.ip}")

        pool = [{"name": name, "address": f"{ip}:{cluster.port}", "api_address": f"{ip}:{api_port}"}
                for name, ip in (("sm1", sm1.ip), ("sm2", sm2.ip), ("sm3", spare_ip))]
        args = {"seeds": [sm1.address], "tls": True, "tls_ca_file": ca.path, "pool": pool, "api_scheme": "https",
                "api_ca_file": ca.path, "api_timeout": 5, "server_selection_timeout": 10}
        run = run_tasks(tmp_path / "play", [{STATUS: args}, {STATUS: {**args, "certificate_warning_days": 5}}])
        assert run.rc == 0, run.stdout
        default, five = run.results
        assert not default.get("failed"), default
        rows = {r["machine"]: r for r in default["rows"]}

        # sm1: one certificate for mongod and the API server, far from its end, verified by the probe.
        assert rows["sm1"]["mongo_certificate_not_after"] == not_after(pems[sm1.index])
        assert rows["sm1"]["api_certificate_not_after"] == not_after(pems[sm1.index])
        assert 399 < rows["sm1"]["mongo_certificate_days_left"] <= 400
        # (The set has no machine records: each note says so, and nothing about sm1's certificate.)
        assert rows["sm1"]["api_answers"] is True and rows["sm1"]["note"] == "no machine record"

        # sm2: mongod's ends within the default 30 days; the API server's has expired, so it does not verify (not an
        # answer) yet its end is reported from the handshake.
        assert rows["sm2"]["mongo_certificate_not_after"] == not_after(pems[sm2.index])
        assert 9 < rows["sm2"]["mongo_certificate_days_left"] <= 10
        assert rows["sm2"]["api_certificate_not_after"] == not_after(expired)
        assert -2.1 < rows["sm2"]["api_certificate_days_left"] < -1.9
        assert rows["sm2"]["api_answers"] is False
        assert "the mongod certificate expires in 9 days" in rows["sm2"]["note"]
        assert "the API certificate EXPIRED" in rows["sm2"]["note"]

        # sm3: nothing listens, nothing to report.
        assert rows["sm3"]["state"] == "spare"
        assert [rows["sm3"][k] for k in ("mongo_certificate_not_after", "api_certificate_not_after")] == [None, None]

        table = default["table"]
        cert = table[0].index("CERT")
        # The sooner of a machine's two certificates: sm2's expired API certificate.
        assert [line[cert:cert + 8].strip() for line in table[1:]] == ["399d", "EXPIRED", "-"]
        # A 5-day threshold no longer flags sm2's mongod certificate; the expired one stays flagged.
        sm2_five = next(r for r in five["rows"] if r["machine"] == "sm2")
        assert "mongod certificate" not in sm2_five["note"] and "the API certificate EXPIRED" in sm2_five["note"]
    finally:
        for proc in apis:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        cluster.stop()
