"""HTTPS end to end: real `stateserver-api` processes on 127.0.0.1 with certificates from a throwaway CA, talking TLS
to a simulated member in requireTLS, and the unit's client against them. Each test asserts on what a peer observes:
a handshake refused or completed, the certificate presented, the answers."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from machines import VENV_BIN, wait_for
from mongosim.certs import CA, make_ca
from mongosim.testing import Cluster
from scrape import parse
from stateserver_client import StateClient, Unavailable
from stateserver_client.cli import main as cli_main
from test_limits import free_port

TOKEN = "tls-test-token-0123456789"
pytestmark = pytest.mark.slow


@dataclass
class Pki:
    ca: CA
    stranger: CA  # a CA the deployment does not trust

    def context(self, client_pem: str | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca.path)
        if client_pem:
            context.load_cert_chain(client_pem)
        return context


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    return Pki(make_ca(directory / "ca", "deployment CA"), make_ca(directory / "stranger", "someone else's CA"))


@pytest.fixture(scope="module")
def member(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[str]:
    """One simulated member in requireTLS (plain connections refused), initiated; yields its host:port."""
    cluster = Cluster(1, block="127.32", workdir=tmp_path_factory.mktemp("member"),
                      client_options={"tls": True, "tlsCAFile": pki.ca.path})
    pem = pki.ca.issue("member", [cluster.members[0].ip])
    cluster.extra_args += ["--tlsMode", "requireTLS", "--tlsCertificateKeyFile", pem, "--tlsCAFile", pki.ca.path,
                           "--tlsAllowConnectionsWithoutCertificates"]
    try:
        cluster.start()
        cluster.initiate()
        yield cluster.members[0].address
    finally:
        cluster.stop()


@dataclass
class Api:
    proc: subprocess.Popen
    port: int
    log: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def handshake(self, context: ssl.SSLContext) -> tuple[int, str]:
        """A new connection: (serial of the certificate presented, status line of GET /v1/live)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
            serial = int(conn.getpeercert()["serialNumber"], 16)
            conn.sendall(b"GET /v1/live HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := conn.recv(4096):
                answer += chunk
        return serial, answer.split(b"\r\n", 1)[0].decode()


def command(tmp_path: Path, port: int, *args: str, seeds: str = "127.0.0.1:1") -> list[str]:
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    return [str(VENV_BIN / "stateserver-api"), "--host", "127.0.0.1", "--port", str(port), "--token-file", str(token),
            "--mongo-seeds", seeds, "--server-selection-timeout-ms", "2000", *args]


def tls_args(pki: Pki, pem: str, *more: str) -> list[str]:
    return ["--tls-cert-file", pem, "--tls-key-file", pem, "--tls-ca-file", pki.ca.path, *more]


@contextlib.contextmanager
def api(tmp_path: Path, *args: str, seeds: str = "127.0.0.1:1",
        answers: ssl.SSLContext | None = None) -> Iterator[Api]:
    """A running server; `answers` is the context its readiness is checked with (None: plain HTTP)."""
    port = free_port()
    log = tmp_path / f"api-{port}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(command(tmp_path, port, *args, seeds=seeds), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    server = Api(proc, port, log)

    def live() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"the API server exited: {log.read_text()[-2000:]}")
        url = f"{'https' if answers else 'http'}://{server.address}/v1/live"
        return httpx.get(url, verify=answers or True, timeout=1, trust_env=False).status_code == 200

    try:
        wait_for(live, 30, "the API server to answer")
        yield server
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)


def any_certificate() -> ssl.SSLContext:
    """For waiting until a server with a certificate nobody trusts has started."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def not_after(pem: str) -> datetime.datetime:
    return x509.load_pem_x509_certificate(Path(pem).read_bytes()).not_valid_after_utc


def test_https_serves_the_machine_certificate_reports_its_expiry_and_reaches_a_tls_member(
        tmp_path: Path, pki: Pki, member: str) -> None:
    pem = pki.ca.issue("api-expiry", ["127.0.0.1"])
    context = pki.context()
    with api(tmp_path, *tls_args(pki, pem, "--mongo-tls-ca-file", pki.ca.path), seeds=member,
             answers=context) as server:
        serial, status = server.handshake(context)
        assert serial == x509.load_pem_x509_certificate(Path(pem).read_bytes()).serial_number
        assert status == "HTTP/1.1 200 OK"
        base, auth = f"https://{server.address}", {"Authorization": f"Bearer {TOKEN}"}
        certificate = httpx.get(f"{base}/v1/live", verify=context).json()["certificate"]
        assert datetime.datetime.fromisoformat(certificate["not_after"]) == not_after(pem)
        assert 1.9 < certificate["days_left"] <= 2  # mongosim.certs issues for two days
        metrics = parse(httpx.get(f"{base}/metrics", headers=auth, verify=context).text)
        assert metrics["stateserver_api_certificate_expiry_timestamp_seconds"] == [({}, not_after(pem).timestamp())]
        # The member refuses plain connections, so a ready answer means the server's MongoDB connection is TLS.
        ready = httpx.get(f"{base}/v1/ready", headers=auth, verify=context, timeout=30)
        assert ready.status_code == 200 and ready.json()["primary"] == member


def test_plain_http_to_the_https_port_gets_no_answer(tmp_path: Path, pki: Pki) -> None:
    pem = pki.ca.issue("api-plain", ["127.0.0.1"])
    with api(tmp_path, *tls_args(pki, pem), answers=pki.context()) as server:
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://{server.address}/v1/live", timeout=5, trust_env=False)
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
            raw.sendall(b"GET /v1/live HTTP/1.1\r\nHost: x\r\n\r\n")
            reply = raw.recv(4096)
        assert b"HTTP/1.1" not in reply and b"status" not in reply  # closed, or a TLS alert: never the API
        assert server.handshake(pki.context())[1] == "HTTP/1.1 200 OK"  # and HTTPS still answers


def test_a_connection_that_never_completes_its_handshake_is_closed_at_the_read_deadline(
        tmp_path: Path, pki: Pki) -> None:
    """asyncio's own handshake deadline is 60 s, and the connection guard sees a connection only after its
    handshake: a silent TLS client must still be gone after --read-timeout."""
    pem = pki.ca.issue("api-silent", ["127.0.0.1"])
    with api(tmp_path, *tls_args(pki, pem, "--read-timeout", "1"), answers=pki.context()) as server, \
            socket.create_connection(("127.0.0.1", server.port), timeout=20) as silent:
        opened = time.monotonic()
        assert silent.recv(1) == b""  # closed by the server
        assert time.monotonic() - opened < 10
        assert server.handshake(pki.context())[1] == "HTTP/1.1 200 OK"


def test_wait_live_checks_the_server_over_https(tmp_path: Path, pki: Pki) -> None:
    """The unit's ExecStartPost: the server of this config answers over HTTPS with a certificate of the CA."""
    pem = pki.ca.issue("api-wait", ["127.0.0.1"])
    with api(tmp_path, *tls_args(pki, pem), answers=pki.context()) as server:
        def wait_live(ca: str) -> subprocess.CompletedProcess:
            args = ["--tls-cert-file", pem, "--tls-key-file", pem, "--tls-ca-file", ca, "--wait-live", "1"]
            return subprocess.run(command(tmp_path, server.port, *args), capture_output=True, text=True, timeout=60,
                                  check=False)

        assert wait_live(pki.ca.path).returncode == 0
        assert wait_live(pki.stranger.path).returncode == 1  # a server the CA did not sign is not ours


def test_a_key_file_others_can_read_is_refused_at_start(tmp_path: Path, pki: Pki) -> None:
    pem = pki.ca.issue("api-open-key", ["127.0.0.1"])
    Path(pem).chmod(0o644)
    run = subprocess.run(command(tmp_path, free_port(), *tls_args(pki, pem)), capture_output=True, text=True,
                         timeout=60, check=False)
    assert run.returncode == 1
    assert f"the TLS key file {pem} is open to group or others (mode 0644)" in run.stderr
    assert "Traceback" not in run.stderr


def test_a_key_that_does_not_match_the_certificate_is_refused_at_start(tmp_path: Path, pki: Pki) -> None:
    cert, other = pki.ca.issue("api-cert", ["127.0.0.1"]), pki.ca.issue("api-other", ["127.0.0.1"])
    run = subprocess.run(command(tmp_path, free_port(), "--tls-cert-file", cert, "--tls-key-file", other,
                                 "--tls-ca-file", pki.ca.path), capture_output=True, text=True, timeout=60,
                         check=False)
    assert run.returncode == 1 and f"cannot use the TLS certificate {cert} with the key {other}" in run.stderr


def test_plain_http_only_when_asked_for_and_never_mixed_with_tls_files(tmp_path: Path, pki: Pki) -> None:
    def check(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(command(tmp_path, free_port(), *args), capture_output=True, text=True, timeout=60,
                              check=False)

    missing = check()
    assert missing.returncode == 2
    assert "HTTPS needs tls_cert_file, tls_key_file, tls_ca_file" in missing.stderr
    assert "--insecure-http" in missing.stderr
    mixed = check("--insecure-http", "--tls-ca-file", pki.ca.path)
    assert mixed.returncode == 2 and "tls_ca_file given but TLS is off" in mixed.stderr
    with api(tmp_path, "--insecure-http") as server:
        assert httpx.get(f"http://{server.address}/v1/live", trust_env=False).json() == {"status": "ok"}


def test_client_certificates_from_the_deployment_ca_only(tmp_path: Path, pki: Pki) -> None:
    pem = pki.ca.issue("api-mtls", ["127.0.0.1"])
    unit, stranger = pki.ca.issue("unit-1", ["127.0.0.1"]), pki.stranger.issue("intruder", ["127.0.0.1"])
    with api(tmp_path, *tls_args(pki, pem, "--tls-require-client-cert"), answers=pki.context(unit)) as server:
        def answered(context: ssl.SSLContext) -> bool:
            # Under TLS 1.3 the client finishes its side of the handshake before the server has checked the client
            # certificate; the refusal then arrives as an alert or a closed connection instead of the answer.
            try:
                return server.handshake(context)[1] == "HTTP/1.1 200 OK"
            except (ssl.SSLError, OSError):
                return False

        assert answered(pki.context(unit))
        assert not answered(pki.context())  # no certificate
        assert not answered(pki.context(stranger))  # a certificate from another CA


def test_the_client_refuses_untrusted_or_misnamed_servers_and_keeps_the_good_one(
        tmp_path: Path, pki: Pki, member: str) -> None:
    untrusted = pki.stranger.issue("api-untrusted", ["127.0.0.1"])
    misnamed = pki.ca.issue("api-misnamed", ["127.0.0.2"])  # signed by the CA, but not for the address dialled
    good = pki.ca.issue("api-good", ["127.0.0.1"])
    more = ("--mongo-tls-ca-file", pki.ca.path)
    with api(tmp_path, *tls_args(pki, untrusted, *more), seeds=member, answers=any_certificate()) as bad1, \
            api(tmp_path, *tls_args(pki, misnamed, *more), seeds=member, answers=any_certificate()) as bad2, \
            api(tmp_path, *tls_args(pki, good, *more), seeds=member, answers=pki.context()) as ok:
        cache = tmp_path / "cache.json"
        # The untrusted server is the one remembered from last time: it is tried first and loses like a dead one.
        cache.write_text(json.dumps({"last_address": bad1.address, "published": []}))
        addresses = [bad1.address, bad2.address, ok.address]
        with StateClient(addresses, TOKEN, cache, tls=pki.context(), auto_refresh=False) as client:
            assert client.connect() == ok.address
            assert client.put("tls-key", "v", 0)["version"] == 1
        assert json.loads(cache.read_text())["last_address"] == ok.address

        (tmp_path / "token-file").write_text(TOKEN)
        config = tmp_path / "client.json"
        config.write_text(json.dumps({"addresses": [bad1.address, bad2.address], "retry_for": 0.5,
                                      "token_file": str(tmp_path / "token-file"), "ca_file": pki.ca.path}))
        with StateClient([bad1.address, bad2.address], TOKEN, tls=pki.context(), retry_for=0.5) as client, \
                pytest.raises(Unavailable) as refused:
            client.ready()
        message = str(refused.value)
        assert f"{bad1.address} presented a certificate that is not accepted" in message
        assert "unable to get local issuer certificate" in message
        assert f"{bad2.address} presented a certificate that is not accepted" in message
        assert "IP address mismatch" in message
        assert cli_main(["--config", str(config), "ready"]) == 3
        # --ca-file names the CA on the command line; a missing one is a usage error, not a traceback.
        assert cli_main(["--config", str(config), "--ca-file", str(tmp_path / "no-ca.pem"), "ready"]) == 2


def test_sighup_serves_a_renewed_certificate_without_missing_a_request(tmp_path: Path, pki: Pki) -> None:
    pem = pki.ca.issue("api-rotate", ["127.0.0.1"])
    context = pki.context()
    first = x509.load_pem_x509_certificate(Path(pem).read_bytes()).serial_number
    with api(tmp_path, *tls_args(pki, pem), answers=context) as server:
        seen: list[tuple[int, str]] = []
        failures: list[str] = []
        stop = threading.Event()

        def poll() -> None:
            while not stop.is_set():
                try:
                    seen.append(server.handshake(context))
                except (OSError, ssl.SSLError) as exc:
                    failures.append(repr(exc))

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        try:
            wait_for(lambda: len(seen) >= 5, 30, "requests before the renewal")
            # A broken renewal (a certificate with someone else's key) is refused; the old certificate stays served.
            good_bytes, end = Path(pem).read_bytes(), b"-----END CERTIFICATE-----\n"
            other_key = Path(pki.ca.issue("api-rotate-other", ["127.0.0.1"])).read_bytes().split(end)[1]
            Path(pem).write_bytes(good_bytes.split(end)[0] + end + other_key)
            os.kill(server.proc.pid, signal.SIGHUP)
            count = len(seen)
            wait_for(lambda: len(seen) >= count + 10, 30, "requests after the refused renewal")
            Path(pem).write_bytes(good_bytes)
            # The real renewal: a new certificate and key at the same path, then SIGHUP.
            renewed = pki.ca.issue("api-rotate", ["127.0.0.1"])
            second = x509.load_pem_x509_certificate(Path(renewed).read_bytes()).serial_number
            os.kill(server.proc.pid, signal.SIGHUP)
            wait_for(lambda: any(serial == second for serial, _ in seen), 30, "the renewed certificate")
            count = len(seen)
            wait_for(lambda: len(seen) >= count + 5, 30, "requests after the renewal")
        finally:
            stop.set()
            poller.join(10)
        assert failures == []
        assert server.proc.poll() is None  # the same process throughout
        assert {status for _, status in seen} == {"HTTP/1.1 200 OK"}
        serials = [serial for serial, _ in seen]
        switch = serials.index(second)
        assert set(serials[:switch]) == {first} and set(serials[switch:]) == {second}
        live = httpx.get(f"https://{server.address}/v1/live", verify=context).json()["certificate"]
        assert datetime.datetime.fromisoformat(live["not_after"]) == not_after(renewed)
