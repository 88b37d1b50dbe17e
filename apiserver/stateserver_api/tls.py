"""HTTPS for the API server: the machine's certificate, reloadable without a restart, and its expiry.

The listening socket keeps one SSLContext for its lifetime (asyncio builds every connection from it), so a reload
cannot replace it. Instead the listening context's SNI callback, which OpenSSL runs early in every handshake (with or
without a server name from the client), hands the handshake the context built from the files last read. A reload
builds and checks a complete new context first, so a bad or half-written file leaves the served certificate as it was.
"""

from __future__ import annotations

import datetime
import logging
import ssl
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

log = logging.getLogger("stateserver_api")


class TLSFilesError(Exception):
    """The certificate, key or CA files cannot be served; the message names the file and what to do."""


@dataclass(frozen=True)
class CertificateInfo:
    """What is worth watching about the served certificate."""

    not_after: datetime.datetime
    subject: str
    serial: int

    def report(self, now: datetime.datetime | None = None) -> dict[str, Any]:
        now = now or datetime.datetime.now(datetime.UTC)
        return {"not_after": self.not_after.isoformat(), "subject": self.subject,
                "days_left": round((self.not_after - now).total_seconds() / 86400, 2)}


def key_file_problem(path: str) -> str | None:
    """Why the private key file must not be used, or None. Like mongod's keyFile check: a key that group or others
    can read may already have been copied, so the server refuses it rather than serve with it."""
    try:
        mode = Path(path).stat().st_mode
    except OSError as exc:
        return f"cannot read the TLS key file {path}: {exc.strerror}"
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return (f"the TLS key file {path} is open to group or others (mode {stat.S_IMODE(mode):04o}); "
                "make it 0600 or 0400, owned by the API server's user")
    return None


def certificate_info(cert_file: str) -> CertificateInfo:
    """The first certificate of the PEM file: the one served (the rest are its chain)."""
    try:
        cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    except OSError as exc:
        raise TLSFilesError(f"cannot read the TLS certificate file {cert_file}: {exc.strerror}") from exc
    except ValueError as exc:
        raise TLSFilesError(f"the TLS certificate file {cert_file} holds no PEM certificate ({exc})") from exc
    return CertificateInfo(cert.not_valid_after_utc, cert.subject.rfc4514_string(), cert.serial_number)


def server_context(cert_file: str, key_file: str, client_ca_file: str | None) -> tuple[ssl.SSLContext, CertificateInfo]:
    """A complete server context from the files, or TLSFilesError saying which file is wrong."""
    problem = key_file_problem(key_file)
    if problem:
        raise TLSFilesError(problem)
    info = certificate_info(cert_file)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise TLSFilesError(f"cannot use the TLS certificate {cert_file} with the key {key_file}: {exc}") from exc
    if client_ca_file:
        try:
            context.load_verify_locations(cafile=client_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise TLSFilesError(f"cannot read the client CA file {client_ca_file}: {exc}") from exc
        # Only clients holding a certificate from the deployment CA complete a handshake.
        context.verify_mode = ssl.CERT_REQUIRED
    return context, info


class ServedCertificate:
    """The certificate the server presents; `reload()` (on SIGHUP) re-reads the files for new connections."""

    def __init__(self, cert_file: str, key_file: str, client_ca_file: str | None = None) -> None:
        self.cert_file, self.key_file, self.client_ca_file = cert_file, key_file, client_ca_file
        self._current, self.info = server_context(cert_file, key_file, client_ca_file)
        self.listener = self._current
        self.listener.sni_callback = self._choose

    def _choose(self, connection: ssl.SSLObject, _server_name: str | None, _context: ssl.SSLContext) -> None:
        if connection.context is not self._current:
            connection.context = self._current

    def reload(self) -> bool:
        """Read the files again; on any problem keep serving the previous certificate and say why."""
        try:
            context, info = server_context(self.cert_file, self.key_file, self.client_ca_file)
        except TLSFilesError as exc:
            log.error("certificate not reloaded", extra={"event": "tls-reload", "reason": f"{exc}; still serving "
                                                         f"{self.info.subject} until {self.info.not_after}"})
            return False
        # One reference assignment: a handshake sees the old context or the new one, never a mix.
        self._current, self.info = context, info
        log.info("certificate reloaded", extra={"event": "tls-reload", "reason": f"serving {info.subject} "
                                                f"(serial {info.serial:x}) until {info.not_after}"})
        return True


def client_context(ca_file: str, cert_file: str | None = None, key_file: str | None = None) -> ssl.SSLContext:
    """A context that trusts only the deployment CA (and presents this machine's certificate when given), for the
    API server's own HTTPS requests to the other API servers."""
    context = ssl.create_default_context(cafile=ca_file)
    if cert_file and key_file:
        context.load_cert_chain(cert_file, key_file)
    return context
