"""GET /v1/live reports the certificate the server presents now: the one read at start, then the renewed one once a
reload (what SIGHUP triggers, see test_tls.py for the signal end to end) has read it, and still the served one when a
reload is refused. In process, over the app and the reloadable certificate: milliseconds."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fakes import MemoryBackend
from fastapi.testclient import TestClient
from stateserver_api.app import create_app
from stateserver_api.tls import ServedCertificate

TOKEN = "live-certificate-token-0123456789"


def write_certificate(pem: Path, days: int) -> datetime.datetime:
    """A self-signed certificate valid for `days` and its key, in one PEM at `pem` (0600); returns its notAfter."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"sm1-{days}")])
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=days)).sign(key, hashes.SHA256()))
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    pem.chmod(0o600)
    return cert.not_valid_after_utc


def live_certificate(client: TestClient) -> dict:
    answer = client.get("/v1/live")
    assert answer.status_code == 200 and answer.json()["status"] == "ok"
    return answer.json()["certificate"]


def test_live_reports_the_served_certificate_and_the_renewed_one_after_a_reload(tmp_path: Path) -> None:
    pem = tmp_path / "api.pem"
    first = write_certificate(pem, 10)
    served = ServedCertificate(str(pem), str(pem))
    client = TestClient(create_app(MemoryBackend(), TOKEN, certificate=served))

    before = live_certificate(client)
    assert datetime.datetime.fromisoformat(before["not_after"]) == first
    assert before["days_left"] == pytest.approx(10, abs=0.01) and before["subject"] == "CN=sm1-10"

    renewed = write_certificate(pem, 400)
    assert served.reload()
    after = live_certificate(client)
    assert datetime.datetime.fromisoformat(after["not_after"]) == renewed != first
    assert after["days_left"] == pytest.approx(400, abs=0.01) and after["subject"] == "CN=sm1-400"

    # A renewal that cannot be served (not a certificate) is refused: the one still served is still reported.
    pem.write_text("not a certificate\n")
    assert not served.reload()
    still = live_certificate(client)
    assert (still["not_after"], still["subject"]) == (after["not_after"], after["subject"])


def test_live_says_nothing_about_tls_when_serving_plain_http() -> None:
    client = TestClient(create_app(MemoryBackend(), TOKEN))
    assert client.get("/v1/live").json() == {"status": "ok"}
